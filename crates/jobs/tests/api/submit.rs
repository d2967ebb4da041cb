//! Submitting: defaults, schedules, idempotency, and every bad input refused
//! with a clear error and no job left behind.
//!
//! The service runs without a worker here (role `api`), so jobs stay queued
//! and a read-back equals what the submit returned.

use sextant_proto::jobs::v1::submit_job_request::Schedule;
use sextant_proto::jobs::v1::submit_jobs_response::item::Outcome;
use sextant_proto::jobs::v1::{GetJobRequest, JobStatus, SubmitJobRequest, SubmitJobsRequest};
use tonic::Code;

use crate::{app, code, count, job};

#[tokio::test]
async fn a_submitted_job_is_queued_with_defaults_and_can_be_read_back() {
    let app = app!("SEXTANT_JOBS__WORKER__ROLE" => "api");
    let mut client = app.client("acme").await;
    let response = client.submit_job(job("noop", "{}")).await.unwrap().into_inner();
    assert!(response.created);
    let submitted = response.job.unwrap();
    assert_eq!(submitted.status(), JobStatus::Queued);
    assert_eq!(
        (
            submitted.priority,
            submitted.max_attempts,
            submitted.attempt,
            submitted.version
        ),
        (5, 3, 0, 1)
    );
    assert_eq!(submitted.timeout.unwrap().seconds, 300);

    let read = client
        .get_job(GetJobRequest {
            id: submitted.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read, submitted);
}

#[tokio::test]
async fn a_delayed_job_is_scheduled_for_later() {
    let app = app!("SEXTANT_JOBS__WORKER__ROLE" => "api");
    let mut client = app.client("acme").await;
    let mut request = job("noop", "{}");
    request.schedule = Some(Schedule::Delay(prost_types::Duration { seconds: 60, nanos: 0 }));
    let job = client.submit_job(request).await.unwrap().into_inner().job.unwrap();
    assert_eq!(job.status(), JobStatus::Scheduled);
    let delay = job.run_at.unwrap().seconds - job.created_at.unwrap().seconds;
    assert!((59..=61).contains(&delay), "{delay}");
}

#[tokio::test]
async fn a_repeated_idempotency_key_returns_the_existing_job() {
    let app = app!("SEXTANT_JOBS__WORKER__ROLE" => "api");
    let mut client = app.client("acme").await;
    let request = SubmitJobRequest {
        idempotency_key: "order-42".into(),
        ..job("sleep", r#"{"duration_ms": 10}"#)
    };
    let first = client.submit_job(request.clone()).await.unwrap().into_inner();
    let again = client.submit_job(request.clone()).await.unwrap().into_inner();
    assert!(first.created);
    assert!(!again.created);
    assert_eq!(first.job.unwrap().id, again.job.unwrap().id);

    // The same key in another tenant is another job.
    let mut other = app.client("globex").await;
    assert!(other.submit_job(request).await.unwrap().into_inner().created);

    // The same key with another payload is refused, and nothing is added.
    let different = SubmitJobRequest {
        idempotency_key: "order-42".into(),
        ..job("sleep", r#"{"duration_ms": 20}"#)
    };
    let refused = client.submit_job(different).await.unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists);
    assert_eq!(code(&refused), "already_exists");
    assert_eq!(count(&mut client).await, 1);
}

#[tokio::test]
async fn every_bad_input_is_refused_and_leaves_no_job() {
    let app = app!("SEXTANT_JOBS__WORKER__ROLE" => "api");
    let mut client = app.client("acme").await;
    let negative = prost_types::Duration { seconds: -5, nanos: 0 };
    let cases: Vec<(SubmitJobRequest, &str)> = vec![
        (job("teleport", "{}"), "unknown kind"),
        (job("sleep", "{not json"), "not valid JSON"),
        (job("sleep", r#"{"duration_ms": "soon"}"#), "invalid payload"),
        (job("sleep", r#"{"duration_ms": 10, "steps": 0}"#), "steps must be"),
        (job("noop", "[1, 2]"), "expected a JSON object"),
        (
            SubmitJobRequest {
                schedule: Some(Schedule::Delay(negative)),
                ..job("noop", "{}")
            },
            "delay must not be negative",
        ),
        (
            SubmitJobRequest {
                priority: Some(10),
                ..job("noop", "{}")
            },
            "priority must be between 0 and 9",
        ),
        (
            SubmitJobRequest {
                max_attempts: Some(0),
                ..job("noop", "{}")
            },
            "max_attempts must be between",
        ),
        (
            SubmitJobRequest {
                timeout: Some(prost_types::Duration { seconds: 0, nanos: 0 }),
                ..job("noop", "{}")
            },
            "timeout must be between",
        ),
        (
            SubmitJobRequest {
                idempotency_key: "k".repeat(201),
                ..job("noop", "{}")
            },
            "idempotency_key must be",
        ),
    ];
    for (request, expected) in cases {
        let refused = client.submit_job(request).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{expected}: {refused:?}");
        assert_eq!(code(&refused), "invalid_argument");
        assert!(
            refused.message().contains(expected),
            "{expected:?} not in {:?}",
            refused.message()
        );
    }
    assert_eq!(count(&mut client).await, 0);
}

#[tokio::test]
async fn a_batch_accepts_the_valid_items_and_reports_the_rest() {
    let app = app!("SEXTANT_JOBS__WORKER__ROLE" => "api");
    let mut client = app.client("acme").await;
    let response = client
        .submit_jobs(SubmitJobsRequest {
            jobs: vec![
                job("noop", "{}"),
                job("teleport", "{}"),
                job("sleep", r#"{"duration_ms": 5}"#),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    let outcomes: Vec<_> = response.items.into_iter().map(|i| i.outcome.unwrap()).collect();
    assert!(matches!(outcomes[0], Outcome::Accepted(_)));
    let Outcome::Error(error) = &outcomes[1] else {
        panic!("item 1 must be refused")
    };
    assert_eq!(
        (error.index, error.code.as_str(), error.field.as_str()),
        (1, "invalid_argument", "kind")
    );
    assert!(matches!(outcomes[2], Outcome::Accepted(_)));
    assert_eq!(count(&mut client).await, 2);

    let empty = client
        .submit_jobs(SubmitJobsRequest { jobs: vec![] })
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_call_without_a_tenant_is_refused() {
    let app = app!("SEXTANT_JOBS__WORKER__ROLE" => "api");
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = sextant_proto::jobs::v1::job_service_client::JobServiceClient::with_interceptor(
        channel,
        |mut r: tonic::Request<()>| {
            r.metadata_mut().insert(
                "x-sextant-internal-secret",
                "jobs-api-test-internal-secret".parse().unwrap(),
            );
            Ok(r)
        },
    );
    let refused = client.submit_job(job("noop", "{}")).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
}
