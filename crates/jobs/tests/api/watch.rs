//! `WatchJobs`: a snapshot, then every change in order with versions that
//! rise by one; resuming from a version misses nothing and repeats nothing;
//! the tenant-wide stream is numbered and isolated.

use std::time::Duration;

use sextant_proto::jobs::v1::watch_jobs_request::Target;
use sextant_proto::jobs::v1::watch_jobs_response::Message;
use sextant_proto::jobs::v1::{
    JobEvent, JobEventType, JobStatus, JobsSnapshot, SubmitJobRequest, WatchJobsRequest, WatchJobsResponse,
};
use tonic::Streaming;

use crate::helpers::Client;
use crate::{app, code, job};

async fn submit(client: &mut Client, request: SubmitJobRequest) -> String {
    client.submit_job(request).await.unwrap().into_inner().job.unwrap().id
}

async fn watch(client: &mut Client, target: Target, after_version: u64) -> Streaming<WatchJobsResponse> {
    let request = WatchJobsRequest {
        target: Some(target),
        after_version,
        all_events: false,
    };
    client.watch_jobs(request).await.unwrap().into_inner()
}

async fn next(stream: &mut Streaming<WatchJobsResponse>) -> WatchJobsResponse {
    tokio::time::timeout(Duration::from_secs(15), stream.message())
        .await
        .expect("a message within 15 s")
        .unwrap()
        .expect("the stream stays open")
}

