//! What clients submit and read: inserting jobs (idempotently), getting,
//! listing, cancelling, retrying, and the per-tenant statistics.

use std::collections::HashMap;

use serde_json::Value;
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{AttemptRow, CANCEL_SET, CANCELLABLE, COLUMNS, JobRow};

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
    /// The submitter's `traceparent`, continued by the attempts.
    pub trace_context: Option<String>,
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
             idempotency_key, run_at, failure_policy, parent_id, request_fingerprint, trace_context, dispatched) \
         SELECT *, $14::boolean AND j.status = 'queued' \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::smallint[], \
             $7::integer[], $8::bigint[], $9::text[], $10::timestamptz[], $11::text[], $12::uuid[], $13::bytea[], \
             $15::text[]) \
             AS j (id, tenant, kind, status, payload, priority, max_attempts, timeout_ms, idempotency_key, run_at, \
                   failure_policy, parent_id, request_fingerprint, trace_context) \
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
    .bind(jobs.iter().map(|j| j.trace_context.clone()).collect::<Vec<_>>())
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
