//! Series whose data has expired. A series row outlives its events (dropped
//! with their partitions past `analytics.retention.raw`) and its one-minute
//! rollups (past `analytics.retention.rollup`); once it has no rollup left it
//! holds nothing a query could show, and it would count against the metric's
//! cardinality limit forever. The upkeep deletes such series, a bounded
//! number a pass, each metric's under the lock every ingest of that metric
//! takes before it commits, so an ingest that adds data to a series either
//! commits first (and the series stays) or finds it gone and makes it anew.

use sqlx::PgPool;

use super::ingest::lock_metrics;

/// Deletes up to `limit` series without rollups that are older than a
/// minute; returns how many went.
pub async fn reap(pool: &PgPool, limit: i64) -> Result<u64, sqlx::Error> {
    let candidates: Vec<(String, String, Vec<i64>)> = sqlx::query_as(
        "SELECT tenant, metric, array_agg(id) FROM (
           SELECT s.tenant, s.metric, s.id FROM series s
           WHERE s.created_at < now() - interval '1 minute'
             AND NOT EXISTS (SELECT 1 FROM rollups_1m r WHERE r.series_id = s.id AND r.tenant = s.tenant)
           LIMIT $1) dead
         GROUP BY tenant, metric",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut reaped = 0;
    for (tenant, metric, ids) in candidates {
        let mut tx = pool.begin().await?;
        lock_metrics(&mut tx, &tenant, &[metric.as_str()]).await?;
        // Checked again under the lock: data may have come since.
        reaped += sqlx::query(
            "DELETE FROM series s WHERE s.tenant = $1 AND s.id = ANY($2)
               AND NOT EXISTS (SELECT 1 FROM rollups_1m r WHERE r.series_id = s.id AND r.tenant = s.tenant)",
        )
        .bind(&tenant)
        .bind(&ids)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
    }
    Ok(reaped)
}
