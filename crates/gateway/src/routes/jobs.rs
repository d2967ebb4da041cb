//! `/api/v1/jobs`: the job queue over HTTP. The gateway maps JSON to the
//! jobs service's gRPC and back; validation lives in the service (one place),
//! and its errors come back as problem+json with the same stable codes.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};
use serde::Deserialize;
use serde_json::{Value, json};
use sextant_common::{ErrorCode, idempotency};
use sextant_proto::jobs::v1 as pb;
use time::OffsetDateTime;

use super::params::{idempotency_key, page};
use crate::auth::Principal;
use crate::backends::{Backends, request};
use crate::convert::{duration_ms, job_json, millis, status_name, timestamp};
use crate::error::{ApiError, JsonBody};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    kind: String,
    /// A JSON object (or null: `{}`), checked by the kind in the service.
    #[serde(default)]
    payload: Option<serde_json::Map<String, Value>>,
    priority: Option<u32>,
    /// Start no earlier than this many milliseconds from now.
    delay_ms: Option<u64>,
    /// Start no earlier than this time (RFC 3339); exclusive with `delay_ms`.
    #[serde(default, with = "time::serde::rfc3339::option")]
    run_at: Option<OffsetDateTime>,
    max_attempts: Option<u32>,
    timeout_ms: Option<u64>,
    idempotency_key: Option<String>,
    failure_policy: Option<FailurePolicy>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FailurePolicy {
    FailFast,
    Continue,
}

/// A submit the gateway refuses before the service sees it.
struct FieldError {
    field: &'static str,
    message: String,
}

impl From<FieldError> for ApiError {
    fn from(error: FieldError) -> Self {
        ApiError::new(ErrorCode::InvalidArgument, error.message)
    }
}

impl SubmitBody {
    fn into_request(self, header_key: Option<String>) -> Result<pb::SubmitJobRequest, FieldError> {
        use pb::submit_job_request::Schedule;
        // Checked here as well as in the service: the header may win over it.
        if self.idempotency_key.as_ref().is_some_and(|k| !idempotency::valid(k)) {
            return Err(FieldError {
                field: "idempotency_key",
                message: format!("idempotency_key {}", idempotency::RULE),
            });
        }
        let schedule = match (self.delay_ms, self.run_at) {
            (Some(_), Some(_)) => {
                return Err(FieldError {
                    field: "run_at",
                    message: "set delay_ms or run_at, not both".into(),
                });
            }
            (Some(ms), None) => Some(Schedule::Delay(duration_ms(ms))),
            (None, Some(at)) => Some(Schedule::RunAt(timestamp(at))),
            (None, None) => None,
        };
        let payload = Value::Object(self.payload.unwrap_or_default());
        Ok(pb::SubmitJobRequest {
            kind: self.kind,
            payload_json: payload.to_string(),
            priority: self.priority,
            schedule,
            max_attempts: self.max_attempts,
            timeout: self.timeout_ms.map(duration_ms),
            idempotency_key: header_key.or(self.idempotency_key).unwrap_or_default(),
            parent_id: String::new(),
            failure_policy: match self.failure_policy {
                None => pb::FailurePolicy::Unspecified,
                Some(FailurePolicy::FailFast) => pb::FailurePolicy::FailFast,
                Some(FailurePolicy::Continue) => pb::FailurePolicy::Continue,
            } as i32,
        })
    }
}

pub async fn submit(
    req: HttpRequest,
    principal: Principal,
    backends: web::Data<Backends>,
    JsonBody(body): JsonBody<SubmitBody>,
) -> Result<HttpResponse, ApiError> {
    let message = body.into_request(idempotency_key(&req)?)?;
    let response = backends
        .jobs()
        .submit_job(request(&principal.caller(), message)?)
        .await?
        .into_inner();
    Ok(submitted(response, HttpResponse::Created))
}

/// The answer to a job submission: `fresh` (201 here, 202 for an analysis)
/// for a new job, 200 for the one an idempotency key already made; the job,
/// with `Location` naming it.
pub(crate) fn submitted(response: pb::SubmitJobResponse, fresh: fn() -> HttpResponseBuilder) -> HttpResponse {
    let job = response.job.unwrap_or_default();
    let mut reply = if response.created { fresh() } else { HttpResponse::Ok() };
    reply
        .insert_header((header::LOCATION, format!("/api/v1/jobs/{}", job.id)))
        .json(job_json(&job))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    jobs: Vec<SubmitBody>,
}

pub async fn submit_batch(
    principal: Principal,
    backends: web::Data<Backends>,
    JsonBody(body): JsonBody<BatchBody>,
) -> Result<HttpResponse, ApiError> {
    // An item the gateway itself refuses fails alone, like any other item
    // error: the rest go to the service, and the answers are put back in order.
    let mut items: Vec<Option<Value>> = Vec::with_capacity(body.jobs.len());
    let mut sent = Vec::new();
    let mut sent_at = Vec::new();
    for (index, job) in body.jobs.into_iter().enumerate() {
        match job.into_request(None) {
            Ok(request) => {
                sent.push(request);
                sent_at.push(index);
                items.push(None);
            }
            Err(error) => items.push(Some(json!({ "error": {
                "index": index,
                "code": ErrorCode::InvalidArgument.as_str(),
                "message": error.message,
                "field": error.field,
            } }))),
        }
    }
    if !sent.is_empty() || items.is_empty() {
        let response = backends
            .jobs()
            .submit_jobs(request(&principal.caller(), pb::SubmitJobsRequest { jobs: sent })?)
            .await?
            .into_inner();
        for (item, index) in response.items.iter().zip(sent_at) {
            items[index] = Some(match &item.outcome {
                Some(pb::submit_jobs_response::item::Outcome::Accepted(a)) => {
                    json!({ "created": a.created, "job": a.job.as_ref().map(job_json) })
                }
                Some(pb::submit_jobs_response::item::Outcome::Error(e)) => {
                    json!({ "error": { "index": index, "code": e.code, "message": e.message, "field": e.field } })
                }
                None => json!({ "error": { "index": index, "code": "internal", "message": "no outcome" } }),
            });
        }
    }
    let items: Vec<Value> = items.into_iter().map(Option::unwrap_or_default).collect();
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}

