//! Analyses in PostgreSQL: written once, read whole, listed newest first.

use prost::Message as _;
use sextant_proto::analytics::v1 as pb;
use sqlx::PgPool;
use uuid::Uuid;

/// Stores a finished report; a report for a `run_id` already stored is not
/// stored again: the first one is returned.
pub async fn insert(
    pool: &PgPool,
    tenant: &str,
    run_id: Option<&str>,
    report: &pb::Analysis,
) -> Result<pb::Analysis, sqlx::Error> {
    let id = Uuid::parse_str(&report.id).unwrap_or_else(|_| Uuid::now_v7());
    let range = report.range.unwrap_or_default();
    let time = |t: Option<prost_types::Timestamp>| {
        let t = t.unwrap_or_default();
        time::OffsetDateTime::from_unix_timestamp(t.seconds).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
            + time::Duration::nanoseconds(i64::from(t.nanos))
    };
    let stored: Option<Vec<u8>> = sqlx::query_scalar(
        "INSERT INTO analyses (tenant, id, run_id, title, range_start, range_end, report)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (tenant, run_id) DO NOTHING
         RETURNING report",
    )
    .bind(tenant)
    .bind(id)
    .bind(run_id)
    .bind(&report.title)
    .bind(time(range.start))
    .bind(time(range.end))
    .bind(report.encode_to_vec())
    .fetch_optional(pool)
    .await?;
    match stored {
        Some(_) => Ok(report.clone()),
        None => {
            let first: Vec<u8> = sqlx::query_scalar("SELECT report FROM analyses WHERE tenant = $1 AND run_id = $2")
                .bind(tenant)
                .bind(run_id)
                .fetch_one(pool)
                .await?;
            Ok(pb::Analysis::decode(first.as_slice()).unwrap_or_default())
        }
    }
}

/// The report a run already made, if any.
pub async fn by_run(pool: &PgPool, tenant: &str, run_id: &str) -> Result<Option<pb::Analysis>, sqlx::Error> {
    let report: Option<Vec<u8>> = sqlx::query_scalar("SELECT report FROM analyses WHERE tenant = $1 AND run_id = $2")
        .bind(tenant)
        .bind(run_id)
        .fetch_optional(pool)
        .await?;
    Ok(report.and_then(|r| pb::Analysis::decode(r.as_slice()).ok()))
}

pub async fn get(pool: &PgPool, tenant: &str, id: Uuid) -> Result<Option<pb::Analysis>, sqlx::Error> {
    let report: Option<Vec<u8>> = sqlx::query_scalar("SELECT report FROM analyses WHERE tenant = $1 AND id = $2")
        .bind(tenant)
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(report.and_then(|r| pb::Analysis::decode(r.as_slice()).ok()))
}

/// Reports newest first (ids are time-ordered), after the cursor `before`;
/// without their summaries, findings and series.
pub async fn list(
    pool: &PgPool,
    tenant: &str,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<pb::Analysis>, sqlx::Error> {
    let rows: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT report FROM analyses WHERE tenant = $1 AND ($2::uuid IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3",
    )
    .bind(tenant)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| pb::Analysis::decode(r.as_slice()).ok())
        .map(super::heading)
        .collect())
}
