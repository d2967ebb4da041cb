//! Proto ⇄ JSON conversions, in one place: the HTTP routes and the WebSocket
//! topics both render through here, so the two can never disagree on a field.
//! Jobs live here; metrics in [`metrics`], alerts in [`alerts`].

pub mod alerts;
pub mod analyses;
pub mod dashboards;
pub mod exports;
pub mod metrics;
pub mod otlp;
pub mod prometheus;
pub mod remote_write;

use serde_json::{Value, json};
use sextant_proto::jobs::v1 as pb;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub fn duration_ms(ms: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

pub fn timestamp(t: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
    }
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

pub fn millis(d: &Option<prost_types::Duration>) -> Value {
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

pub fn parse_json(text: &str) -> Value {
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

pub fn event_name(event: pb::JobEventType) -> &'static str {
    match event {
        pb::JobEventType::Queued => "queued",
        pb::JobEventType::Scheduled => "scheduled",
        pb::JobEventType::Started => "started",
        pb::JobEventType::Progress => "progress",
        pb::JobEventType::Succeeded => "succeeded",
        pb::JobEventType::Failed => "failed",
        pb::JobEventType::Cancelled => "cancelled",
        pb::JobEventType::RetryScheduled => "retry_scheduled",
        pb::JobEventType::CancelRequested => "cancel_requested",
        pb::JobEventType::Unspecified => "unknown",
    }
}

/// The fields of a WebSocket `event` frame that describe the change.
pub fn event_json(event: &pb::JobEvent) -> serde_json::Map<String, Value> {
    let mut job = event.job.as_ref().map(job_json).unwrap_or(Value::Null);
    // Events do not repeat the payload.
    if let Some(fields) = job.as_object_mut() {
        fields.remove("payload");
    }
    let mut fields = serde_json::Map::new();
    fields.insert("event".into(), json!(event_name(event.r#type())));
    fields.insert("job_id".into(), json!(event.job_id));
    fields.insert("job_version".into(), json!(event.version));
    fields.insert("occurred_at".into(), rfc3339(&event.occurred_at));
    fields.insert("retry_at".into(), rfc3339(&event.retry_at));
    fields.insert("job".into(), job);
    fields
}
