//! Listing: filters, cursor pages that stay exact while jobs are inserted,
//! bad page arguments, and tenant isolation.
//!
//! The service runs without a worker here (role `api`), so jobs stay queued
//! and a read-back equals what the submit returned.

use std::collections::HashSet;

use sextant_proto::common::v1::PageRequest;
use sextant_proto::jobs::v1::{
    CancelJobRequest, GetJobRequest, GetJobStatsRequest, JobStatus, ListJobsRequest, RetryJobRequest,
};
use tonic::Code;

use crate::helpers::Client;
use crate::{app, count, job};

async fn page(client: &mut Client, size: u32, cursor: &str) -> (Vec<String>, String) {
    let response = client
        .list_jobs(ListJobsRequest {
            page: Some(PageRequest {
                page_size: size,
                cursor: cursor.into(),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    (
        response.jobs.into_iter().map(|j| j.id).collect(),
        response.page.unwrap().next_cursor,
    )
}

#[tokio::test]
async fn pages_stay_exact_while_jobs_are_inserted() {
    let app = app!("SEXTANT_JOBS__WORKER__ROLE" => "api");
    let mut client = app.client("acme").await;
    let mut original = Vec::new();
    for _ in 0..7 {
        original.push(
            client
                .submit_job(job("noop", "{}"))
                .await
                .unwrap()
                .into_inner()
                .job
                .unwrap()
                .id,
        );
    }

    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (ids, next) = page(&mut client, 3, &cursor).await;
        seen.extend(ids);
        // New jobs arrive between pages: they must not shift what is left.
        client.submit_job(job("noop", "{}")).await.unwrap();
        if next.is_empty() {
            break;
        }
        cursor = next;
    }
    original.reverse();
    assert_eq!(seen, original, "newest first, each exactly once");
}

#[tokio::test]
async fn filters_by_status_and_kind() {
    let app = app!("SEXTANT_JOBS__WORKER__ROLE" => "api");
    let mut client = app.client("acme").await;
    let a = client
        .submit_job(job("noop", "{}"))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    client.submit_job(job("sleep", r#"{"duration_ms": 1}"#)).await.unwrap();
    client
        .cancel_job(CancelJobRequest {
            id: a.id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap();

    let cancelled = client
        .list_jobs(ListJobsRequest {
            statuses: vec![JobStatus::Cancelled as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(
        cancelled.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        [a.id.as_str()]
    );

    let sleeps = client
        .list_jobs(ListJobsRequest {
            kinds: vec!["sleep".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(sleeps.len(), 1);
    assert_eq!(sleeps[0].kind, "sleep");
}

#[tokio::test]
async fn bad_page_arguments_are_refused() {
    let app = app!("SEXTANT_JOBS__WORKER__ROLE" => "api");
    let mut client = app.client("acme").await;
    let too_big = ListJobsRequest {
        page: Some(PageRequest {
            page_size: 501,
            cursor: String::new(),
        }),
        ..Default::default()
    };
    let refused = client.list_jobs(too_big).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("page_size"));

    for cursor in ["not-a-cursor!", "AAAA"] {
        let bad = ListJobsRequest {
            page: Some(PageRequest {
                page_size: 10,
                cursor: cursor.into(),
            }),
            ..Default::default()
        };
        let refused = client.list_jobs(bad).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(refused.message().contains("cursor"), "{}", refused.message());
    }
}

#[tokio::test]
async fn another_tenant_sees_nothing_and_gets_not_found() {
    let app = app!("SEXTANT_JOBS__WORKER__ROLE" => "api");
    let mut acme = app.client("acme").await;
    let mut globex = app.client("globex").await;
    let job = acme
        .submit_job(job("noop", "{}"))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();

    let get = globex.get_job(GetJobRequest { id: job.id.clone() }).await.unwrap_err();
    let cancel = globex
        .cancel_job(CancelJobRequest {
            id: job.id.clone(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    let retry = globex
        .retry_job(RetryJobRequest { id: job.id.clone() })
        .await
        .unwrap_err();
    for refused in [get, cancel, retry] {
        assert_eq!(refused.code(), Code::NotFound);
    }
    assert_eq!(count(&mut globex).await, 0);
    let stats = globex
        .get_job_stats(GetJobStatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(stats.counts.is_empty());

    // And acme's job is untouched by all of that.
    let still = acme.get_job(GetJobRequest { id: job.id }).await.unwrap().into_inner();
    assert_eq!((still.status(), still.version), (JobStatus::Queued, 1));
    let ids: HashSet<_> = [still.id].into();
    assert_eq!(ids.len(), 1);
}
