//! Jobs run: dispatched over RabbitMQ, claimed once, executed with progress,
//! retried with growing delays, timed out, cancelled while running, started
//! no earlier than their time, and higher priorities first.

use std::time::Duration;

use sextant_proto::jobs::v1::submit_job_request::Schedule;
use sextant_proto::jobs::v1::{CancelJobRequest, Job, JobStatus, SubmitJobRequest};

use crate::helpers::Client;
use crate::{app, job};

fn finished(job: &Job) -> bool {
    matches!(
        job.status(),
        JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
    )
}

async fn submit(client: &mut Client, request: SubmitJobRequest) -> Job {
    client.submit_job(request).await.unwrap().into_inner().job.unwrap()
}

fn secs(t: &Option<prost_types::Timestamp>) -> f64 {
    let t = t.as_ref().expect("timestamp set");
    t.seconds as f64 + f64::from(t.nanos) / 1e9
}

#[tokio::test]
async fn a_noop_job_runs_once_and_succeeds() {
    let app = app!();
    let mut client = app.client("acme").await;
    let submitted = submit(&mut client, job("noop", "{}")).await;
    let done = app
        .wait_for(&mut client, &submitted.id, Duration::from_secs(10), finished)
        .await;
    assert_eq!(done.status(), JobStatus::Succeeded);
    assert_eq!(done.attempt, 1);
    assert_eq!(done.result_json, "{}");
    assert!(done.started_at.is_some() && done.finished_at.is_some());
    assert!(done.errors.is_empty());
}

