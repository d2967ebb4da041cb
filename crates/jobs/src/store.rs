//! Every SQL statement of the jobs service. State changes are single guarded
//! statements (`UPDATE … WHERE status IN (…)`), so a race or a duplicate
//! request can never move a job backwards; each change bumps `version`.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder, Row};
use time::OffsetDateTime;
use uuid::Uuid;

/// A job as stored. Also read back from an event's `job` document (which
/// leaves out the tenant and payload), hence the serde attributes.
#[derive(Debug, Clone, FromRow, Deserialize)]
pub struct JobRow {
    pub id: Uuid,
    #[serde(default)]
    pub tenant: String,
    pub kind: String,
    pub status: String,
    #[serde(default)]
    pub payload: Value,
    pub priority: i16,
    pub attempt: i32,
    pub max_attempts: i32,
    pub timeout_ms: i64,
    pub idempotency_key: Option<String>,
    pub parent_id: Option<Uuid>,
    pub failure_policy: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub run_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
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
    /// The schedule as the request asked for it.
    pub requested: Requested,
}

/// How a request asked to schedule its job, as sent: a delay stays a delay,
/// so a retry of the same request (later, so resolving to a later time) is
/// still the same request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    Now,
    DelayMs(i64),
    /// Unix time in nanoseconds.
    At(i128),
}

impl NewJob {
    /// What makes two submits with one idempotency key the same request.
    fn fingerprint(&self) -> Vec<u8> {
        use sha2::Digest as _;
        // serde_json sorts object keys, so the payload's text is canonical.
        let canonical = format!(
            "{}\n{}\n{}\n{}\n{}\n{}\n{:?}\n{:?}",
            self.kind,
            self.payload,
            self.priority,
            self.max_attempts,
            self.timeout_ms,
            self.failure_policy,
            self.parent_id,
            self.requested,
        );
        sha2::Sha256::digest(canonical.as_bytes()).to_vec()
    }
}

/// An existing job that holds an idempotency key, with its request's fingerprint.
#[derive(FromRow)]
struct Keyed {
    #[sqlx(flatten)]
    row: JobRow,
    request_fingerprint: Option<Vec<u8>>,
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
    let mut outcomes = insert_many(pool, std::slice::from_ref(job), false).await?;
    Ok(outcomes.pop().expect("one outcome per job"))
}

