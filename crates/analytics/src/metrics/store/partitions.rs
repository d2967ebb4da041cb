//! Time partitions of `events`, `rollups_1m` and `metric_rollups_1m`: made
//! ahead of the present (and on demand for a late event), dropped once
//! wholly past retention.
//! The ones made are recorded in `partitions`, so gaps and expired ones are
//! found without parsing catalog bound expressions; a changed width only
//! affects partitions made after the change.

use std::time::Duration;

use sqlx::PgPool;

use crate::model::{Micros, SECOND, datetime, floor_to};

/// Serialises partition DDL across replicas.
const DDL_LOCK: i64 = 0x5e87_a117_0000_0001;

/// One partitioned table and its layout.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub parent: &'static str,
    /// Partition width.
    pub width: Micros,
    /// Data older than this (from now) may be dropped.
    pub retention: Micros,
}

/// The per-metric rollups: partitioned as the per-series ones.
pub fn metric_rollups(rollups: Layout) -> Layout {
    Layout {
        parent: "metric_rollups_1m",
        ..rollups
    }
}

pub fn micros(d: Duration) -> Micros {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// What one maintenance pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub created: Vec<String>,
    pub dropped: Vec<String>,
}

/// Makes sure partitions cover `[from, to)` (rounded out to the width).
pub async fn ensure(pool: &PgPool, layout: Layout, from: Micros, to: Micros) -> anyhow::Result<Vec<String>> {
    let from = floor_to(from, layout.width);
    let to = floor_to(to - 1, layout.width) + layout.width;
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL lock_timeout = '5s'").execute(&mut *tx).await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(DDL_LOCK)
        .execute(&mut *tx)
        .await?;
    let existing: Vec<(time::OffsetDateTime, time::OffsetDateTime)> = sqlx::query_as(
        "SELECT range_from, range_to FROM partitions
         WHERE parent = $1 AND range_to > $2 AND range_from < $3 ORDER BY range_from",
    )
    .bind(layout.parent)
    .bind(datetime(from))
    .bind(datetime(to))
    .fetch_all(&mut *tx)
    .await?;
    let covered: Vec<(Micros, Micros)> = existing
        .into_iter()
        .map(|(a, b)| (crate::model::micros_of(a), crate::model::micros_of(b)))
        .collect();
    let mut created = Vec::new();
    for (start, end) in gaps(from, to, layout.width, &covered) {
        let name = format!("{}_p{}", layout.parent, start.div_euclid(SECOND));
        // Identifiers and bounds come from our own constants and integers.
        let ddl = format!(
            "CREATE TABLE {name} PARTITION OF {parent} FOR VALUES FROM ('{from}') TO ('{to}')",
            parent = layout.parent,
            from = crate::model::rfc3339(start),
            to = crate::model::rfc3339(end),
        );
        sqlx::query(&ddl).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO partitions (parent, name, range_from, range_to) VALUES ($1, $2, $3, $4)")
            .bind(layout.parent)
            .bind(&name)
            .bind(datetime(start))
            .bind(datetime(end))
            .execute(&mut *tx)
            .await?;
        created.push(name);
    }
    tx.commit().await?;
    Ok(created)
}

/// The width-aligned pieces of `[from, to)` that no `covered` range overlaps.
fn gaps(from: Micros, to: Micros, width: Micros, covered: &[(Micros, Micros)]) -> Vec<(Micros, Micros)> {
    let mut out = Vec::new();
    let mut slot = from;
    while slot < to {
        let end = slot + width;
        // Clip the slot to what existing partitions leave free.
        let mut pieces = vec![(slot, end)];
        for &(a, b) in covered {
            pieces = pieces
                .into_iter()
                .flat_map(|(s, e)| {
                    if b <= s || a >= e {
                        vec![(s, e)]
                    } else {
                        [(s, a.max(s)), (b.min(e), e)]
                            .into_iter()
                            .filter(|(x, y)| x < y)
                            .collect()
                    }
                })
                .collect();
        }
        out.extend(pieces);
        slot = end;
    }
    out
}

/// Drops partitions that end at or before `now - retention`.
async fn drop_expired(pool: &PgPool, layout: Layout, now: Micros) -> anyhow::Result<Vec<String>> {
    let cutoff = now.saturating_sub(layout.retention);
    let expired: Vec<String> =
        sqlx::query_scalar("SELECT name FROM partitions WHERE parent = $1 AND range_to <= $2 ORDER BY range_from")
            .bind(layout.parent)
            .bind(datetime(cutoff))
            .fetch_all(pool)
            .await?;
    let mut dropped = Vec::new();
    for name in expired {
        let mut tx = pool.begin().await?;
        // Never stall ingest or queries behind a long lock wait: try again next pass.
        sqlx::query("SET LOCAL lock_timeout = '2s'").execute(&mut *tx).await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(DDL_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("DROP TABLE IF EXISTS {name}"))
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM partitions WHERE name = $1")
            .bind(&name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        dropped.push(name);
    }
    Ok(dropped)
}

/// One pass: partitions `ahead` widths into the future exist, expired ones are gone.
pub async fn maintain(pool: &PgPool, layouts: &[Layout], ahead: u32, now: Micros) -> anyhow::Result<Report> {
    let mut report = Report::default();
    for layout in layouts {
        let from = floor_to(now, layout.width);
        let to = from + layout.width * (i64::from(ahead) + 1);
        report.created.extend(ensure(pool, *layout, from, to).await?);
        report.dropped.extend(drop_expired(pool, *layout, now).await?);
        if layout.parent == "events" {
            // Staleness markers live as long as the raw events they end.
            sqlx::query("DELETE FROM stale_markers WHERE ts < $1")
                .bind(datetime(now.saturating_sub(layout.retention)))
                .execute(pool)
                .await?;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_fill_around_existing_partitions() {
        assert_eq!(gaps(0, 30, 10, &[]), vec![(0, 10), (10, 20), (20, 30)]);
        assert_eq!(gaps(0, 30, 10, &[(0, 10), (20, 30)]), vec![(10, 20)]);
        // A partition of an older, different width leaves the rest of the slot.
        assert_eq!(gaps(0, 20, 10, &[(0, 15)]), vec![(15, 20)]);
        assert_eq!(gaps(0, 10, 10, &[(2, 4)]), vec![(0, 2), (4, 10)]);
    }
}
