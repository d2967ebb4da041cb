//! The job queue survives its faults: a worker killed mid-job, RabbitMQ down
//! while jobs are submitted (and a WebSocket follows them), PostgreSQL
//! restarted under load. Driven through the jobs service's gRPC port, and the
//! gateway's WebSocket for the live view.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use sextant_e2e::TestSystem;
use sextant_e2e::local::{self, LocalRabbit};
use sextant_e2e::system::JobsClient;
use sextant_e2e::ws;
use sextant_proto::jobs::v1::{GetJobRequest, Job, JobStatus, SubmitJobRequest};

use crate::system;

async fn wait_for(client: &mut JobsClient, id: &str, timeout: Duration, done: impl Fn(&Job) -> bool) -> Job {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let job = client
            .get_job(GetJobRequest { id: id.to_owned() })
            .await
            .unwrap()
            .into_inner();
        if done(&job) {
            return job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job never reached the state: {job:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn request(kind: &str, payload: &str) -> SubmitJobRequest {
    SubmitJobRequest {
        kind: kind.into(),
        payload_json: payload.into(),
        max_attempts: Some(3),
        ..Default::default()
    }
}

const FAST_LEASE: [(&str, &str); 2] = [
    ("SEXTANT_JOBS__WORKER__LEASE", "1s"),
    ("SEXTANT_JOBS__WORKER__HEARTBEAT", "250ms"),
];

#[tokio::test]
async fn a_job_whose_worker_is_killed_completes_on_another_as_attempt_2() {
    let system = system!(
        TestSystem::builder()
            .jobs_env("SEXTANT_JOBS__WORKER__ROLE", "api")
            .jobs_env(FAST_LEASE[0].0, FAST_LEASE[0].1)
            .jobs_env(FAST_LEASE[1].0, FAST_LEASE[1].1)
    );
    let worker_env = [("SEXTANT_JOBS__WORKER__ROLE", "worker"), FAST_LEASE[0], FAST_LEASE[1]];
    let first = system.spawn_jobs("worker-1", &worker_env);
    let mut client = system.jobs_client("acme").await;

    let job = client
        .submit_job(request("sleep", r#"{"duration_ms": 2000, "steps": 4}"#))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    wait_for(&mut client, &job.id, Duration::from_secs(15), |j| {
        j.status() == JobStatus::Running
    })
    .await;

    // Only now does a second worker exist, so attempt 1 surely ran on the first.
    let _second = system.spawn_jobs("worker-2", &worker_env);
    first.signal(libc::SIGKILL);

    let done = wait_for(&mut client, &job.id, Duration::from_secs(30), |j| {
        matches!(j.status(), JobStatus::Succeeded | JobStatus::Failed)
    })
    .await;
    assert_eq!(done.status(), JobStatus::Succeeded, "{done:#?}");
    assert_eq!(done.attempt, 2);
    assert_eq!(done.errors.len(), 1);
    assert_eq!(
        (done.errors[0].attempt, done.errors[0].code.as_str()),
        (1, "worker_lost")
    );
}

#[tokio::test]
async fn jobs_submitted_while_rabbitmq_is_down_all_run_when_it_returns() {
    if !local::available() {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "needs local server packages"
        );
        eprintln!("SKIPPED: needs root and a local RabbitMQ server package");
        return;
    }
    let rabbit = LocalRabbit::start().await.expect("starting a throwaway RabbitMQ");
    let system = system!(
        TestSystem::builder().amqp(rabbit.url()).database(
            std::env::var(sextant_e2e::infra::DATABASE_URL_ENV)
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
        )
    );
    let mut client = system.jobs_client("acme").await;
    // A frontend follows the tenant's jobs across the outage.
    let token = system.token("acme", "alice");
    let mut socket = ws::connect(&system.ws_url("/api/v1/ws"), ws::Auth::Header(&token))
        .await
        .unwrap();
    assert_eq!(ws::next_json(&mut socket).await["type"], "hello");
    ws::send_json(&mut socket, &json!({"op": "subscribe", "topic": "jobs"})).await;
    assert_eq!(ws::next_json(&mut socket).await["type"], "subscribed");
    assert_eq!(ws::next_json(&mut socket).await["type"], "snapshot");

    rabbit.stop().await.unwrap();
    let mut ids = Vec::new();
    for i in 0..20 {
        let payload = if i % 2 == 0 {
            "{}"
        } else {
            r#"{"duration_ms": 50, "steps": 2}"#
        };
        let kind = if i % 2 == 0 { "noop" } else { "sleep" };
        let accepted = client
            .submit_job(request(kind, payload))
            .await
            .expect("accepted while the broker is down");
        ids.push(accepted.into_inner().job.unwrap().id);
    }
    for id in &ids {
        let job = client
            .get_job(GetJobRequest { id: id.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(job.status(), JobStatus::Queued);
    }

    rabbit.start_again().await.unwrap();
    for id in &ids {
        let done = wait_for(&mut client, id, Duration::from_secs(60), |j| {
            j.status() == JobStatus::Succeeded
        })
        .await;
        assert_eq!(done.attempt, 1, "each job ran exactly once");
    }

    // Every change of every job reached the socket once, in order.
    let mut versions: HashMap<String, Vec<u64>> = HashMap::new();
    let mut finished = 0;
    while finished < ids.len() {
        let ws::Frame::Json(frame) = ws::next(&mut socket, Duration::from_secs(30)).await else {
            panic!("the socket closed");
        };
        assert_eq!(frame["type"], "event", "{frame}");
        let id = frame["job_id"].as_str().unwrap().to_owned();
        versions
            .entry(id)
            .or_default()
            .push(frame["job_version"].as_u64().unwrap());
        if frame["event"] == "succeeded" {
            finished += 1;
        }
    }
    for id in &ids {
        let seen = &versions[id];
        let expected: Vec<u64> = (1..=seen.len() as u64).collect();
        assert_eq!(seen, &expected, "job {id}: every version once, from queued on");
    }
}

/// The new job's id, or `None` when the service said it is unavailable.
async fn submit_sleep(client: &mut JobsClient) -> Option<String> {
    match client
        .submit_job(request("sleep", r#"{"duration_ms": 300, "steps": 3}"#))
        .await
    {
        Ok(response) => Some(response.into_inner().job.unwrap().id),
        Err(status) => {
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
            None
        }
    }
}

#[tokio::test]
async fn a_postgres_restart_under_load_loses_no_job_and_runs_none_twice() {
    if !local::available() {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "needs local server packages"
        );
        eprintln!("SKIPPED: needs root and a local PostgreSQL server package");
        return;
    }
    let postgres = sextant_e2e::local::LocalPostgres::start()
        .await
        .expect("starting a throwaway PostgreSQL");
    let amqp = std::env::var(sextant_e2e::infra::AMQP_URL_ENV)
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    // Submits while PostgreSQL is down are refused after 1 s, not the default 5 s.
    let mut system = system!(
        TestSystem::builder()
            .database(postgres.admin_url())
            .amqp(amqp)
            .jobs_env("SEXTANT_JOBS__DATABASE__ACQUIRE_TIMEOUT", "1s")
    );
    let mut client = system.jobs_client("acme").await;

    let mut accepted = Vec::new();
    let mut refused = 0;
    for phase in 0..3 {
        match phase {
            1 => postgres.stop().await.unwrap(),
            2 => postgres.start_again().await.unwrap(),
            _ => {}
        }
        let count = if phase == 1 { 5 } else { 15 };
        for _ in 0..count {
            match submit_sleep(&mut client).await {
                Some(id) => accepted.push(id),
                None => refused += 1,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    assert!(
        accepted.len() >= 30,
        "only {} accepted ({refused} refused)",
        accepted.len()
    );
    for id in &accepted {
        let done = wait_for(&mut client, id, Duration::from_secs(60), |j| {
            matches!(j.status(), JobStatus::Succeeded | JobStatus::Failed)
        })
        .await;
        assert_eq!(done.status(), JobStatus::Succeeded, "{done:#?}");
        assert_eq!(done.attempt, 1, "job {id} ran more than once: {done:#?}");
    }
    assert!(system.jobs.is_running(), "the service recovered without a restart");
}

#[tokio::test]
async fn a_job_whose_message_the_broker_lost_is_sent_again_and_runs() {
    // Only an api replica at first, so the message waits on the broker.
    let system = system!(
        TestSystem::builder()
            .jobs_env("SEXTANT_JOBS__WORKER__ROLE", "api")
            .jobs_env("SEXTANT_JOBS__QUEUE__REDISPATCH_AFTER", "2s")
    );
    let mut client = system.jobs_client("acme").await;
    let id = client
        .submit_job(request("noop", "{}"))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap()
        .id;
    // The message is on the broker; the broker loses it.
    let connection = lapin::Connection::connect(&system.amqp_url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let queue = format!("e2e-{}.jobs.queue.normal", system.id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let purged = channel
            .queue_purge(queue.as_str().into(), lapin::options::QueuePurgeOptions::default())
            .await
            .unwrap();
        if purged == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job's message never reached {queue}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = connection.close(200, "done".into()).await;

    let _worker = system.spawn_jobs("jobs-worker", &[("SEXTANT_JOBS__WORKER__ROLE", "worker")]);
    let done = wait_for(&mut client, &id, Duration::from_secs(30), |j| {
        j.status() == JobStatus::Succeeded
    })
    .await;
    assert_eq!(done.attempt, 1);
}
