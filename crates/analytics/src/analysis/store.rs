//! Analyses in PostgreSQL: written once, read whole or in parts, listed
//! newest first.

use bytes::{Buf, Bytes};
use prost::Message as _;
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
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

/// A stored report with its findings and series still encoded: the heading
/// decoded (every other field), then one slice of the stored bytes per
/// finding and per series, so that a reader decodes one at a time.
#[derive(Debug, Default)]
pub struct Parts {
    pub heading: pb::Analysis,
    pub findings: Vec<Bytes>,
    pub series: Vec<Bytes>,
}

/// `pb::Analysis`' field numbers of its findings and series.
const FINDINGS: u32 = 6;
const SERIES: u32 = 7;

/// Splits an encoded report into its [`Parts`] without decoding findings or
/// series (their slices share `report`'s buffer). Any other field, present
/// or added later, lands in the heading.
pub fn split(report: Bytes) -> Result<Parts, prost::DecodeError> {
    let mut parts = Parts::default();
    let mut heading = Vec::new();
    let mut rest = report.clone();
    while rest.has_remaining() {
        let start = report.len() - rest.remaining();
        let (tag, wire) = decode_key(&mut rest)?;
        if wire == WireType::LengthDelimited && (tag == FINDINGS || tag == SERIES) {
            let len = usize::try_from(decode_varint(&mut rest)?).unwrap_or(usize::MAX);
            if len > rest.remaining() {
                // Decoding the whole report would fail the same way.
                return pb::Analysis::decode(report).map(|_| parts);
            }
            let part = rest.split_to(len);
            if tag == FINDINGS {
                &mut parts.findings
            } else {
                &mut parts.series
            }
            .push(part);
        } else {
            skip_field(wire, tag, &mut rest, DecodeContext::default())?;
            heading.extend_from_slice(&report[start..report.len() - rest.remaining()]);
        }
    }
    parts.heading = pb::Analysis::decode(heading.as_slice())?;
    Ok(parts)
}

/// The report `id` in [`Parts`]; `None` when there is none (or it no longer
/// decodes, as [`get`] answers).
pub async fn parts(pool: &PgPool, tenant: &str, id: Uuid) -> Result<Option<Parts>, sqlx::Error> {
    let report: Option<Vec<u8>> = sqlx::query_scalar("SELECT report FROM analyses WHERE tenant = $1 AND id = $2")
        .bind(tenant)
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(report.and_then(|r| split(Bytes::from(r)).ok()))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> pb::Analysis {
        let ts = |seconds| Some(prost_types::Timestamp { seconds, nanos: 5 });
        pb::Analysis {
            id: "0193".into(),
            title: "weekly".into(),
            range: Some(sextant_proto::common::v1::TimeRange {
                start: ts(60),
                end: ts(120),
            }),
            created_at: ts(130),
            summaries: vec![pb::MetricSummary {
                metric: "cpu".into(),
                count: 2,
                ..Default::default()
            }],
            findings: (0..3)
                .map(|i| pb::Finding {
                    id: format!("f{i}"),
                    severity: i,
                    properties: [("k".to_owned(), i.to_string())].into(),
                    ..Default::default()
                })
                .collect(),
            series: (0..2)
                .map(|i| pb::ChartSeries {
                    metric: format!("m{i}"),
                    aggregation: 3,
                    series: Some(pb::Series {
                        group: String::new(),
                        buckets: vec![pb::Bucket {
                            start: ts(60),
                            values: vec![f64::from(i)],
                            count: 1,
                        }],
                    }),
                })
                .collect(),
            bucket: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
            metrics: vec!["cpu".into(), "mem".into()],
        }
    }

    #[test]
    fn the_parts_of_a_report_make_the_report_again() {
        let whole = report();
        let parts = split(Bytes::from(whole.encode_to_vec())).unwrap();
        assert!(parts.heading.findings.is_empty() && parts.heading.series.is_empty());
        let again = pb::Analysis {
            findings: parts
                .findings
                .iter()
                .map(|b| pb::Finding::decode(b.clone()).unwrap())
                .collect(),
            series: parts
                .series
                .iter()
                .map(|b| pb::ChartSeries::decode(b.clone()).unwrap())
                .collect(),
            ..parts.heading
        };
        assert_eq!(again, whole);
    }

    #[test]
    fn a_truncated_report_is_refused_whole() {
        let bytes = report().encode_to_vec();
        for cut in [1, bytes.len() / 2, bytes.len() - 1] {
            assert!(split(Bytes::copy_from_slice(&bytes[..cut])).is_err(), "cut at {cut}");
        }
        assert!(split(Bytes::new()).unwrap().heading == pb::Analysis::default());
    }
}
