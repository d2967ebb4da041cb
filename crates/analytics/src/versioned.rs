//! Optimistic concurrency for what clients change by the version they read
//! (alert rules, dashboards): a change is one guarded statement
//! (`… WHERE version = $expected`); when it matches nothing, the row is gone
//! or at another version, and the caller is told which.

use sextant_common::ErrorCode;
use sqlx::PgPool;
use tonic::Status;
use uuid::Uuid;

/// How a versioned change went.
pub enum Changed<T> {
    Done(T),
    NotFound,
    /// The row is at this version, not the one the change was made from.
    Stale(i64),
}

/// Why a guarded change of `table`'s row `id` matched nothing.
pub async fn unchanged<T>(pool: &PgPool, table: &'static str, tenant: &str, id: Uuid) -> sqlx::Result<Changed<T>> {
    let version: Option<i64> =
        sqlx::query_scalar(&format!("SELECT version FROM {table} WHERE tenant = $1 AND id = $2"))
            .bind(tenant)
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(version.map_or(Changed::NotFound, Changed::Stale))
}

/// The refusal of a change made from `expected` to `what`, now at `current`.
pub fn stale(what: &str, current: i64, expected: i64) -> Status {
    ErrorCode::Conflict.status(format!(
        "the {what} is at version {current}, not {expected}: read it again and reapply the change"
    ))
}
