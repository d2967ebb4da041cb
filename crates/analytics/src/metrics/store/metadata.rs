//! Metric metadata (type, help, unit) as Prometheus and OpenTelemetry
//! senders describe their metrics; the latest description wins.

use sqlx::PgPool;

use crate::model::Metadata;

pub async fn upsert(pool: &PgPool, tenant: &str, entries: &[Metadata]) -> Result<(), sqlx::Error> {
    // One row per metric per statement (ON CONFLICT may not touch a row twice).
    let mut latest: std::collections::BTreeMap<&str, &Metadata> = std::collections::BTreeMap::new();
    for m in entries {
        latest.insert(&m.metric, m);
    }
    let metrics: Vec<&str> = latest.keys().copied().collect();
    let kinds: Vec<&str> = latest.values().map(|m| m.kind.as_str()).collect();
    let helps: Vec<&str> = latest.values().map(|m| m.help.as_str()).collect();
    let units: Vec<&str> = latest.values().map(|m| m.unit.as_str()).collect();
    sqlx::query(
        "INSERT INTO metric_metadata (tenant, metric, type, help, unit)
         SELECT $1, m, t, h, u FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS x(m, t, h, u)
         ON CONFLICT (tenant, metric) DO UPDATE
         SET type = excluded.type, help = excluded.help, unit = excluded.unit, updated_at = now()
         WHERE (metric_metadata.type, metric_metadata.help, metric_metadata.unit)
               IS DISTINCT FROM (excluded.type, excluded.help, excluded.unit)",
    )
    .bind(tenant)
    .bind(&metrics)
    .bind(&kinds)
    .bind(&helps)
    .bind(&units)
    .execute(pool)
    .await?;
    Ok(())
}

/// The tenant's metadata, by metric name; `metric` narrows it to one.
pub async fn list(pool: &PgPool, tenant: &str, metric: Option<&str>, limit: i64) -> Result<Vec<Metadata>, sqlx::Error> {
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT metric, type, help, unit FROM metric_metadata
         WHERE tenant = $1 AND ($2::text IS NULL OR metric = $2)
         ORDER BY metric LIMIT $3",
    )
    .bind(tenant)
    .bind(metric)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(metric, kind, help, unit)| Metadata {
            metric,
            kind,
            help,
            unit,
        })
        .collect())
}
