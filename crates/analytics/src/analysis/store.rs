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
    let report = encoded(pool, tenant, id).await?;
    Ok(report.and_then(|r| pb::Analysis::decode(r.as_slice()).ok()))
}

/// The stored report `id`, encoded.
async fn encoded(pool: &PgPool, tenant: &str, id: Uuid) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar("SELECT report FROM analyses WHERE tenant = $1 AND id = $2")
        .bind(tenant)
        .bind(id)
        .fetch_optional(pool)
        .await
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

impl Parts {
    /// The heading with what follows it counted, from the encoded parts
    /// (a finding's severity and a series' buckets are read without
    /// decoding them).
    pub fn counted(&self) -> Result<pb::AnalysisHeading, prost::DecodeError> {
        let mut heading = pb::AnalysisHeading {
            analysis: Some(self.heading.clone()),
            findings: self.findings.len() as u64,
            series: self.series.len() as u64,
            ..Default::default()
        };
        for finding in &self.findings {
            // `Finding.severity` is field 3; the last occurrence wins.
            let mut severity = 0;
            fields(finding.clone(), |tag, wire, value| {
                if tag == 3 && wire == WireType::Varint {
                    severity = decode_varint(value)?;
                }
                Ok(())
            })?;
            match pb::Severity::try_from(severity as i32).unwrap_or_default() {
                pb::Severity::Error => heading.errors += 1,
                pb::Severity::Warning => heading.warnings += 1,
                pb::Severity::Note => heading.notes += 1,
                pb::Severity::Unspecified => {}
            }
        }
        for series in &self.series {
            // `ChartSeries.series` (3) holds `Series.buckets` (2).
            fields(series.clone(), |tag, wire, value| {
                if tag == 3 && wire == WireType::LengthDelimited {
                    let len = usize::try_from(decode_varint(value)?).unwrap_or(usize::MAX);
                    // (A length past the end fails when the field is skipped.)
                    let inner = value.split_to(len.min(value.remaining()));
                    fields(inner, |tag, wire, _| {
                        heading.buckets += u64::from(tag == 2 && wire == WireType::LengthDelimited);
                        Ok(())
                    })?;
                }
                Ok(())
            })?;
        }
        Ok(heading)
    }
}

/// Calls `each(tag, wire type, rest)` for every field of an encoded
/// message, with `rest` at the field's value; whatever `each` leaves of the
/// value is skipped.
fn fields(
    mut message: Bytes,
    mut each: impl FnMut(u32, WireType, &mut Bytes) -> Result<(), prost::DecodeError>,
) -> Result<(), prost::DecodeError> {
    while message.has_remaining() {
        let (tag, wire) = decode_key(&mut message)?;
        let mut value = message.clone();
        each(tag, wire, &mut value)?;
        skip_field(wire, tag, &mut message, DecodeContext::default())?;
    }
    Ok(())
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
    let report = encoded(pool, tenant, id).await?;
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
    fn the_heading_counts_findings_per_severity_and_buckets() {
        let mut whole = report();
        whole.series[1]
            .series
            .as_mut()
            .unwrap()
            .buckets
            .push(pb::Bucket::default());
        whole.series.push(pb::ChartSeries::default());
        let heading = split(Bytes::from(whole.encode_to_vec())).unwrap().counted().unwrap();
        // Severities 0 (unspecified), 1 (note), 2 (warning).
        assert_eq!(
            (heading.findings, heading.errors, heading.warnings, heading.notes),
            (3, 0, 1, 1)
        );
        assert_eq!((heading.series, heading.buckets), (3, 3));
        assert!(heading.analysis.unwrap().findings.is_empty());
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