/// Inserts jobs in one statement; one outcome per job, in order. A job whose
/// idempotency key is taken (before, or earlier in the same batch) is
/// `Existing` when it asks for the same thing, else `Conflict`.
///
/// `direct`: the caller hands the due (`queued`) ones to this replica's
/// dispatcher in memory ([`crate::dispatcher::Direct`]) once this returns, so
/// they are stored already marked dispatched, skipping the outbox (and the
/// row's rewrite by it). Scheduled jobs always go through the outbox.
pub async fn insert_many(pool: &PgPool, jobs: &[NewJob], direct: bool) -> sqlx::Result<Vec<Inserted>> {
    let now = OffsetDateTime::now_utc();
    let status = |job: &NewJob| if job.run_at > now { "scheduled" } else { "queued" };
    let fingerprints: Vec<Option<Vec<u8>>> = jobs
        .iter()
        .map(|j| j.idempotency_key.as_ref().map(|_| j.fingerprint()))
        .collect();
    let created: Vec<JobRow> = sqlx::query_as(&format!(
        "INSERT INTO jobs (id, tenant, kind, status, payload, priority, max_attempts, timeout_ms, \
             idempotency_key, run_at, failure_policy, parent_id, request_fingerprint, dispatched) \
         SELECT *, $14::boolean AND j.status = 'queued' \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::smallint[], \
             $7::integer[], $8::bigint[], $9::text[], $10::timestamptz[], $11::text[], $12::uuid[], $13::bytea[]) \
             AS j (id, tenant, kind, status, payload, priority, max_attempts, timeout_ms, idempotency_key, run_at, \
                   failure_policy, parent_id, request_fingerprint) \
         ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
         RETURNING {COLUMNS}"
    ))
    .bind(jobs.iter().map(|j| j.id).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.tenant.as_str()).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.kind.as_str()).collect::<Vec<_>>())
    .bind(jobs.iter().map(status).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.payload.clone()).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.priority).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.max_attempts).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.timeout_ms).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.idempotency_key.clone()).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.run_at).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.failure_policy).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.parent_id).collect::<Vec<_>>())
    .bind(&fingerprints)
    .bind(direct)
    .fetch_all(pool)
    .await?;
    let mut created: HashMap<Uuid, JobRow> = created.into_iter().map(|row| (row.id, row)).collect();

    // The rest lost their idempotency key to an existing job.
    let taken: Vec<&str> = jobs
        .iter()
        .filter(|j| !created.contains_key(&j.id))
        .filter_map(|j| j.idempotency_key.as_deref())
        .collect();
    let mut existing: HashMap<(String, String), Keyed> = HashMap::new();
    if !taken.is_empty() {
        let tenants: Vec<&str> = jobs.iter().map(|j| j.tenant.as_str()).collect();
        let rows: Vec<Keyed> = sqlx::query_as(&format!(
            "SELECT {COLUMNS}, request_fingerprint FROM jobs WHERE tenant = ANY($1) AND idempotency_key = ANY($2)"
        ))
        .bind(&tenants)
        .bind(&taken)
        .fetch_all(pool)
        .await?;
        for keyed in rows {
            if let Some(key) = keyed.row.idempotency_key.clone() {
                existing.insert((keyed.row.tenant.clone(), key), keyed);
            }
        }
    }
    Ok(jobs
        .iter()
        .zip(fingerprints)
        .map(|(job, fingerprint)| {
            if let Some(row) = created.remove(&job.id) {
                return Inserted::Created(row);
            }
            let key = (job.tenant.clone(), job.idempotency_key.clone().unwrap_or_default());
            match existing.get(&key) {
                Some(keyed) if keyed.request_fingerprint == fingerprint => Inserted::Existing(keyed.row.clone()),
                _ => Inserted::Conflict,
            }
        })
        .collect())
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
    .bind(lease_ms(after))
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

fn lease_ms(lease: std::time::Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)
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
pub async fn claim_many(
    pool: &PgPool,
    messages: &[(Uuid, i32)],
    worker: &str,
    lease: std::time::Duration,
) -> sqlx::Result<Vec<JobRow>> {
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
             RETURNING {COLUMNS}), \
         attempts AS ( \
             INSERT INTO job_attempts (job_id, attempt, worker) SELECT id, attempt, $3 FROM claimed) \
         SELECT * FROM claimed"
    ))
    .persistent(false)
    .bind(messages.iter().map(|m| m.0).collect::<Vec<_>>())
    .bind(messages.iter().map(|m| m.1).collect::<Vec<_>>())
    .bind(worker)
    .bind(lease_ms(lease))
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
    .bind(lease_ms(lease))
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

// ---------- events ----------

/// One recorded change of a job (see `0003_job_events.sql` and `0008_event_numbers_at_insert.sql`).
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
    pub job: Value,
    pub errors: Option<Value>,
}

const EVENT_COLUMNS: &str = "seq, tenant, job_id, version, type, occurred_at, retry_at, job, errors";

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

