//! Every SQL statement of the jobs service, one file per thing stored:
//! `jobs` what clients submit and read, `queue` dispatch and execution,
//! `batches` a batch's children, `events` the change log the relay
//! publishes, `retention` what ages out. State changes are single guarded
//! statements (`UPDATE … WHERE status IN (…)`), so a race or a duplicate
//! request can never move a job backwards; each change bumps `version`.

/// What a database failure names, for the caller.
pub const NAME: &str = "the job store";

mod batches;
mod events;
mod jobs;
mod queue;
mod retention;

pub use batches::*;
pub use events::*;
pub use jobs::*;
pub use queue::*;
pub use retention::*;

use serde::Deserialize;
use serde_json::Value;
use sqlx::FromRow;
use time::OffsetDateTime;
use uuid::Uuid;

/// A job as stored; also a job as an event recorded it (`EventRow`).
#[derive(Debug, Clone, FromRow)]
pub struct JobRow {
    pub id: Uuid,
    pub tenant: String,
    pub kind: String,
    pub status: String,
    pub payload: Value,
    pub priority: i16,
    pub attempt: i32,
    pub max_attempts: i32,
    pub timeout_ms: i64,
    pub idempotency_key: Option<String>,
    pub parent_id: Option<Uuid>,
    pub failure_policy: String,
    pub created_at: OffsetDateTime,
    pub run_at: OffsetDateTime,
    pub started_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
    pub updated_at: OffsetDateTime,
    pub progress: Option<Value>,
    pub result: Option<Value>,
    pub cancel_requested: bool,
    pub version: i64,
    pub children_total: i32,
    pub children_done: i32,
}

#[derive(Debug, Clone, FromRow, Deserialize)]
pub struct AttemptRow {
    #[serde(default)]
    pub job_id: Uuid,
    pub attempt: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

const COLUMNS: &str = "id, tenant, kind, status, payload, priority, attempt, max_attempts, timeout_ms, \
    idempotency_key, parent_id, failure_policy, created_at, run_at, started_at, finished_at, updated_at, \
    progress, result, cancel_requested, version, children_total, children_done";

/// A cancel: queued or scheduled jobs end at once, running ones are asked to stop.
const CANCEL_SET: &str = "status = CASE WHEN status = 'running' THEN status ELSE 'cancelled' END, \
     cancel_requested = true, \
     finished_at = CASE WHEN status = 'running' THEN finished_at ELSE now() END, \
     version = version + 1, updated_at = now()";

/// Jobs a cancel still changes (a running job already asked to stop is not one).
const CANCELLABLE: &str = "(status IN ('queued', 'scheduled') OR (status = 'running' AND NOT cancel_requested))";

/// A duration as the whole milliseconds the schema stores.
fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
