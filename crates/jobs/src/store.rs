//! Every SQL statement of the jobs service. State changes are single guarded
//! statements (`UPDATE … WHERE status IN (…)`), so a race or a duplicate
//! request can never move a job backwards; each change bumps `version`.

use std::collections::HashMap;

use serde_json::Value;
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder};
use time::OffsetDateTime;
use uuid::Uuid;

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

#[derive(Debug, Clone, FromRow)]
pub struct AttemptRow {
    pub job_id: Uuid,
    pub attempt: i32,
    pub started_at: OffsetDateTime,
    pub finished_at: Option<OffsetDateTime>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

/// A validated job, ready to insert.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: Uuid,
    pub tenant: String,
    pub kind: String,
    pub payload: Value,
    pub priority: i16,
    pub max_attempts: i32,
    pub timeout_ms: i64,
    pub idempotency_key: Option<String>,
    pub run_at: OffsetDateTime,
    pub failure_policy: &'static str,
    pub parent_id: Option<Uuid>,
}

pub enum Inserted {
    Created(JobRow),
    /// The idempotency key matched the same request: the existing job.
    Existing(JobRow),
    /// The idempotency key matched a different request.
    Conflict,
}

const COLUMNS: &str = "id, tenant, kind, status, payload, priority, attempt, max_attempts, timeout_ms, \
    idempotency_key, parent_id, failure_policy, created_at, run_at, started_at, finished_at, updated_at, \
    progress, result, cancel_requested, version, children_total, children_done";

pub async fn insert(pool: &PgPool, job: &NewJob) -> sqlx::Result<Inserted> {
    let status = if job.run_at > OffsetDateTime::now_utc() {
        "scheduled"
    } else {
        "queued"
    };
    let inserted: Option<JobRow> = sqlx::query_as(&format!(
        "INSERT INTO jobs (id, tenant, kind, status, payload, priority, max_attempts, timeout_ms, \
             idempotency_key, run_at, failure_policy, parent_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
         RETURNING {COLUMNS}"
    ))
    .bind(job.id)
    .bind(&job.tenant)
    .bind(&job.kind)
    .bind(status)
    .bind(&job.payload)
    .bind(job.priority)
    .bind(job.max_attempts)
    .bind(job.timeout_ms)
    .bind(&job.idempotency_key)
    .bind(job.run_at)
    .bind(job.failure_policy)
    .bind(job.parent_id)
    .fetch_optional(pool)
    .await?;
    if let Some(row) = inserted {
        return Ok(Inserted::Created(row));
    }
    let existing: JobRow = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM jobs WHERE tenant = $1 AND idempotency_key = $2"
    ))
    .bind(&job.tenant)
    .bind(&job.idempotency_key)
    .fetch_one(pool)
    .await?;
    let same = existing.kind == job.kind
        && existing.payload == job.payload
        && existing.priority == job.priority
        && existing.max_attempts == job.max_attempts
        && existing.timeout_ms == job.timeout_ms;
    Ok(if same {
        Inserted::Existing(existing)
    } else {
        Inserted::Conflict
    })
}

