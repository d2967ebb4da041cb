//! What ages out: finished jobs past their tenant's retention, and
//! published events past theirs.

use sqlx::PgPool;

use super::millis;

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
    let (tenants, keep): (Vec<String>, Vec<i64>) = overrides.iter().map(|(t, d)| (t.clone(), millis(*d))).unzip();
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
    .bind(millis(default))
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
    .bind(millis(older_than))
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
    .bind(millis(older_than))
    .bind(limit)
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(count).unwrap_or(0))
}
