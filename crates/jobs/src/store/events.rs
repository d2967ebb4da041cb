//! The change log: one row per change of a job, numbered for publication;
//! what the relay publishes and what a watch catches up from.

use serde_json::Value;
use sqlx::{FromRow, PgPool, Row};

use super::JobRow;
use time::OffsetDateTime;
use uuid::Uuid;

/// One recorded change of a job (see `0003_job_events.sql`,
/// `0008_event_numbers_at_insert.sql` and `0010_typed_events.sql`).
#[derive(Debug, Clone, FromRow)]
pub struct EventRow {
    /// Publication order (see `0008_event_numbers_at_insert.sql`).
    pub seq: i64,
    pub tenant: String,
    pub job_id: Uuid,
    pub version: i64,
    #[sqlx(rename = "type")]
    pub event_type: String,
    pub occurred_at: OffsetDateTime,
    pub retry_at: Option<OffsetDateTime>,
    /// The job after the change, without its payload (events never repeat it).
    #[sqlx(flatten)]
    pub job: JobRow,
    pub errors: Option<Value>,
}

/// An event's columns, and the job's under the names a [`JobRow`] reads:
/// its id, its `updated_at` (the event's time) and an empty payload.
const EVENT_COLUMNS: &str = "seq, tenant, job_id, version, type, occurred_at, retry_at, errors, \
    job_id AS id, kind, status, 'null'::jsonb AS payload, priority, attempt, max_attempts, timeout_ms, \
    idempotency_key, parent_id, failure_policy, created_at, run_at, started_at, finished_at, \
    occurred_at AS updated_at, progress, result, cancel_requested, children_total, children_done";

/// How far publishing got: every event up to this number is on the broker.
pub async fn published_through(conn: &mut sqlx::PgConnection) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT published_through FROM job_event_relay WHERE id = 1")
        .fetch_one(conn)
        .await
}

/// Records that everything up to `published` is on the broker.
pub async fn record_published(conn: &mut sqlx::PgConnection, published: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE job_event_relay SET published_through = $1 WHERE id = 1 AND published_through < $1")
        .bind(published)
        .execute(conn)
        .await?;
    Ok(())
}

/// Up to `limit` final events after `after` (numbered below the horizon, see
/// `0008_event_numbers_at_insert.sql`) in number order, and whether a newer
/// committed event is waiting for an older transaction to end. The caller
/// must hold [`RELAY_LOCK`].
pub async fn publishable_events(
    conn: &mut sqlx::PgConnection,
    after: i64,
    limit: i64,
) -> sqlx::Result<(Vec<EventRow>, bool)> {
    // One statement: the horizon, the newest number (`max` reads one end of
    // the `seq` index), and the events below the horizon; a row of NULL
    // events when there are none.
    let rows = sqlx::query(&format!(
        "SELECT h.horizon, h.newest, e.* \
         FROM (SELECT job_event_horizon() AS horizon, (SELECT max(seq) FROM job_events) AS newest) h \
         LEFT JOIN LATERAL ( \
             SELECT {EVENT_COLUMNS} FROM job_events WHERE seq > $1 AND seq < h.horizon ORDER BY seq LIMIT $2 \
         ) e ON h.newest > $1"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let Some(first) = rows.first() else {
        return Ok((Vec::new(), false));
    };
    let horizon: i64 = first.try_get("horizon")?;
    let newest: i64 = first.try_get::<Option<i64>, _>("newest")?.unwrap_or(0);
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        if row.try_get::<Option<i64>, _>("seq")?.is_some() {
            events.push(EventRow::from_row(row)?);
        }
    }
    let waiting = (events.len() as i64) < limit && newest >= horizon && newest > after;
    Ok((events, waiting))
}

/// Key of the session advisory lock that makes one replica's relay the publisher.
pub const RELAY_LOCK: i64 = 0x5e47_a47e_0001;

/// Channel on which other replicas tell the publishing relay they have events.
pub const RELAY_CHANNEL: &str = "sextant_job_events";

/// A number every event up to which is final: committed (or never to be),
/// and so readable now. Every event numbered after it is still to come.
pub async fn settled_seq(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT job_event_horizon() - 1")
        .fetch_one(pool)
        .await
}

/// The highest event number that may be gone: pruned by age, or deleted
/// with its job. A resume point before it cannot be caught up.
pub async fn pruned_through(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT GREATEST(pruned_through, forgotten_through) FROM job_event_relay WHERE id = 1")
        .fetch_one(pool)
        .await
}

/// A tenant's final events after `after` (numbered below the horizon: no
/// event numbered before one of these can still appear), oldest first.
pub async fn tenant_events(pool: &PgPool, tenant: &str, after: i64, limit: i64) -> sqlx::Result<Vec<EventRow>> {
    sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM job_events \
         WHERE tenant = $1 AND seq > $2 AND seq < job_event_horizon() ORDER BY seq LIMIT $3"
    ))
    .bind(tenant)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A job's events after version `after`, oldest first (numbered or not yet).
pub async fn job_events(pool: &PgPool, job_id: Uuid, after: i64) -> sqlx::Result<Vec<EventRow>> {
    sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM job_events WHERE job_id = $1 AND version > $2 ORDER BY version"
    ))
    .bind(job_id)
    .bind(after)
    .fetch_all(pool)
    .await
}
