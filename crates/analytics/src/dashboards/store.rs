//! Dashboards in PostgreSQL: each a checked spec, written and read whole,
//! listed oldest first (ids are UUIDv7).

use prost::Message as _;
use sextant_proto::analytics::v1 as pb;
use sqlx::{FromRow, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::versioned::{self, Changed};

#[derive(Debug, FromRow)]
pub struct Row {
    pub id: Uuid,
    pub spec: Vec<u8>,
    pub version: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl Row {
    pub fn spec(&self) -> pb::DashboardSpec {
        pb::DashboardSpec::decode(self.spec.as_slice()).unwrap_or_default()
    }
}

const COLUMNS: &str = "id, spec, version, created_at, updated_at";

/// Dashboards a tenant may hold.
pub const MAX_PER_TENANT: i64 = 1000;

/// `None` when the tenant already holds [`MAX_PER_TENANT`].
pub async fn create(pool: &PgPool, tenant: &str, spec: &pb::DashboardSpec) -> sqlx::Result<Option<Row>> {
    let mut tx = pool.begin().await?;
    // One creator at a time per tenant, so the count holds.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('dashboards:' || $1, 0))")
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
    let held: i64 = sqlx::query_scalar("SELECT count(*) FROM dashboards WHERE tenant = $1")
        .bind(tenant)
        .fetch_one(&mut *tx)
        .await?;
    if held >= MAX_PER_TENANT {
        return Ok(None);
    }
    let row = sqlx::query_as(&format!(
        "INSERT INTO dashboards (tenant, id, spec) VALUES ($1, $2, $3) RETURNING {COLUMNS}"
    ))
    .bind(tenant)
    .bind(Uuid::now_v7())
    .bind(spec.encode_to_vec())
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(row))
}

pub async fn get(pool: &PgPool, tenant: &str, id: Uuid) -> sqlx::Result<Option<Row>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM dashboards WHERE tenant = $1 AND id = $2"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(pool)
    .await
}

pub async fn list(pool: &PgPool, tenant: &str, after: Option<Uuid>, limit: i64) -> sqlx::Result<Vec<Row>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM dashboards WHERE tenant = $1 AND ($2::uuid IS NULL OR id > $2)
         ORDER BY id LIMIT $3"
    ))
    .bind(tenant)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Replaces the spec if the dashboard is still at `expected`.
pub async fn update(
    pool: &PgPool,
    tenant: &str,
    id: Uuid,
    spec: &pb::DashboardSpec,
    expected: i64,
) -> sqlx::Result<Changed<Row>> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "UPDATE dashboards SET spec = $4, version = version + 1, updated_at = now()
         WHERE tenant = $1 AND id = $2 AND version = $3 RETURNING {COLUMNS}"
    ))
    .bind(tenant)
    .bind(id)
    .bind(expected)
    .bind(spec.encode_to_vec())
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => Ok(Changed::Done(row)),
        None => versioned::unchanged(pool, "dashboards", tenant, id).await,
    }
}

/// Deletes the dashboard, if still at `expected` when one is given.
pub async fn delete(pool: &PgPool, tenant: &str, id: Uuid, expected: Option<i64>) -> sqlx::Result<Changed<()>> {
    let deleted =
        sqlx::query("DELETE FROM dashboards WHERE tenant = $1 AND id = $2 AND ($3::bigint IS NULL OR version = $3)")
            .bind(tenant)
            .bind(id)
            .bind(expected)
            .execute(pool)
            .await?;
    if deleted.rows_affected() == 1 {
        return Ok(Changed::Done(()));
    }
    versioned::unchanged(pool, "dashboards", tenant, id).await
}