fn snapshot(message: WatchJobsResponse) -> JobsSnapshot {
    match message.message {
        Some(Message::Snapshot(snapshot)) => snapshot,
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

fn event(message: WatchJobsResponse) -> (u64, JobEvent) {
    match message.message {
        Some(Message::Event(event)) => (message.sequence, event),
        other => panic!("expected an event, got {other:?}"),
    }
}

fn is_final(event: &JobEvent) -> bool {
    matches!(
        event.r#type(),
        JobEventType::Succeeded | JobEventType::Failed | JobEventType::Cancelled
    )
}

/// Events until (and including) the job's final one.
async fn until_final(stream: &mut Streaming<WatchJobsResponse>) -> Vec<JobEvent> {
    let mut events = Vec::new();
    loop {
        let (_, event) = event(next(stream).await);
        let done = is_final(&event);
        events.push(event);
        if done {
            return events;
        }
    }
}

#[tokio::test]
async fn a_job_stream_starts_with_a_snapshot_then_every_change_in_version_order() {
    let app = app!();
    let mut client = app.client("acme").await;
    let id = submit(&mut client, job("sleep", r#"{"duration_ms": 600, "steps": 3}"#)).await;
    let mut stream = watch(&mut client, Target::JobId(id.clone()), 0).await;
    let snapshot = snapshot(next(&mut stream).await);
    assert_eq!(snapshot.jobs.len(), 1);
    assert_eq!(snapshot.jobs[0].id, id);
    assert_eq!(snapshot.version, snapshot.jobs[0].version);

    let events = until_final(&mut stream).await;
    let mut version = snapshot.version;
    for event in &events {
        assert_eq!(event.job_id, id);
        assert_eq!(event.version, version + 1, "versions rise by one: {events:#?}");
        assert_eq!(event.job.as_ref().unwrap().version, event.version);
        version = event.version;
    }
    let types: Vec<JobEventType> = events.iter().map(|e| e.r#type()).collect();
    // The snapshot may already show the job running; otherwise `started` comes first.
    let started = types.iter().position(|t| *t == JobEventType::Started);
    if snapshot.jobs[0].status() != JobStatus::Running {
        assert_eq!(started, Some(0), "{types:?}");
    }
    let progress: Vec<u32> = events
        .iter()
        .filter(|e| e.r#type() == JobEventType::Progress)
        .map(|e| e.job.as_ref().unwrap().progress.as_ref().unwrap().step)
        .collect();
    // Every step after the snapshot, in order, up to the last.
    assert!(progress.windows(2).all(|w| w[1] == w[0] + 1), "{types:?}");
    assert_eq!(progress.last(), Some(&3), "{types:?}");
    let last = events.last().unwrap();
    assert_eq!(last.r#type(), JobEventType::Succeeded);
    let job = last.job.as_ref().unwrap();
    assert_eq!(job.status(), JobStatus::Succeeded);
    assert_eq!(job.result_json, r#"{"slept_ms":600,"steps":3}"#);
    assert!(job.payload_json.is_empty(), "events do not repeat the payload");
}

#[tokio::test]
async fn resuming_from_the_last_version_seen_misses_nothing_and_repeats_nothing() {
    let app = app!();
    let mut client = app.client("acme").await;
    let id = submit(&mut client, job("sleep", r#"{"duration_ms": 1500, "steps": 6}"#)).await;
    let mut first = watch(&mut client, Target::JobId(id.clone()), 0).await;
    let mut seen = vec![snapshot(next(&mut first).await).version];
    // Two changes, then the client goes away while the job keeps changing.
    for _ in 0..2 {
        seen.push(event(next(&mut first).await).1.version);
    }
    drop(first);
    tokio::time::sleep(Duration::from_millis(600)).await;

    let mut resumed = watch(&mut client, Target::JobId(id.clone()), *seen.last().unwrap()).await;
    let rest = until_final(&mut resumed).await;
    seen.extend(rest.iter().map(|e| e.version));
    let expected: Vec<u64> = (seen[0]..seen[0] + seen.len() as u64).collect();
    assert_eq!(seen, expected, "every version exactly once");
    assert_eq!(rest.last().unwrap().r#type(), JobEventType::Succeeded);
    let job = app.wait_for(&mut client, &id, Duration::from_secs(1), |_| true).await;
    assert_eq!(job.version, *seen.last().unwrap(), "up to the job's current version");
}

#[tokio::test]
async fn a_failing_job_streams_retries_with_their_errors_then_fails() {
    let app = app!();
    let mut client = app.client("acme").await;
    let request = SubmitJobRequest {
        max_attempts: Some(3),
        ..job("fail", r#"{"times": 5, "message": "boom"}"#)
    };
    // Watching before the submit: the first attempt fails at once.
    let mut stream = watch(&mut client, Target::All(true), 0).await;
    snapshot(next(&mut stream).await);
    let id = submit(&mut client, request).await;
    let events: Vec<JobEvent> = until_final(&mut stream)
        .await
        .into_iter()
        .filter(|e| e.job_id == id)
        .collect();
    let retries: Vec<&JobEvent> = events
        .iter()
        .filter(|e| e.r#type() == JobEventType::RetryScheduled)
        .collect();
    assert_eq!(retries.len(), 2, "{events:#?}");
    for (i, retry) in retries.iter().enumerate() {
        assert!(retry.retry_at.is_some());
        let job = retry.job.as_ref().unwrap();
        assert_eq!(job.errors.len(), i + 1);
        assert_eq!(job.errors[i].message, "boom");
    }
    let failed = events.last().unwrap();
    assert_eq!(failed.r#type(), JobEventType::Failed);
    let job = failed.job.as_ref().unwrap();
    assert_eq!(job.attempt, 3);
    assert_eq!(job.errors.iter().map(|e| e.attempt).collect::<Vec<_>>(), vec![1, 2, 3]);
}

#[tokio::test]
async fn the_tenant_stream_is_numbered_isolated_and_resumable() {
    let app = app!();
    let mut acme = app.client("acme").await;
    let mut globex = app.client("globex").await;
    let old = submit(&mut acme, job("noop", "{}")).await;
    let mut stream = watch(&mut acme, Target::All(true), 0).await;
    let snapshot = snapshot(next(&mut stream).await);
    assert!(snapshot.jobs.iter().any(|j| j.id == old));

    let theirs = submit(&mut globex, job("noop", "{}")).await;
    let first = submit(&mut acme, job("noop", "{}")).await;
    let mut sequences = Vec::new();
    loop {
        let (seq, event) = event(next(&mut stream).await);
        assert_ne!(event.job_id, theirs, "another tenant's job leaked");
        assert!(sequences.last().is_none_or(|last| seq > *last), "sequences rise");
        sequences.push(seq);
        if event.job_id == first && is_final(&event) {
            break;
        }
    }
    drop(stream);

    // While nobody watches: a second job runs to the end.
    let second = submit(&mut acme, job("noop", "{}")).await;
    app.wait_for(&mut acme, &second, Duration::from_secs(10), |j| {
        j.status() == JobStatus::Succeeded
    })
    .await;
    let mut resumed = watch(&mut acme, Target::All(true), *sequences.last().unwrap()).await;
    let mut second_events = Vec::new();
    loop {
        let (seq, event) = event(next(&mut resumed).await);
        assert!(seq > *sequences.last().unwrap(), "sequences rise, nothing repeats");
        sequences.push(seq);
        assert_ne!(event.job_id, first, "already seen before the resume");
        if event.job_id == second {
            let done = is_final(&event);
            second_events.push(event.r#type());
            if done {
                break;
            }
        }
    }
    assert_eq!(
        second_events,
        vec![JobEventType::Queued, JobEventType::Started, JobEventType::Succeeded]
    );
}

#[tokio::test]
async fn another_tenants_job_cannot_be_watched_and_a_target_is_required() {
    let app = app!();
    let mut acme = app.client("acme").await;
    let mut globex = app.client("globex").await;
    let id = submit(&mut acme, job("noop", "{}")).await;
    let request = WatchJobsRequest {
        target: Some(Target::JobId(id)),
        after_version: 0,
        all_events: false,
    };
    let refused = globex.watch_jobs(request).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound);
    assert_eq!(code(&refused), "not_found");

    let refused = acme.watch_jobs(WatchJobsRequest::default()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let refused = acme
        .watch_jobs(WatchJobsRequest {
            target: Some(Target::JobId("not-a-uuid".into())),
            after_version: 0,
            all_events: false,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn a_resume_point_whose_events_were_pruned_gets_a_fresh_snapshot() {
    let app = app!("SEXTANT_JOBS__QUEUE__EVENT_RETENTION" => "1s");
    let mut client = app.client("acme").await;
    let mut tenant = watch(&mut client, Target::All(true), 0).await;
    let before = snapshot(next(&mut tenant).await).version;
    let id = submit(&mut client, job("noop", "{}")).await;
    let events = until_final(&mut tenant).await;
    let last = events.last().unwrap().version;
    drop(tenant);

    // The retention is 1 s: the events go, and PostgreSQL shows it.
    let mut db = app.database().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM job_events WHERE job_id = $1::uuid")
            .bind(&id)
            .fetch_one(&mut db)
            .await
            .unwrap();
        if left == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{left} events never pruned");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Resuming from before them cannot replay them: a snapshot of now instead.
    let mut job_stream = watch(&mut client, Target::JobId(id.clone()), 1).await;
    let now = snapshot(next(&mut job_stream).await);
    assert_eq!(now.version, last);
    assert_eq!(now.jobs[0].status(), JobStatus::Succeeded);

    let mut tenant = watch(&mut client, Target::All(true), before).await;
    let now = snapshot(next(&mut tenant).await);
    assert!(now.version > before, "{now:#?}");
    let shown = now
        .jobs
        .iter()
        .find(|j| j.id == id)
        .expect("the job is in the snapshot");
    assert_eq!(shown.version, last);
    // And the stream goes on live from there.
    let other = submit(&mut client, job("noop", "{}")).await;
    let (seq, first) = event(next(&mut tenant).await);
    assert_eq!(
        (first.job_id.as_str(), first.r#type()),
        (other.as_str(), JobEventType::Queued)
    );
    assert!(seq > now.version);
}

#[tokio::test]
async fn events_wait_for_an_older_transaction_then_arrive_without_a_new_snapshot() {
    use sqlx::Connection as _;
    // A write transaction of another database, open from before this
    // service's database was migrated: it holds the horizon below every
    // number this service hands out.
    let Ok(url) = std::env::var("SEXTANT_TEST_DATABASE_URL") else {
        return;
    };
    let mut other = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut other)
        .await
        .unwrap();

    let app = app!();
    let mut client = app.client("acme").await;
    let mut stream = watch(&mut client, Target::All(true), 0).await;
    snapshot(next(&mut stream).await);
    let id = submit(&mut client, job("noop", "{}")).await;
    // The job runs, but its events wait: nothing may be published below the
    // horizon while an older transaction could still add events under them.
    app.wait_for(&mut client, &id, Duration::from_secs(15), |j| {
        j.status() == JobStatus::Succeeded
    })
    .await;
    let early = tokio::time::timeout(Duration::from_millis(500), stream.message()).await;
    assert!(
        early.is_err(),
        "an event went out past an open older transaction: {early:?}"
    );

    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    let events = until_final(&mut stream).await;
    let types: Vec<JobEventType> = events.iter().map(|e| e.r#type()).collect();
    assert_eq!(
        types,
        vec![JobEventType::Queued, JobEventType::Started, JobEventType::Succeeded],
        "{events:#?}"
    );
    assert!(events.iter().all(|e| e.job_id == id));
}
