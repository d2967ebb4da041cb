//! A batch's children: counting, cancelling and listing them.

use sqlx::PgPool;
use uuid::Uuid;

use super::{CANCEL_SET, CANCELLABLE, COLUMNS, JobRow};

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
