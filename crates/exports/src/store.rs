//! Export records in PostgreSQL.

use sqlx::{PgExecutor, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Record {
    pub id: Uuid,
    pub analysis_id: String,
    pub formats: sqlx::types::Json<Vec<String>>,
    pub batch: bool,
    pub status: String,
    pub content_type: String,
    pub filename: String,
    pub object_key: String,
    pub size_bytes: Option<i64>,
    pub sha256: Option<String>,
    pub error: Option<String>,
    pub fingerprint: String,
    pub created_at: OffsetDateTime,
    pub ready_at: Option<OffsetDateTime>,
    pub job_id: Option<Uuid>,
}

const COLUMNS: &str = "id, analysis_id, formats, batch, status, content_type, filename, object_key, size_bytes, \
                       sha256, error, fingerprint, created_at, ready_at, job_id";

pub struct New<'a> {
    pub id: Uuid,
    pub user: &'a str,
    /// `rendering` (at once) or `pending` (as a job).
    pub status: &'a str,
    pub analysis_id: &'a str,
    pub formats: Vec<String>,
    pub batch: bool,
    pub content_type: &'a str,
    pub filename: &'a str,
    pub object_key: &'a str,
    pub key: Option<&'a str>,
    pub fingerprint: &'a str,
}

/// The record an idempotency key names.
pub async fn by_key(db: impl PgExecutor<'_>, tenant: &str, key: &str) -> Result<Option<Record>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM exports WHERE tenant = $1 AND idempotency_key = $2"
    ))
    .bind(tenant)
    .bind(key)
    .fetch_optional(db)
    .await
}

/// Inserts a record; `None` when its idempotency key was taken meanwhile.
pub async fn insert(db: impl PgExecutor<'_>, tenant: &str, new: &New<'_>) -> Result<Option<Record>, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO exports (tenant, id, analysis_id, formats, batch, status, content_type, filename, object_key,
                              idempotency_key, fingerprint, user_id)
         VALUES ($1, $2, $3, $4, $5, $11, $6, $7, $8, $9, $10, $12)
         ON CONFLICT (tenant, idempotency_key) DO NOTHING
         RETURNING {COLUMNS}"
    ))
    .bind(tenant)
    .bind(new.id)
    .bind(new.analysis_id)
    .bind(sqlx::types::Json(&new.formats))
    .bind(new.batch)
    .bind(new.content_type)
    .bind(new.filename)
    .bind(new.object_key)
    .bind(new.key)
    .bind(new.fingerprint)
    .bind(new.status)
    .bind(new.user)
    .fetch_optional(db)
    .await
}

/// Names the job that renders the export.
pub async fn set_job(pool: &PgPool, tenant: &str, id: Uuid, job: Uuid) -> Result<(), sqlx::Error> {
    let updated = sqlx::query("UPDATE exports SET job_id = $3 WHERE tenant = $1 AND id = $2")
        .bind(tenant)
        .bind(id)
        .bind(job)
        .execute(pool)
        .await?;
    if updated.rows_affected() == 0 {
        return Err(sqlx::Error::RowNotFound);
    }
    Ok(())
}

/// Exports waiting for a job that was never submitted (the service stopped
/// between the record's commit and the submission), made before `before`,
/// oldest first: (tenant, user, id).
pub async fn unqueued(
    pool: &PgPool,
    before: time::OffsetDateTime,
    limit: i64,
) -> Result<Vec<(String, String, Uuid)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT tenant, user_id, id FROM exports
         WHERE status = 'pending' AND job_id IS NULL AND created_at < $1 ORDER BY created_at LIMIT $2",
    )
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A (re)started render: `rendering`, no error. `None` when the record is
/// gone (expired) or already ready.
pub async fn rendering(pool: &PgPool, tenant: &str, id: Uuid) -> Result<Option<Record>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE exports SET status = 'rendering', error = NULL
         WHERE tenant = $1 AND id = $2 AND status <> 'ready' RETURNING {COLUMNS}"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Exports created before `before`, oldest first: (tenant, id, object key).
pub async fn expired(
    pool: &PgPool,
    before: OffsetDateTime,
    limit: i64,
) -> Result<Vec<(String, Uuid, String)>, sqlx::Error> {
    sqlx::query_as("SELECT tenant, id, object_key FROM exports WHERE created_at < $1 ORDER BY created_at LIMIT $2")
        .bind(before)
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// Deletes records by (tenant, id).
pub async fn delete(pool: &PgPool, records: &[(String, Uuid)]) -> Result<u64, sqlx::Error> {
    let (tenants, ids): (Vec<String>, Vec<Uuid>) = records.iter().cloned().unzip();
    Ok(
        sqlx::query("DELETE FROM exports WHERE (tenant, id) IN (SELECT * FROM unnest($1::text[], $2::uuid[]))")
            .bind(tenants)
            .bind(ids)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}

pub async fn ready(pool: &PgPool, tenant: &str, id: Uuid, size: i64, sha256: &str) -> Result<Record, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE exports SET status = 'ready', size_bytes = $3, sha256 = $4, ready_at = now()
         WHERE tenant = $1 AND id = $2 RETURNING {COLUMNS}"
    ))
    .bind(tenant)
    .bind(id)
    .bind(size)
    .bind(sha256)
    .fetch_one(pool)
    .await
}

pub async fn failed(pool: &PgPool, tenant: &str, id: Uuid, error: &str) -> Result<Record, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE exports SET status = 'failed', error = $3 WHERE tenant = $1 AND id = $2 RETURNING {COLUMNS}"
    ))
    .bind(tenant)
    .bind(id)
    .bind(error)
    .fetch_one(pool)
    .await
}

pub async fn get(pool: &PgPool, tenant: &str, id: Uuid) -> Result<Option<Record>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM exports WHERE tenant = $1 AND id = $2"))
        .bind(tenant)
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Newest first, before the cursor, optionally of one analysis.
pub async fn list(
    pool: &PgPool,
    tenant: &str,
    analysis: Option<&str>,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Record>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM exports WHERE tenant = $1 AND ($2::text IS NULL OR analysis_id = $2)
           AND ($3::uuid IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
    ))
    .bind(tenant)
    .bind(analysis)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Exports still `pending` or `rendering` through a job, made before
/// `before`: (tenant, id, job id).
pub async fn unfinished(
    pool: &PgPool,
    before: OffsetDateTime,
    limit: i64,
) -> Result<Vec<(String, Uuid, Uuid)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT tenant, id, job_id FROM exports
         WHERE status IN ('pending', 'rendering') AND job_id IS NOT NULL AND created_at < $1
         ORDER BY created_at LIMIT $2",
    )
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Marks an export `failed` unless it got further meanwhile.
pub async fn abandoned(pool: &PgPool, tenant: &str, id: Uuid, error: &str) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE exports SET status = 'failed', error = $3
         WHERE tenant = $1 AND id = $2 AND status IN ('pending', 'rendering')",
    )
    .bind(tenant)
    .bind(id)
    .bind(error)
    .execute(pool)
    .await?
    .rows_affected()
        == 1)
}
