//! Dispatch and execution: the outbox the dispatcher publishes from, claims,
//! progress, heartbeats, how attempts end, and leases that expired.

use serde_json::Value;
use sqlx::{FromRow, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{COLUMNS, JobRow, cancel_children, millis};

#[derive(Debug, Clone, FromRow)]
pub struct DueJob {
    pub id: Uuid,
    pub attempt: i32,
    pub priority: i16,
    /// `scheduled` ones become queued when marked: a change, with an event.
    pub status: String,
}

/// Locks up to `limit` due, undispatched jobs, highest priority first. The
/// caller publishes them and then calls [`mark_dispatched`] in the same
/// transaction, so no two dispatchers publish the same job.
pub async fn lock_due(tx: &mut sqlx::PgConnection, limit: i64) -> sqlx::Result<Vec<DueJob>> {
    sqlx::query_as(
        "SELECT id, attempt, priority, status FROM jobs \
         WHERE NOT dispatched AND status IN ('queued', 'scheduled') AND run_at <= now() \
         ORDER BY priority DESC, run_at LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(tx)
    .await
}

/// Queued jobs whose message went out more than `after` ago and that no
/// worker has claimed go back to the outbox, in case the broker lost the
/// message. Not a change of the job (no new version, no event): a duplicate
/// delivery claims nothing. Returns how many.
pub async fn redispatch_stale(pool: &PgPool, after: std::time::Duration) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "UPDATE jobs SET dispatched = false \
         WHERE status = 'queued' AND dispatched AND updated_at < now() - $1 * interval '1 millisecond'",
    )
    .bind(millis(after))
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Queued jobs handed to a dispatcher in memory that could not publish them
/// go back to the outbox. Not a change of the job (no new version, no event).
pub async fn undispatch(pool: &PgPool, ids: &[Uuid]) -> sqlx::Result<()> {
    sqlx::query("UPDATE jobs SET dispatched = false WHERE id = ANY($1) AND status = 'queued' AND dispatched")
        .bind(ids)
        .execute(pool)
        .await?;
    Ok(())
}

/// Marks jobs as on the broker; a scheduled one becomes queued (a change).
pub async fn mark_dispatched(tx: &mut sqlx::PgConnection, ids: &[Uuid]) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE jobs SET dispatched = true, status = 'queued', \
             version = version + CASE WHEN status = 'scheduled' THEN 1 ELSE 0 END, updated_at = now() \
         WHERE id = ANY($1)",
    )
    .bind(ids)
    .execute(tx)
    .await?;
    Ok(())
}

/// Starts attempt `attempt + 1` of each `(id, attempt)` whose job is still
/// queued at `attempt`, in one transaction: a duplicate delivery, or a
/// delivery of a job already cancelled, claims nothing. Returns the claimed.
///
/// A message can arrive before the dispatcher's transaction commits, while
/// the row still says `scheduled` and `dispatched = false`. The predicate must
/// match that version too, so this waits on the dispatcher's row lock (and
/// re-checks after its commit) instead of skipping the row and dropping the
/// message; `attempt` alone keeps a duplicate or stale message from running.
/// A claimed job, with the trace its attempt continues.
#[derive(Debug, Clone, FromRow)]
pub struct Claimed {
    #[sqlx(flatten)]
    pub job: JobRow,
    pub trace_context: Option<String>,
}

pub async fn claim_many(
    pool: &PgPool,
    messages: &[(Uuid, i32)],
    worker: &str,
    lease: std::time::Duration,
) -> sqlx::Result<Vec<Claimed>> {
    // One statement: the attempts are recorded with the claims, atomically.
    // The plan must stay on the primary key whatever the statistics say (a
    // queue table's are always stale: the last analyze saw it small, or saw
    // no job queued): `id = ANY($1)` offers that path, and the statement is
    // planned at each call, with its ids and against the table as it is now,
    // instead of keeping a connection's generic plan, which went on scanning
    // the whole table once it had grown.
    sqlx::query_as(&format!(
        "WITH claimed AS ( \
             UPDATE jobs SET status = 'running', attempt = attempt + 1, started_at = now(), finished_at = NULL, \
                 progress = NULL, lease_owner = $3, lease_expires_at = now() + $4 * interval '1 millisecond', \
                 version = version + 1, updated_at = now() \
             FROM UNNEST($1::uuid[], $2::integer[]) AS m(job, delivered_attempt) \
             WHERE id = ANY($1) AND id = m.job AND attempt = m.delivered_attempt AND status IN ('queued', 'scheduled') \
               AND run_at <= now() AND NOT cancel_requested \
             RETURNING {COLUMNS}, trace_context), \
         attempts AS ( \
             INSERT INTO job_attempts (job_id, attempt, worker) SELECT id, attempt, $3 FROM claimed) \
         SELECT * FROM claimed"
    ))
    .persistent(false)
    .bind(messages.iter().map(|m| m.0).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.1).collect::<Vec<_>>())
    .bind(worker)
    .bind(millis(lease))
    .fetch_all(pool)
    .await
}

/// Records progress (a change) and renews the lease; `false` when the
/// attempt is no longer the running one.
pub async fn record_progress(
    pool: &PgPool,
    id: Uuid,
    attempt: i32,
    progress: &Value,
    lease: std::time::Duration,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE jobs SET progress = $3, lease_expires_at = now() + $4 * interval '1 millisecond', \
             version = version + 1, updated_at = now() \
         WHERE id = $1 AND attempt = $2 AND status = 'running'",
    )
    .bind(id)
    .bind(attempt)
    .bind(progress)
    .bind(millis(lease))
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
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
    .bind(millis(lease))
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

