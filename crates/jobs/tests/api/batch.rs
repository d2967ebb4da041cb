//! `batch`: children created once, progress as children finish, the result
//! aggregating theirs, and the failure policies.

use std::time::Duration;

use sextant_proto::jobs::v1::{FailurePolicy, Job, JobStatus, ListJobsRequest, SubmitJobRequest};
use tonic::Code;

use crate::helpers::Client;
use crate::{app, count, job};

fn finished(job: &Job) -> bool {
    matches!(
        job.status(),
        JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
    )
}

async fn children(client: &mut Client, parent: &str) -> Vec<Job> {
    client
        .list_jobs(ListJobsRequest {
            parent_id: parent.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs
}

#[tokio::test]
async fn a_batch_runs_its_children_and_aggregates_their_results() {
    let app = app!();
    let mut client = app.client("acme").await;
    let payload = r#"{"children": [
        {"kind": "sleep", "payload": {"duration_ms": 300, "steps": 2}},
        {"kind": "sleep", "payload": {"duration_ms": 600, "steps": 2}},
        {"kind": "noop"}
    ]}"#;
    let parent = client
        .submit_job(job("batch", payload))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();

    let partway = app
        .wait_for(&mut client, &parent.id, Duration::from_secs(15), |j| {
            j.children_done >= 1 || finished(j)
        })
        .await;
    assert_eq!(partway.children_total, 3);

    let done = app
        .wait_for(&mut client, &parent.id, Duration::from_secs(15), finished)
        .await;
    assert_eq!(done.status(), JobStatus::Succeeded, "{done:#?}");
    assert_eq!((done.children_total, done.children_done), (3, 3));
    assert_eq!(done.progress.unwrap().percent, 100.0);
    let result: serde_json::Value = serde_json::from_str(&done.result_json).unwrap();
    assert_eq!(
        (result["total"].as_i64(), result["succeeded"].as_i64()),
        (Some(3), Some(3))
    );
    assert_eq!(result["children"].as_array().unwrap().len(), 3);

    let kids = children(&mut client, &parent.id).await;
    assert_eq!(kids.len(), 3);
    assert!(
        kids.iter()
            .all(|k| k.parent_id == parent.id && k.status() == JobStatus::Succeeded)
    );
}

#[tokio::test]
async fn fail_fast_cancels_the_remaining_children_and_fails_the_parent() {
    let app = app!();
    let mut client = app.client("acme").await;
    let payload = r#"{"children": [
        {"kind": "fail", "payload": {"times": 9}, "max_attempts": 1},
        {"kind": "sleep", "payload": {"duration_ms": 20000, "steps": 20}}
    ]}"#;
    let request = SubmitJobRequest {
        failure_policy: FailurePolicy::FailFast as i32,
        max_attempts: Some(1),
        ..job("batch", payload)
    };
    let parent = client.submit_job(request).await.unwrap().into_inner().job.unwrap();
    let done = app
        .wait_for(&mut client, &parent.id, Duration::from_secs(15), finished)
        .await;
    assert_eq!(done.status(), JobStatus::Failed, "{done:#?}");
    assert_eq!(done.errors[0].code, "child_failed");

    let kids = children(&mut client, &parent.id).await;
    let sleeper = kids.iter().find(|k| k.kind == "sleep").unwrap();
    let sleeper = app
        .wait_for(&mut client, &sleeper.id, Duration::from_secs(5), finished)
        .await;
    assert_eq!(sleeper.status(), JobStatus::Cancelled);
}

#[tokio::test]
async fn continue_lets_every_child_finish_and_reports_the_failures() {
    let app = app!();
    let mut client = app.client("acme").await;
    let payload = r#"{"children": [
        {"kind": "fail", "payload": {"times": 9}, "max_attempts": 1},
        {"kind": "sleep", "payload": {"duration_ms": 300, "steps": 1}}
    ]}"#;
    let request = SubmitJobRequest {
        failure_policy: FailurePolicy::Continue as i32,
        ..job("batch", payload)
    };
    let parent = client.submit_job(request).await.unwrap().into_inner().job.unwrap();
    let done = app
        .wait_for(&mut client, &parent.id, Duration::from_secs(15), finished)
        .await;
    assert_eq!(done.status(), JobStatus::Succeeded, "{done:#?}");
    let result: serde_json::Value = serde_json::from_str(&done.result_json).unwrap();
    assert_eq!(
        (result["succeeded"].as_i64(), result["failed"].as_i64()),
        (Some(1), Some(1))
    );
}

#[tokio::test]
async fn a_batch_with_a_bad_child_is_refused_whole() {
    let app = app!();
    let mut client = app.client("acme").await;
    let cases = [
        (r#"{"children": []}"#, "children must hold"),
        (r#"{"children": [{"kind": "teleport"}]}"#, "children[0]: unknown kind"),
        (
            r#"{"children": [{"kind": "noop"}, {"kind": "sleep", "payload": {"steps": 3}}]}"#,
            "children[1]",
        ),
        (
            r#"{"children": [{"kind": "batch", "payload": {"children": []}}]}"#,
            "do not nest",
        ),
    ];
    for (payload, expected) in cases {
        let refused = client.submit_job(job("batch", payload)).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{payload}");
        assert!(
            refused.message().contains(expected),
            "{expected:?} not in {:?}",
            refused.message()
        );
    }
    assert_eq!(count(&mut client).await, 0);
}
