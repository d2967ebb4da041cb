//! Job retention: with a short `jobs.queue.job_retention`, finished jobs go
//! (with their attempts and events), running and waiting ones stay, the queue
//! keeps serving throughout, and a watch resuming from before the deleted
//! events gets a fresh snapshot.

use std::time::Duration;

use serde_json::{Value, json};
use sextant_e2e::TestSystem;
use sqlx::Connection as _;

use crate::exports::Gateway;
use crate::jobs_live::{frame, subscribe};
use crate::system;

async fn submit(gateway: &Gateway<'_>, body: Value) -> String {
    let answer = gateway.post("/api/v1/jobs", &body).await;
    assert_eq!(answer.status, 201, "{}", answer.json());
    answer.json()["id"].as_str().unwrap().to_owned()
}

async fn status(gateway: &Gateway<'_>, id: &str) -> (u16, Value) {
    let answer = gateway.get(&format!("/api/v1/jobs/{id}"), &[]).await;
    (answer.status, answer.json())
}

async fn finished(gateway: &Gateway<'_>, id: &str) -> Value {
    for _ in 0..400 {
        let (code, job) = status(gateway, id).await;
        assert_eq!(code, 200, "job {id} is gone before it was seen finished: {job}");
        if matches!(job["status"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {id} never finished");
}

#[tokio::test]
async fn finished_jobs_are_deleted_with_their_attempts_and_events_while_the_queue_serves() {
    let system = system!(TestSystem::builder().jobs_env("SEXTANT_JOBS__QUEUE__JOB_RETENTION", "3s"));
    let gateway = Gateway::new(&system, "acme", "alice");
    let mut old = Vec::new();
    for i in 0..4 {
        old.push(submit(&gateway, json!({"kind": "noop", "payload": {"i": i}})).await);
    }
    old.push(
        submit(
            &gateway,
            json!({"kind": "fail", "payload": {"times": 5}, "max_attempts": 2}),
        )
        .await,
    );
    for id in &old {
        finished(&gateway, id).await;
    }
    // Still there while young (the last one just finished).
    assert_eq!(status(&gateway, &old[4]).await.0, 200);
    let running = submit(
        &gateway,
        json!({"kind": "sleep", "payload": {"duration_ms": 30000, "steps": 30}}),
    )
    .await;
    let waiting = submit(&gateway, json!({"kind": "noop", "payload": {}, "delay_ms": 60000})).await;
    // The queue keeps serving while the old jobs expire: each new job
    // succeeds (checked at once: it expires in turn).
    let mut gone = false;
    for _ in 0..40 {
        let id = submit(&gateway, json!({"kind": "noop", "payload": {}})).await;
        let job = finished(&gateway, &id).await;
        assert_eq!(job["status"], "succeeded", "served throughout: {job}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut all = true;
        for id in &old {
            all &= status(&gateway, id).await.0 == 404;
        }
        if all {
            gone = true;
            break;
        }
    }
    assert!(gone, "the finished jobs expired");
    let (code, job) = status(&gateway, &old[0]).await;
    assert_eq!(code, 404);
    assert_eq!(job["code"], "not_found");
    // The running and the waiting jobs are untouched.
    assert_eq!(status(&gateway, &running).await.1["status"], "running");
    assert_eq!(status(&gateway, &waiting).await.1["status"], "scheduled");

    // Nothing of the deleted jobs is left in the database.
    let url = sextant_e2e::infra::database_url(&system.admin_url, &format!("e2e_{}_jobs", system.id));
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    let ids: Vec<uuid::Uuid> = old.iter().map(|id| id.parse().unwrap()).collect();
    for table in ["jobs", "job_attempts", "job_events"] {
        let column = if table == "jobs" { "id" } else { "job_id" };
        let left: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE {column} = ANY($1)"))
            .bind(&ids)
            .fetch_one(&mut db)
            .await
            .unwrap();
        assert_eq!(left, 0, "{table}");
    }
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM job_events WHERE job_id = $1")
        .bind(running.parse::<uuid::Uuid>().unwrap())
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert!(kept > 0, "the running job's events are kept");

    // A watch resuming from before the deleted events (the first event of
    // all was the first old job's) gets a fresh snapshot.
    let mut socket = crate::jobs_live::socket(&system, "acme").await;
    let resumed = subscribe(&mut socket, "jobs", Some(1)).await;
    assert_eq!(resumed["type"], "subscribed", "{resumed}");
    let first = frame(&mut socket).await;
    assert_eq!(first["type"], "snapshot", "{first}");
    let ids: Vec<&str> = first["jobs"]
        .as_array()
        .map(|jobs| jobs.iter().filter_map(|j| j["id"].as_str()).collect())
        .unwrap_or_default();
    assert!(!ids.contains(&old[0].as_str()), "a deleted job is not in the snapshot");
}