#[tokio::test]
async fn a_sleep_job_reports_progress_and_returns_its_result() {
    let app = app!();
    let mut client = app.client("acme").await;
    let submitted = submit(&mut client, job("sleep", r#"{"duration_ms": 800, "steps": 4}"#)).await;
    let halfway = app
        .wait_for(&mut client, &submitted.id, Duration::from_secs(10), |j| {
            j.progress.as_ref().is_some_and(|p| p.step >= 2) || finished(j)
        })
        .await;
    let progress = halfway.progress.unwrap();
    assert_eq!(progress.total_steps, 4);
    assert!(progress.percent >= 50.0, "{progress:?}");
    assert!(progress.elapsed.is_some());

    let done = app
        .wait_for(&mut client, &submitted.id, Duration::from_secs(10), finished)
        .await;
    assert_eq!(done.status(), JobStatus::Succeeded);
    assert_eq!(done.progress.unwrap().percent, 100.0);
    let result: serde_json::Value = serde_json::from_str(&done.result_json).unwrap();
    assert_eq!(result["steps"], 4);
    assert!(done.version > halfway.version);
}

#[tokio::test]
async fn failures_retry_with_growing_delays_then_succeed() {
    let app = app!();
    let mut client = app.client("acme").await;
    let request = SubmitJobRequest {
        max_attempts: Some(3),
        ..job("fail", r#"{"times": 2}"#)
    };
    let submitted = submit(&mut client, request).await;
    let done = app
        .wait_for(&mut client, &submitted.id, Duration::from_secs(20), finished)
        .await;
    assert_eq!(done.status(), JobStatus::Succeeded);
    assert_eq!(done.attempt, 3);
    assert_eq!(done.errors.len(), 2);
    for (i, error) in done.errors.iter().enumerate() {
        assert_eq!(error.attempt, u32::try_from(i).unwrap() + 1);
        assert_eq!(error.code, "diagnostic_failure");
    }
    // The second wait (attempt 2 → 3) is longer than the first (1 → 2).
    let gap = |a: usize| secs(&done.errors[a].finished_at);
    let first_wait = gap(1) - gap(0);
    let second_wait = secs(&done.started_at) - gap(1);
    assert!(
        first_wait >= 0.1 && second_wait >= 0.2,
        "{first_wait} then {second_wait}"
    );
}

#[tokio::test]
async fn the_last_failure_leaves_the_job_failed_with_every_error() {
    let app = app!();
    let mut client = app.client("acme").await;
    let request = SubmitJobRequest {
        max_attempts: Some(2),
        ..job("fail", r#"{"times": 5, "message": "still broken"}"#)
    };
    let submitted = submit(&mut client, request).await;
    let done = app
        .wait_for(&mut client, &submitted.id, Duration::from_secs(20), finished)
        .await;
    assert_eq!(done.status(), JobStatus::Failed);
    assert_eq!(done.attempt, 2);
    let messages: Vec<_> = done.errors.iter().map(|e| (e.attempt, e.message.as_str())).collect();
    assert_eq!(messages, [(1, "still broken"), (2, "still broken")]);
}

#[tokio::test]
async fn an_attempt_over_its_timeout_fails() {
    let app = app!();
    let mut client = app.client("acme").await;
    let request = SubmitJobRequest {
        max_attempts: Some(1),
        timeout: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
        ..job("sleep", r#"{"duration_ms": 5000, "steps": 5}"#)
    };
    let submitted = submit(&mut client, request).await;
    let done = app
        .wait_for(&mut client, &submitted.id, Duration::from_secs(10), finished)
        .await;
    assert_eq!(done.status(), JobStatus::Failed);
    assert_eq!(done.errors[0].code, "timeout");
}

#[tokio::test]
async fn a_running_job_stops_within_a_second_of_its_cancel() {
    let app = app!();
    let mut client = app.client("acme").await;
    let submitted = submit(&mut client, job("sleep", r#"{"duration_ms": 20000, "steps": 20}"#)).await;
    app.wait_for(&mut client, &submitted.id, Duration::from_secs(10), |j| {
        j.status() == JobStatus::Running
    })
    .await;

    let asked = tokio::time::Instant::now();
    let response = client
        .cancel_job(CancelJobRequest {
            id: submitted.id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(response.cancel_requested);
    let done = app
        .wait_for(&mut client, &submitted.id, Duration::from_secs(5), finished)
        .await;
    assert_eq!(done.status(), JobStatus::Cancelled);
    assert!(asked.elapsed() < Duration::from_secs(1), "took {:?}", asked.elapsed());
}

#[tokio::test]
async fn a_delayed_job_does_not_start_before_its_time() {
    let app = app!();
    let mut client = app.client("acme").await;
    let request = SubmitJobRequest {
        schedule: Some(Schedule::Delay(prost_types::Duration {
            seconds: 1,
            nanos: 500_000_000,
        })),
        ..job("noop", "{}")
    };
    let submitted = submit(&mut client, request).await;
    let done = app
        .wait_for(&mut client, &submitted.id, Duration::from_secs(10), finished)
        .await;
    assert_eq!(done.status(), JobStatus::Succeeded);
    let (run_at, started) = (secs(&submitted.run_at), secs(&done.started_at));
    assert!(started >= run_at, "started {started} before its time {run_at}");
    assert!(started - run_at < 1.0, "started {:.3}s late", started - run_at);
}

#[tokio::test]
async fn a_higher_priority_job_overtakes_a_backlog() {
    let app = app!("SEXTANT_JOBS__WORKER__CONCURRENCY" => "1");
    let mut client = app.client("acme").await;
    let blocker = submit(&mut client, job("sleep", r#"{"duration_ms": 600, "steps": 1}"#)).await;
    app.wait_for(&mut client, &blocker.id, Duration::from_secs(10), |j| {
        j.status() == JobStatus::Running
    })
    .await;

    let mut low = Vec::new();
    for _ in 0..5 {
        low.push(
            submit(
                &mut client,
                SubmitJobRequest {
                    priority: Some(0),
                    ..job("noop", "{}")
                },
            )
            .await,
        );
    }
    let high = submit(
        &mut client,
        SubmitJobRequest {
            priority: Some(9),
            ..job("noop", "{}")
        },
    )
    .await;

    let high_done = app
        .wait_for(&mut client, &high.id, Duration::from_secs(10), finished)
        .await;
    for job in low {
        let done = app
            .wait_for(&mut client, &job.id, Duration::from_secs(10), finished)
            .await;
        assert!(
            secs(&done.started_at) > secs(&high_done.started_at),
            "a low-priority job started before the high-priority one"
        );
    }
}