pub async fn get(pool: &PgPool, tenant: &str, id: Uuid) -> sqlx::Result<Option<JobRow>> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM jobs WHERE tenant = $1 AND id = $2"))
        .bind(tenant)
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Failed attempts of the given jobs, oldest first.
pub async fn failed_attempts(pool: &PgPool, ids: &[Uuid]) -> sqlx::Result<HashMap<Uuid, Vec<AttemptRow>>> {
    let rows: Vec<AttemptRow> = sqlx::query_as(
        "SELECT job_id, attempt, started_at, finished_at, error_code, error_message FROM job_attempts \
         WHERE job_id = ANY($1) AND error_code IS NOT NULL ORDER BY job_id, attempt",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    let mut by_job: HashMap<Uuid, Vec<AttemptRow>> = HashMap::new();
    for row in rows {
        by_job.entry(row.job_id).or_default().push(row);
    }
    Ok(by_job)
}

#[derive(Debug, Default)]
pub struct ListFilter {
    pub statuses: Vec<String>,
    pub kinds: Vec<String>,
    pub created_after: Option<OffsetDateTime>,
    pub created_before: Option<OffsetDateTime>,
    pub parent_id: Option<Uuid>,
    /// Only jobs older than this one (the cursor).
    pub before_id: Option<Uuid>,
    pub limit: i64,
}

/// Newest first. Ids are UUIDv7, so `id < cursor` pages stay exact while jobs
/// are being inserted: new jobs sort before every cursor already handed out.
pub async fn list(pool: &PgPool, tenant: &str, filter: &ListFilter) -> sqlx::Result<Vec<JobRow>> {
    let mut query = QueryBuilder::<Postgres>::new(format!("SELECT {COLUMNS} FROM jobs WHERE tenant = "));
    query.push_bind(tenant);
    if !filter.statuses.is_empty() {
        query.push(" AND status = ANY(").push_bind(&filter.statuses).push(")");
    }
    if !filter.kinds.is_empty() {
        query.push(" AND kind = ANY(").push_bind(&filter.kinds).push(")");
    }
    if let Some(after) = filter.created_after {
        query.push(" AND created_at >= ").push_bind(after);
    }
    if let Some(before) = filter.created_before {
        query.push(" AND created_at < ").push_bind(before);
    }
    if let Some(parent) = filter.parent_id {
        query.push(" AND parent_id = ").push_bind(parent);
    }
    if let Some(cursor) = filter.before_id {
        query.push(" AND id < ").push_bind(cursor);
    }
    query.push(" ORDER BY id DESC LIMIT ").push_bind(filter.limit);
    query.build_query_as().fetch_all(pool).await
}

/// A cancel: queued or scheduled jobs end at once, running ones are asked to stop.
const CANCEL_SET: &str = "status = CASE WHEN status = 'running' THEN status ELSE 'cancelled' END, \
     cancel_requested = true, \
     finished_at = CASE WHEN status = 'running' THEN finished_at ELSE now() END, \
     version = version + 1, updated_at = now()";

/// Jobs a cancel still changes (a running job already asked to stop is not one).
const CANCELLABLE: &str = "(status IN ('queued', 'scheduled') OR (status = 'running' AND NOT cancel_requested))";

pub enum Cancelled {
    /// Queued or scheduled: cancelled at once. Running: cancel requested.
    Done(JobRow),
    /// Already finished; nothing changed.
    Finished(JobRow),
    NotFound,
}

pub async fn cancel(pool: &PgPool, tenant: &str, id: Uuid) -> sqlx::Result<Cancelled> {
    let changed: Option<JobRow> = sqlx::query_as(&format!(
        "UPDATE jobs SET {CANCEL_SET} WHERE tenant = $1 AND id = $2 AND {CANCELLABLE} RETURNING {COLUMNS}"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    if let Some(row) = changed {
        return Ok(Cancelled::Done(row));
    }
    Ok(match get(pool, tenant, id).await? {
        None => Cancelled::NotFound,
        // A repeated cancel of a running job is already under way.
        Some(row) if row.status == "running" => Cancelled::Done(row),
        Some(row) => Cancelled::Finished(row),
    })
}

pub enum Retried {
    Queued(JobRow),
    /// Not failed or cancelled; nothing changed.
    NotRetryable(JobRow),
    NotFound,
}

/// A failed or cancelled job goes back to the queue for one more attempt.
pub async fn retry(pool: &PgPool, tenant: &str, id: Uuid) -> sqlx::Result<Retried> {
    let changed: Option<JobRow> = sqlx::query_as(&format!(
        "UPDATE jobs SET status = 'queued', dispatched = false, cancel_requested = false, run_at = now(), \
             finished_at = NULL, result = NULL, progress = NULL, \
             max_attempts = GREATEST(max_attempts, attempt + 1), \
             version = version + 1, updated_at = now() \
         WHERE tenant = $1 AND id = $2 AND status IN ('failed', 'cancelled') \
         RETURNING {COLUMNS}"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    if let Some(row) = changed {
        return Ok(Retried::Queued(row));
    }
    Ok(match get(pool, tenant, id).await? {
        None => Retried::NotFound,
        Some(row) => Retried::NotRetryable(row),
    })
}

#[derive(Debug, FromRow)]
pub struct CountRow {
    pub kind: String,
    pub status: String,
    pub count: i64,
}

#[derive(Debug, FromRow)]
pub struct RunTimeRow {
    pub kind: String,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
}

#[derive(Debug, FromRow)]
pub struct ThroughputRow {
    pub last_1m: i64,
    pub last_5m: i64,
    pub last_15m: i64,
}

pub struct Stats {
    pub counts: Vec<CountRow>,
    pub run_times: Vec<RunTimeRow>,
    pub throughput: ThroughputRow,
}

pub async fn stats(
    pool: &PgPool,
    tenant: &str,
    kinds: &[String],
    created_after: Option<OffsetDateTime>,
    created_before: Option<OffsetDateTime>,
) -> sqlx::Result<Stats> {
    let filter = "tenant = $1 AND (cardinality($2::text[]) = 0 OR kind = ANY($2)) \
                  AND ($3::timestamptz IS NULL OR created_at >= $3) AND ($4::timestamptz IS NULL OR created_at < $4)";
    let counts = sqlx::query_as(&format!(
        "SELECT kind, status, count(*) AS count FROM jobs WHERE {filter} GROUP BY kind, status ORDER BY kind, status"
    ))
    .bind(tenant)
    .bind(kinds)
    .bind(created_after)
    .bind(created_before)
    .fetch_all(pool)
    .await?;
    let run_times = sqlx::query_as(&format!(
        "SELECT kind, \
             percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at) * 1000) AS p50_ms, \
             percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at) * 1000) AS p95_ms \
         FROM jobs WHERE {filter} AND status = 'succeeded' AND started_at IS NOT NULL \
         GROUP BY kind ORDER BY kind"
    ))
    .bind(tenant)
    .bind(kinds)
    .bind(created_after)
    .bind(created_before)
    .fetch_all(pool)
    .await?;
    let throughput = sqlx::query_as(&format!(
        "SELECT count(*) FILTER (WHERE finished_at > now() - interval '1 minute') AS last_1m, \
                count(*) FILTER (WHERE finished_at > now() - interval '5 minutes') AS last_5m, \
                count(*) AS last_15m \
         FROM jobs WHERE {filter} AND status IN ('succeeded', 'failed') \
           AND finished_at > now() - interval '15 minutes'"
    ))
    .bind(tenant)
    .bind(kinds)
    .bind(created_after)
    .bind(created_before)
    .fetch_one(pool)
    .await?;
    Ok(Stats {
        counts,
        run_times,
        throughput,
    })
}

// ---------- dispatch and execution ----------

#[derive(Debug, Clone, FromRow)]
pub struct DueJob {
    pub id: Uuid,
    pub attempt: i32,
    pub priority: i16,
}

/// Locks up to `limit` due, undispatched jobs, highest priority first. The
/// caller publishes them and then calls [`mark_dispatched`] in the same
/// transaction, so no two dispatchers publish the same job.
pub async fn lock_due(tx: &mut sqlx::PgConnection, limit: i64) -> sqlx::Result<Vec<DueJob>> {
    sqlx::query_as(
        "SELECT id, attempt, priority FROM jobs \
         WHERE NOT dispatched AND status IN ('queued', 'scheduled') AND run_at <= now() \
         ORDER BY priority DESC, run_at LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(tx)
    .await
}

/// Marks jobs as on the broker; a scheduled one becomes queued (a change).
pub async fn mark_dispatched(tx: &mut sqlx::PgConnection, ids: &[Uuid]) -> sqlx::Result<Vec<JobRow>> {
    sqlx::query_as(&format!(
        "UPDATE jobs SET dispatched = true, status = 'queued', \
             version = version + CASE WHEN status = 'scheduled' THEN 1 ELSE 0 END, updated_at = now() \
         WHERE id = ANY($1) RETURNING {COLUMNS}"
    ))
    .bind(ids)
    .fetch_all(tx)
    .await
}

fn lease_ms(lease: std::time::Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)
}

/// Starts attempt `attempt + 1` if the job is still queued at `attempt`: a
/// duplicate delivery, or a delivery of a job already cancelled, claims nothing.
///
/// A message can arrive before the dispatcher's transaction commits, while
/// the row still says `scheduled` and `dispatched = false`. The predicate must
/// match that version too, so this waits on the dispatcher's row lock (and
/// re-checks after its commit) instead of skipping the row and dropping the
/// message; `attempt` alone keeps a duplicate or stale message from running.
pub async fn claim(
    pool: &PgPool,
    id: Uuid,
    attempt: i32,
    worker: &str,
    lease: std::time::Duration,
) -> sqlx::Result<Option<JobRow>> {
    let mut tx = pool.begin().await?;
    let row: Option<JobRow> = sqlx::query_as(&format!(
        "UPDATE jobs SET status = 'running', attempt = attempt + 1, started_at = now(), finished_at = NULL, \
             progress = NULL, lease_owner = $3, lease_expires_at = now() + $4 * interval '1 millisecond', \
             version = version + 1, updated_at = now() \
         WHERE id = $1 AND attempt = $2 AND status IN ('queued', 'scheduled') AND run_at <= now() \
           AND NOT cancel_requested \
         RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(attempt)
    .bind(worker)
    .bind(lease_ms(lease))
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = &row {
        sqlx::query("INSERT INTO job_attempts (job_id, attempt, worker) VALUES ($1, $2, $3)")
            .bind(row.id)
            .bind(row.attempt)
            .bind(worker)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(row)
}

pub async fn record_progress(
    pool: &PgPool,
    id: Uuid,
    attempt: i32,
    progress: &Value,
    lease: std::time::Duration,
) -> sqlx::Result<Option<JobRow>> {
    sqlx::query_as(&format!(
        "UPDATE jobs SET progress = $3, lease_expires_at = now() + $4 * interval '1 millisecond', \
             version = version + 1, updated_at = now() \
         WHERE id = $1 AND attempt = $2 AND status = 'running' RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(attempt)
    .bind(progress)
    .bind(lease_ms(lease))
    .fetch_optional(pool)
    .await
}

/// Renews the lease; `Some(cancel_requested)` while the attempt is still ours.
pub async fn heartbeat(
    pool: &PgPool,
    id: Uuid,
    attempt: i32,
    lease: std::time::Duration,
) -> sqlx::Result<Option<bool>> {
    sqlx::query_scalar(
        "UPDATE jobs SET lease_expires_at = now() + $3 * interval '1 millisecond' \
         WHERE id = $1 AND attempt = $2 AND status = 'running' RETURNING cancel_requested",
    )
    .bind(id)
    .bind(attempt)
    .bind(lease_ms(lease))
    .fetch_optional(pool)
    .await
}

/// How an attempt ended.
pub enum Finish {
    Succeeded(Value),
    Cancelled,
    /// Failed; runs again at `retry_at` if set, else the job has failed.
    Failed {
        code: String,
        message: String,
        retry_at: Option<OffsetDateTime>,
    },
}

/// Records the end of attempt `attempt`, if it is still the running one.
pub async fn finish(pool: &PgPool, id: Uuid, attempt: i32, finish: &Finish) -> sqlx::Result<Option<JobRow>> {
    let mut tx = pool.begin().await?;
    let (status, result, retry_at, error) = match finish {
        Finish::Succeeded(result) => ("succeeded", Some(result), None, None),
        Finish::Cancelled => ("cancelled", None, None, Some(("cancelled", "cancelled while running"))),
        Finish::Failed {
            code,
            message,
            retry_at: Some(at),
        } => ("scheduled", None, Some(*at), Some((code.as_str(), message.as_str()))),
        Finish::Failed { code, message, .. } => ("failed", None, None, Some((code.as_str(), message.as_str()))),
    };
    let row: Option<JobRow> = sqlx::query_as(&format!(
        "UPDATE jobs SET status = $3, result = $4, \
             run_at = COALESCE($5, run_at), dispatched = ($5 IS NULL), \
             finished_at = CASE WHEN $5 IS NULL THEN now() END, \
             lease_owner = NULL, lease_expires_at = NULL, version = version + 1, updated_at = now() \
         WHERE id = $1 AND attempt = $2 AND status = 'running' RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(attempt)
    .bind(status)
    .bind(result)
    .bind(retry_at)
    .fetch_optional(&mut *tx)
    .await?;
    if row
        .as_ref()
        .is_some_and(|r| matches!(r.status.as_str(), "cancelled" | "failed"))
    {
        cancel_children(&mut tx, id).await?;
    }
    if row.is_some() {
        sqlx::query(
            "UPDATE job_attempts SET finished_at = now(), error_code = $3, error_message = $4 \
             WHERE job_id = $1 AND attempt = $2",
        )
        .bind(id)
        .bind(attempt)
        .bind(error.map(|e| e.0))
        .bind(error.map(|e| e.1))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(row)
}

/// Running jobs whose lease expired (their worker died) go back to the queue,
/// or fail if that was their last attempt.
pub async fn reap_expired(pool: &PgPool) -> sqlx::Result<Vec<JobRow>> {
    requeue_running(
        pool,
        "lease_expires_at < now()",
        None,
        "worker_lost",
        "the worker running this attempt stopped responding",
        false,
    )
    .await
}

/// A stopping worker hands its running jobs back; the interrupted attempt
/// does not count against the job's attempts.
pub async fn hand_back(pool: &PgPool, worker: &str) -> sqlx::Result<Vec<JobRow>> {
    requeue_running(
        pool,
        "lease_owner = $1",
        Some(worker),
        "interrupted",
        "the worker shut down",
        true,
    )
    .await
}

async fn requeue_running(
    pool: &PgPool,
    condition: &str,
    worker: Option<&str>,
    code: &str,
    message: &str,
    free_attempt: bool,
) -> sqlx::Result<Vec<JobRow>> {
    let mut tx = pool.begin().await?;
    let sql = format!("SELECT id FROM jobs WHERE status = 'running' AND {condition} FOR UPDATE SKIP LOCKED");
    let mut select = sqlx::query_scalar::<_, Uuid>(&sql);
    if let Some(worker) = worker {
        select = select.bind(worker);
    }
    let ids: Vec<Uuid> = select.fetch_all(&mut *tx).await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let budget = if free_attempt {
        "GREATEST(max_attempts, attempt + 1)"
    } else {
        "max_attempts"
    };
    let rows: Vec<JobRow> = sqlx::query_as(&format!(
        "UPDATE jobs SET max_attempts = {budget}, \
             status = CASE WHEN attempt >= {budget} THEN 'failed' ELSE 'queued' END, \
             finished_at = CASE WHEN attempt >= {budget} THEN now() END, \
             dispatched = false, run_at = now(), lease_owner = NULL, lease_expires_at = NULL, \
             version = version + 1, updated_at = now() \
         WHERE id = ANY($1) RETURNING {COLUMNS}"
    ))
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    for row in &rows {
        sqlx::query(
            "UPDATE job_attempts SET finished_at = now(), error_code = $3, error_message = $4 \
             WHERE job_id = $1 AND attempt = $2 AND finished_at IS NULL",
        )
        .bind(row.id)
        .bind(row.attempt)
        .bind(code)
        .bind(message)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(rows)
}

// ---------- batches ----------

/// Cancels a parent's unfinished children: queued ones at once, running ones
/// by request.
pub async fn cancel_children(conn: &mut sqlx::PgConnection, parent: Uuid) -> sqlx::Result<u64> {
    let done = sqlx::query(&format!(
        "UPDATE jobs SET {CANCEL_SET} WHERE parent_id = $1 AND {CANCELLABLE}"
    ))
    .bind(parent)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

#[derive(Debug, Default, Clone, Copy)]
pub struct ChildCounts {
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
}

impl ChildCounts {
    pub fn done(&self) -> i64 {
        self.succeeded + self.failed + self.cancelled
    }
}

pub async fn child_counts(pool: &PgPool, parent: Uuid) -> sqlx::Result<ChildCounts> {
    let (total, succeeded, failed, cancelled): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded'), \
                count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE status = 'cancelled') \
         FROM jobs WHERE parent_id = $1",
    )
    .bind(parent)
    .fetch_one(pool)
    .await?;
    Ok(ChildCounts {
        total,
        succeeded,
        failed,
        cancelled,
    })
}

pub async fn set_children(pool: &PgPool, parent: Uuid, total: i64, done: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE jobs SET children_total = $2, children_done = $3 WHERE id = $1")
        .bind(parent)
        .bind(i32::try_from(total).unwrap_or(i32::MAX))
        .bind(i32::try_from(done).unwrap_or(i32::MAX))
        .execute(pool)
        .await?;
    Ok(())
}

/// The children of `parent`, oldest first (for the batch's result).
pub async fn children(pool: &PgPool, parent: Uuid) -> sqlx::Result<Vec<JobRow>> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM jobs WHERE parent_id = $1 ORDER BY id"))
        .bind(parent)
        .fetch_all(pool)
        .await
}