/// Records how attempts ended, in one transaction; each only if it is still
/// the running attempt. Returns the jobs as they are now (those still ours).
pub async fn finish_many(pool: &PgPool, outcomes: &[(Uuid, i32, Finish)]) -> sqlx::Result<Vec<JobRow>> {
    let mut ids = Vec::with_capacity(outcomes.len());
    let mut attempts = Vec::with_capacity(outcomes.len());
    let mut statuses = Vec::with_capacity(outcomes.len());
    let mut results = Vec::with_capacity(outcomes.len());
    let mut retry_ats = Vec::with_capacity(outcomes.len());
    let mut codes = Vec::with_capacity(outcomes.len());
    let mut messages = Vec::with_capacity(outcomes.len());
    for (id, attempt, finish) in outcomes {
        let (status, result, retry_at, error) = match finish {
            Finish::Succeeded(result) => ("succeeded", Some(result.clone()), None, None),
            Finish::Cancelled => ("cancelled", None, None, Some(("cancelled", "cancelled while running"))),
            Finish::Failed {
                code,
                message,
                retry_at: Some(at),
            } => ("scheduled", None, Some(*at), Some((code.as_str(), message.as_str()))),
            Finish::Failed { code, message, .. } => ("failed", None, None, Some((code.as_str(), message.as_str()))),
        };
        ids.push(*id);
        attempts.push(*attempt);
        statuses.push(status);
        results.push(result);
        retry_ats.push(retry_at);
        codes.push(error.map(|e| e.0));
        messages.push(error.map(|e| e.1));
    }
    // One statement: the jobs change only if the attempt is still the running
    // one, and their attempts record the outcome. The jobs' events (an AFTER
    // trigger, run at the end of the statement) see the attempts' errors.
    let statement = format!(
        "WITH outcome AS ( \
             SELECT * FROM UNNEST($1::uuid[], $2::integer[], $3::text[], $4::jsonb[], $5::timestamptz[], \
                 $6::text[], $7::text[]) \
             AS f(job, finished_attempt, new_status, new_result, retry_at, code, message)), \
         finished AS ( \
             UPDATE jobs SET status = f.new_status, result = f.new_result, \
                 run_at = COALESCE(f.retry_at, run_at), dispatched = (f.retry_at IS NULL), \
                 finished_at = CASE WHEN f.retry_at IS NULL THEN now() END, \
                 lease_owner = NULL, lease_expires_at = NULL, version = version + 1, updated_at = now() \
             FROM outcome f \
             WHERE id = ANY($1) AND id = f.job AND attempt = f.finished_attempt AND status = 'running' \
             RETURNING {COLUMNS}), \
         attempts AS ( \
             UPDATE job_attempts a SET finished_at = now(), error_code = f.code, error_message = f.message \
             FROM outcome f, finished j \
             WHERE a.job_id = ANY($1) AND a.job_id = f.job AND a.attempt = f.finished_attempt AND j.id = f.job) \
         SELECT * FROM finished"
    );
    // Planned at each call, as a claim is (see `claim_many`).
    let query = sqlx::query_as::<_, JobRow>(&statement)
        .persistent(false)
        .bind(&ids)
        .bind(&attempts)
        .bind(&statuses)
        .bind(&results)
        .bind(&retry_ats)
        .bind(&codes)
        .bind(&messages);
    // A failed or cancelled parent cancels its children in the same transaction.
    let ends = outcomes
        .iter()
        .any(|(_, _, f)| matches!(f, Finish::Cancelled | Finish::Failed { retry_at: None, .. }));
    if !ends {
        return query.fetch_all(pool).await;
    }
    let mut tx = pool.begin().await?;
    let rows = query.fetch_all(&mut *tx).await?;
    for row in rows
        .iter()
        .filter(|r| matches!(r.status.as_str(), "cancelled" | "failed"))
    {
        cancel_children(&mut tx, row.id).await?;
    }
    tx.commit().await?;
    Ok(rows)
}

/// How many jobs are queued, scheduled and running, each counted through
/// the partial index that covers it (never a scan of the finished ones).
pub async fn backlog(pool: &PgPool) -> sqlx::Result<[(&'static str, i64); 3]> {
    let (queued, scheduled, running): (i64, i64, i64) = sqlx::query_as(
        "SELECT \
           (SELECT count(*) FROM jobs WHERE status = 'queued' AND dispatched) \
             + (SELECT count(*) FROM jobs WHERE NOT dispatched AND status IN ('queued', 'scheduled') AND status = 'queued'), \
           (SELECT count(*) FROM jobs WHERE NOT dispatched AND status IN ('queued', 'scheduled') AND status = 'scheduled'), \
           (SELECT count(*) FROM jobs WHERE status = 'running')",
    )
    .fetch_one(pool)
    .await?;
    Ok([("queued", queued), ("scheduled", scheduled), ("running", running)])
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
        // (A running job holds a lease: the condition lets the sweep use
        // the index of leased jobs.)
        "lease_owner = $1 AND lease_expires_at IS NOT NULL",
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
    // Attempts first, so the jobs' events carry this attempt's error.
    sqlx::query(
        "UPDATE job_attempts a SET finished_at = now(), error_code = $2, error_message = $3 \
         FROM jobs j WHERE j.id = ANY($1) AND a.job_id = ANY($1) AND a.job_id = j.id AND a.attempt = j.attempt \
           AND a.finished_at IS NULL",
    )
    .bind(&ids)
    .bind(code)
    .bind(message)
    .execute(&mut *tx)
    .await?;
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
    tx.commit().await?;
    Ok(rows)
}
