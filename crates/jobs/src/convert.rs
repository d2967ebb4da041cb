//! Rows as messages: every translation from the job store's rows to the
//! `sextant.jobs.v1` messages (jobs, their failed attempts, events), and
//! the timestamp and duration conversions they share. API handlers, the
//! relay and watch streams all come here; nothing here handles a request.

use sextant_proto::jobs::v1::{AttemptError, FailurePolicy, Job, JobEvent, JobEventType, JobStatus, Progress};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::bus::Envelope;
use crate::store::{self, AttemptRow, EventRow, JobRow};

/// Rows as messages, each with its failed attempts (one query for them all).
pub async fn jobs_with_errors(pool: &PgPool, rows: Vec<JobRow>) -> sqlx::Result<Vec<Job>> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut errors = store::failed_attempts(pool, &ids).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let errs = errors.remove(&row.id).unwrap_or_default();
            to_job(row, errs)
        })
        .collect())
}

pub fn ts(t: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
    }
}

pub fn ms(ms: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: ms / 1000,
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

pub fn status_name(status: JobStatus) -> Option<&'static str> {
    Some(match status {
        JobStatus::Scheduled => "scheduled",
        JobStatus::Queued => "queued",
        JobStatus::Running => "running",
        JobStatus::Succeeded => "succeeded",
        JobStatus::Failed => "failed",
        JobStatus::Cancelled => "cancelled",
        JobStatus::Unspecified => return None,
    })
}

pub fn status_of(name: &str) -> JobStatus {
    match name {
        "scheduled" => JobStatus::Scheduled,
        "queued" => JobStatus::Queued,
        "running" => JobStatus::Running,
        "succeeded" => JobStatus::Succeeded,
        "failed" => JobStatus::Failed,
        "cancelled" => JobStatus::Cancelled,
        _ => JobStatus::Unspecified,
    }
}

pub fn to_job(row: JobRow, errors: Vec<AttemptRow>) -> Job {
    let progress = row.progress.as_ref().map(|p| Progress {
        percent: p.get("percent").and_then(|v| v.as_f64()).unwrap_or(0.0),
        step: p
            .get("step")
            .and_then(|v| v.as_u64())
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0),
        total_steps: p
            .get("total_steps")
            .and_then(|v| v.as_u64())
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0),
        message: p.get("message").and_then(|v| v.as_str()).unwrap_or_default().to_owned(),
        elapsed: p.get("elapsed_ms").and_then(|v| v.as_i64()).map(ms),
        estimated_remaining: p.get("remaining_ms").and_then(|v| v.as_i64()).map(ms),
    });
    Job {
        id: row.id.to_string(),
        kind: row.kind,
        status: status_of(&row.status) as i32,
        payload_json: row.payload.to_string(),
        priority: u32::try_from(row.priority).unwrap_or(0),
        attempt: u32::try_from(row.attempt).unwrap_or(0),
        max_attempts: u32::try_from(row.max_attempts).unwrap_or(0),
        timeout: Some(ms(row.timeout_ms)),
        idempotency_key: row.idempotency_key.unwrap_or_default(),
        parent_id: row.parent_id.map(|p| p.to_string()).unwrap_or_default(),
        failure_policy: if row.failure_policy == "continue" {
            FailurePolicy::Continue
        } else {
            FailurePolicy::FailFast
        } as i32,
        created_at: Some(ts(row.created_at)),
        run_at: Some(ts(row.run_at)),
        started_at: row.started_at.map(ts),
        finished_at: row.finished_at.map(ts),
        updated_at: Some(ts(row.updated_at)),
        progress,
        result_json: row.result.map(|r| r.to_string()).unwrap_or_default(),
        errors: errors
            .into_iter()
            .map(|a| AttemptError {
                attempt: u32::try_from(a.attempt).unwrap_or(0),
                code: a.error_code.unwrap_or_default(),
                message: a.error_message.unwrap_or_default(),
                started_at: Some(ts(a.started_at)),
                finished_at: a.finished_at.map(ts),
            })
            .collect(),
        cancel_requested: row.cancel_requested,
        version: u64::try_from(row.version).unwrap_or(0),
        children_total: u32::try_from(row.children_total).unwrap_or(0),
        children_done: u32::try_from(row.children_done).unwrap_or(0),
    }
}

pub fn event_type(name: &str) -> JobEventType {
    match name {
        "queued" => JobEventType::Queued,
        "scheduled" => JobEventType::Scheduled,
        "started" => JobEventType::Started,
        "progress" => JobEventType::Progress,
        "succeeded" => JobEventType::Succeeded,
        "failed" => JobEventType::Failed,
        "cancelled" => JobEventType::Cancelled,
        "retry_scheduled" => JobEventType::RetryScheduled,
        "cancel_requested" => JobEventType::CancelRequested,
        _ => JobEventType::Unspecified,
    }
}

/// An event row as the message watchers receive. The job comes without its
/// payload: events never repeat it (get the job for it).
pub fn to_envelope(row: EventRow) -> Envelope {
    let errors = row
        .errors
        .and_then(|e| serde_json::from_value::<Vec<AttemptRow>>(e).ok())
        .unwrap_or_default();
    let mut job = to_job(row.job, errors);
    job.payload_json.clear();
    Envelope {
        seq: u64::try_from(row.seq).unwrap_or(0),
        event: Some(JobEvent {
            job_id: row.job_id.to_string(),
            version: u64::try_from(row.version).unwrap_or(0),
            r#type: event_type(&row.event_type) as i32,
            occurred_at: Some(ts(row.occurred_at)),
            job: Some(job),
            retry_at: row.retry_at.map(ts),
        }),
        tenant: row.tenant,
    }
}