pub async fn get(
    principal: Principal,
    backends: web::Data<Backends>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let caller = principal.caller();
    let job = backends
        .retry_idempotent(|| {
            let (caller, id) = (caller.clone(), id.clone());
            let mut client = backends.jobs();
            async move {
                let message = request(&caller, pb::GetJobRequest { id })
                    .map_err(|e| ErrorCode::InvalidArgument.status(e.detail))?;
                client.get_job(message).await
            }
        })
        .await?
        .into_inner();
    Ok(HttpResponse::Ok().json(job_json(&job)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Comma-separated statuses.
    status: Option<String>,
    /// Comma-separated kinds.
    kind: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    created_after: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    created_before: Option<OffsetDateTime>,
    page_size: Option<u32>,
    cursor: Option<String>,
}

/// The largest page `GET /api/v1/jobs` serves (the jobs service's limit).
const MAX_PAGE_SIZE: u32 = 500;

fn parse_status(name: &str) -> Result<i32, ApiError> {
    let status = match name {
        "scheduled" => pb::JobStatus::Scheduled,
        "queued" => pb::JobStatus::Queued,
        "running" => pb::JobStatus::Running,
        "succeeded" => pb::JobStatus::Succeeded,
        "failed" => pb::JobStatus::Failed,
        "cancelled" => pb::JobStatus::Cancelled,
        other => {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!("unknown status {other:?}"),
            ));
        }
    };
    Ok(status as i32)
}

fn split(list: Option<String>) -> Vec<String> {
    list.map(|l| {
        l.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}

pub async fn list(
    principal: Principal,
    backends: web::Data<Backends>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let page = page(query.page_size, &query.cursor, MAX_PAGE_SIZE)?;
    let message = pb::ListJobsRequest {
        statuses: split(query.status)
            .iter()
            .map(|s| parse_status(s))
            .collect::<Result<_, _>>()?,
        kinds: split(query.kind),
        created: Some(sextant_proto::common::v1::TimeRange {
            start: query.created_after.map(timestamp),
            end: query.created_before.map(timestamp),
        }),
        page: Some(page),
        parent_id: String::new(),
    };
    let caller = principal.caller();
    let response = backends
        .retry_idempotent(|| {
            let (caller, message) = (caller.clone(), message.clone());
            let mut client = backends.jobs();
            async move {
                let message = request(&caller, message).map_err(|e| ErrorCode::InvalidArgument.status(e.detail))?;
                client.list_jobs(message).await
            }
        })
        .await?
        .into_inner();
    let next = response.page.map(|p| p.next_cursor).filter(|c| !c.is_empty());
    Ok(HttpResponse::Ok().json(json!({
        "jobs": response.jobs.iter().map(job_json).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

pub async fn cancel(
    principal: Principal,
    backends: web::Data<Backends>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let message = pb::CancelJobRequest {
        id: id.into_inner(),
        reason: String::new(),
    };
    let job = backends
        .jobs()
        .cancel_job(request(&principal.caller(), message)?)
        .await?
        .into_inner();
    Ok(HttpResponse::Ok().json(job_json(&job)))
}

pub async fn retry(
    principal: Principal,
    backends: web::Data<Backends>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let message = pb::RetryJobRequest { id: id.into_inner() };
    let job = backends
        .jobs()
        .retry_job(request(&principal.caller(), message)?)
        .await?
        .into_inner();
    Ok(HttpResponse::Ok().json(job_json(&job)))
}

pub async fn stats(principal: Principal, backends: web::Data<Backends>) -> Result<HttpResponse, ApiError> {
    let caller = principal.caller();
    let stats = backends
        .retry_idempotent(|| {
            let caller = caller.clone();
            let mut client = backends.jobs();
            async move {
                let message = request(&caller, pb::GetJobStatsRequest::default())
                    .map_err(|e| ErrorCode::InvalidArgument.status(e.detail))?;
                client.get_job_stats(message).await
            }
        })
        .await?
        .into_inner();
    Ok(HttpResponse::Ok().json(json!({
        "counts": stats.counts.iter().map(|c| json!({
            "kind": c.kind, "status": status_name(c.status()), "count": c.count,
        })).collect::<Vec<_>>(),
        "run_times": stats.run_times.iter().map(|r| json!({
            "kind": r.kind, "p50_ms": millis(&r.p50), "p95_ms": millis(&r.p95),
        })).collect::<Vec<_>>(),
        "throughput_per_second": {
            "last_1m": stats.throughput_1m, "last_5m": stats.throughput_5m, "last_15m": stats.throughput_15m,
        },
    })))
}