/// Deletes up to `limit` finished top-level jobs (a batch with its children,
/// once every child finished) that finished longer ago than their tenant's
/// retention (`overrides`, else `default`), oldest first, with their
/// attempts and events. Returns how many jobs went, children included.
pub async fn delete_finished(
    pool: &PgPool,
    default: std::time::Duration,
    overrides: &[(String, std::time::Duration)],
    limit: i64,
) -> sqlx::Result<u64> {
    let (tenants, keep): (Vec<String>, Vec<i64>) = overrides.iter().map(|(t, d)| (t.clone(), lease_ms(*d))).unzip();
    let count: i64 = sqlx::query_scalar(
        "WITH overrides AS (SELECT * FROM unnest($1::text[], $2::bigint[]) AS o (tenant, keep_ms)), \
         batch AS ( \
             SELECT j.id FROM jobs j LEFT JOIN overrides o ON o.tenant = j.tenant \
             WHERE j.status IN ('succeeded', 'failed', 'cancelled') AND j.parent_id IS NULL \
               AND j.finished_at < now() - COALESCE(o.keep_ms, $3) * interval '1 millisecond' \
               AND NOT EXISTS (SELECT 1 FROM jobs c WHERE c.parent_id = j.id \
                               AND c.status NOT IN ('succeeded', 'failed', 'cancelled')) \
             ORDER BY j.finished_at LIMIT $4 FOR UPDATE OF j SKIP LOCKED), \
         doomed AS (SELECT id FROM batch UNION ALL SELECT c.id FROM jobs c JOIN batch b ON c.parent_id = b.id), \
         events AS (DELETE FROM job_events e USING doomed d WHERE e.job_id = d.id RETURNING e.seq), \
         attempts AS (DELETE FROM job_attempts a USING doomed d WHERE a.job_id = d.id), \
         forget AS ( \
             UPDATE job_event_relay SET forgotten_through = GREATEST(forgotten_through, (SELECT max(seq) FROM events)) \
             WHERE id = 1 AND (SELECT max(seq) FROM events) IS NOT NULL), \
         gone AS (DELETE FROM jobs j USING doomed d WHERE j.id = d.id RETURNING j.id) \
         SELECT count(*) FROM gone",
    )
    .bind(tenants)
    .bind(keep)
    .bind(lease_ms(default))
    .bind(limit)
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// Deletes up to `limit` published events older than `older_than`, in
/// number order and stopping at the first younger one, so that every event
/// up to `pruned_through` is gone and every one after it is kept. Returns
/// how many went.
pub async fn prune_events(pool: &PgPool, older_than: std::time::Duration, limit: i64) -> sqlx::Result<u64> {
    // Usually the oldest kept event is young enough: one index probe says so.
    let oldest_is_old: Option<bool> = sqlx::query_scalar(
        "SELECT occurred_at < now() - $1 * interval '1 millisecond' FROM job_events \
         WHERE seq > (SELECT pruned_through FROM job_event_relay WHERE id = 1) \
           AND seq <= (SELECT published_through FROM job_event_relay WHERE id = 1) \
         ORDER BY seq LIMIT 1",
    )
    .bind(lease_ms(older_than))
    .fetch_optional(pool)
    .await?;
    if oldest_is_old != Some(true) {
        return Ok(0);
    }
    let count: i64 = sqlx::query_scalar(
        "WITH batch AS ( \
             SELECT seq, occurred_at FROM job_events \
             WHERE seq > (SELECT pruned_through FROM job_event_relay WHERE id = 1) \
               AND seq <= (SELECT published_through FROM job_event_relay WHERE id = 1) \
             ORDER BY seq LIMIT $2), \
         young AS (SELECT min(seq) AS seq FROM batch WHERE occurred_at >= now() - $1 * interval '1 millisecond'), \
         gone AS ( \
             DELETE FROM job_events e USING batch b, young \
             WHERE e.seq = b.seq AND (young.seq IS NULL OR b.seq < young.seq) \
             RETURNING e.seq), \
         bump AS ( \
             UPDATE job_event_relay SET pruned_through = GREATEST(pruned_through, (SELECT max(seq) FROM gone)) \
             WHERE id = 1 AND EXISTS (SELECT 1 FROM gone)) \
         SELECT count(*) FROM gone",
    )
    .bind(lease_ms(older_than))
    .bind(limit)
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(count).unwrap_or(0))
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
