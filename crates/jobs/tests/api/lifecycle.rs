//! Cancel and retry move a job only forwards, each change bumping its version.

use sextant_proto::jobs::v1::{CancelJobRequest, GetJobStatsRequest, JobStatus, RetryJobRequest};
use tonic::Code;

use crate::{app, code, job};

#[tokio::test]
async fn a_queued_job_cancels_at_once_and_retries_as_a_new_attempt() {
    // No worker: the job is still queued when the cancel arrives.
    let app = app!("SEXTANT_JOBS__WORKER__ROLE" => "api");
    let mut client = app.client("acme").await;
    let submitted = client
        .submit_job(job("noop", "{}"))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();

    let cancelled = client
        .cancel_job(CancelJobRequest {
            id: submitted.id.clone(),
            reason: "changed my mind".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((cancelled.status(), cancelled.version), (JobStatus::Cancelled, 2));
    assert!(cancelled.finished_at.is_some());

    let again = client
        .cancel_job(CancelJobRequest {
            id: submitted.id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert_eq!(code(&again), "failed_precondition");

    let retried = client
        .retry_job(RetryJobRequest {
            id: submitted.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((retried.status(), retried.version), (JobStatus::Queued, 3));
    assert!(retried.finished_at.is_none());
    assert!(!retried.cancel_requested);

    let not_retryable = client
        .retry_job(RetryJobRequest { id: submitted.id })
        .await
        .unwrap_err();
    assert_eq!(not_retryable.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn a_malformed_id_is_an_invalid_argument() {
    let app = app!();
    let mut client = app.client("acme").await;
    let refused = client
        .retry_job(RetryJobRequest { id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn stats_count_jobs_per_kind_and_status() {
    // No worker: the jobs stay where the test puts them.
    let app = app!("SEXTANT_JOBS__WORKER__ROLE" => "api");
    let mut client = app.client("acme").await;
    for _ in 0..3 {
        client.submit_job(job("noop", "{}")).await.unwrap();
    }
    let sleep = client
        .submit_job(job("sleep", r#"{"duration_ms": 1}"#))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    client
        .cancel_job(CancelJobRequest {
            id: sleep.id,
            reason: String::new(),
        })
        .await
        .unwrap();

    let stats = client
        .get_job_stats(GetJobStatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut counts: Vec<(String, JobStatus, u64)> = stats
        .counts
        .iter()
        .map(|c| (c.kind.clone(), c.status(), c.count))
        .collect();
    counts.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        counts,
        [
            ("noop".to_owned(), JobStatus::Queued, 3),
            ("sleep".to_owned(), JobStatus::Cancelled, 1)
        ]
    );
    assert_eq!(stats.throughput_1m, 0.0);
}
