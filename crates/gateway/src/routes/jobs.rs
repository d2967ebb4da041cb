//! `/api/v1/jobs`: the job queue over HTTP. The gateway maps JSON to the
//! jobs service's gRPC and back; validation lives in the service (one place),
//! and its errors come back as problem+json with the same stable codes.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};
use sextant_common::ErrorCode;
use sextant_proto::jobs::v1 as pb;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::auth::Principal;
use crate::backends::{Backends, request};
use crate::error::{ApiError, JsonBody};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    kind: String,
    #[serde(default)]
    payload: Option<Value>,
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

fn duration_ms(ms: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

fn timestamp(t: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
    }
}

impl SubmitBody {
    fn into_request(self, header_key: Option<String>) -> Result<pb::SubmitJobRequest, ApiError> {
        use pb::submit_job_request::Schedule;
        let schedule = match (self.delay_ms, self.run_at) {
            (Some(_), Some(_)) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidArgument,
                    "set delay_ms or run_at, not both",
                ));
            }
            (Some(ms), None) => Some(Schedule::Delay(duration_ms(ms))),
            (None, Some(at)) => Some(Schedule::RunAt(timestamp(at))),
            (None, None) => None,
        };
        let payload = self.payload.unwrap_or_else(|| json!({}));
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

fn idempotency_header(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    req.headers()
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::new(ErrorCode::InvalidArgument, "Idempotency-Key must be ASCII"))
        })
        .transpose()
}

pub fn rfc3339(t: &Option<prost_types::Timestamp>) -> Value {
    t.as_ref()
        .and_then(|t| {
            OffsetDateTime::from_unix_timestamp(t.seconds)
                .ok()
                .map(|d| d + time::Duration::nanoseconds(i64::from(t.nanos)))
        })
        .and_then(|d| d.format(&Rfc3339).ok())
        .map_or(Value::Null, Value::String)
}

fn millis(d: &Option<prost_types::Duration>) -> Value {
    d.as_ref().map_or(Value::Null, |d| {
        json!(d.seconds * 1000 + i64::from(d.nanos) / 1_000_000)
    })
}

pub fn status_name(status: pb::JobStatus) -> &'static str {
    match status {
        pb::JobStatus::Scheduled => "scheduled",
        pb::JobStatus::Queued => "queued",
        pb::JobStatus::Running => "running",
        pb::JobStatus::Succeeded => "succeeded",
        pb::JobStatus::Failed => "failed",
        pb::JobStatus::Cancelled => "cancelled",
        pb::JobStatus::Unspecified => "unknown",
    }
}

fn parse_json(text: &str) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(text).unwrap_or(Value::Null)
    }
}

/// The JSON shape of a job, as documented in the OpenAPI document.
pub fn job_json(job: &pb::Job) -> Value {
    json!({
        "id": job.id,
        "kind": job.kind,
        "status": status_name(job.status()),
        "payload": parse_json(&job.payload_json),
        "priority": job.priority,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "timeout_ms": millis(&job.timeout),
        "idempotency_key": (!job.idempotency_key.is_empty()).then_some(&job.idempotency_key),
        "parent_id": (!job.parent_id.is_empty()).then_some(&job.parent_id),
        "created_at": rfc3339(&job.created_at),
        "run_at": rfc3339(&job.run_at),
        "started_at": rfc3339(&job.started_at),
        "finished_at": rfc3339(&job.finished_at),
        "updated_at": rfc3339(&job.updated_at),
        "progress": job.progress.as_ref().map(|p| json!({
            "percent": p.percent,
            "step": p.step,
            "total_steps": p.total_steps,
            "message": p.message,
            "elapsed_ms": millis(&p.elapsed),
            "remaining_ms": millis(&p.estimated_remaining),
        })),
        "result": parse_json(&job.result_json),
        "errors": job.errors.iter().map(|e| json!({
            "attempt": e.attempt,
            "code": e.code,
            "message": e.message,
            "started_at": rfc3339(&e.started_at),
            "finished_at": rfc3339(&e.finished_at),
        })).collect::<Vec<_>>(),
        "cancel_requested": job.cancel_requested,
        "children_total": job.children_total,
        "children_done": job.children_done,
        "version": job.version,
    })
}

pub async fn submit(
    req: HttpRequest,
    principal: Principal,
    backends: web::Data<Backends>,
    JsonBody(body): JsonBody<SubmitBody>,
) -> Result<HttpResponse, ApiError> {
    let message = body.into_request(idempotency_header(&req)?)?;
    let response = backends
        .jobs()
        .submit_job(request(&principal.caller(), message)?)
        .await?
        .into_inner();
    let job = response.job.unwrap_or_default();
    let mut reply = if response.created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(reply
        .insert_header((header::LOCATION, format!("/api/v1/jobs/{}", job.id)))
        .json(job_json(&job)))
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
    let jobs = body
        .jobs
        .into_iter()
        .map(|j| j.into_request(None))
        .collect::<Result<Vec<_>, _>>()?;
    let response = backends
        .jobs()
        .submit_jobs(request(&principal.caller(), pb::SubmitJobsRequest { jobs })?)
        .await?
        .into_inner();
    let items: Vec<Value> = response
        .items
        .iter()
        .map(|item| match &item.outcome {
            Some(pb::submit_jobs_response::item::Outcome::Accepted(a)) => {
                json!({ "created": a.created, "job": a.job.as_ref().map(job_json) })
            }
            Some(pb::submit_jobs_response::item::Outcome::Error(e)) => {
                json!({ "error": { "index": e.index, "code": e.code, "message": e.message, "field": e.field } })
            }
            None => json!({ "error": { "code": "internal", "message": "no outcome" } }),
        })
        .collect();
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
        page: Some(sextant_proto::common::v1::PageRequest {
            page_size: query.page_size.unwrap_or(0),
            cursor: query.cursor.unwrap_or_default(),
        }),
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
