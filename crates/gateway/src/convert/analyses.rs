//! Analyses: JSON ⇄ protobuf for `/api/v1/analyses…`.

use serde::Deserialize;
use serde_json::{Value, json};
use sextant_proto::analytics::v1 as pb;
use time::OffsetDateTime;

use super::metrics::{aggregation_name, number};
use super::rfc3339;

/// The body of `POST /api/v1/analyses`: it becomes an `analyze` job's payload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisBody {
    #[serde(default)]
    pub title: String,
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
    #[serde(default)]
    pub metrics: Vec<String>,
    pub bucket_seconds: u64,
}

impl AnalysisBody {
    pub fn payload(&self) -> Value {
        let time = |t: OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        };
        json!({
            "title": self.title, "start": time(self.start), "end": time(self.end),
            "metrics": self.metrics, "bucket_seconds": self.bucket_seconds,
        })
    }
}

fn severity(s: i32) -> &'static str {
    match pb::Severity::try_from(s).unwrap_or_default() {
        pb::Severity::Note => "note",
        pb::Severity::Warning => "warning",
        pb::Severity::Error => "error",
        pb::Severity::Unspecified => "unknown",
    }
}

/// An analysis's heading: what lists show.
pub fn heading_json(a: &pb::Analysis) -> Value {
    let range = a.range.unwrap_or_default();
    json!({
        "id": a.id,
        "title": a.title,
        "start": rfc3339(&range.start),
        "end": rfc3339(&range.end),
        "bucket_seconds": a.bucket.as_ref().map_or(0, |b| b.seconds),
        "metrics": a.metrics,
        "created_at": rfc3339(&a.created_at),
    })
}

/// A whole analysis.
pub fn analysis_json(a: &pb::Analysis) -> Value {
    let mut body = heading_json(a);
    body["summaries"] = a
        .summaries
        .iter()
        .map(|s| {
            json!({
                "metric": s.metric, "count": s.count, "sum": number(s.sum), "avg": number(s.avg),
                "min": number(s.min), "max": number(s.max), "p50": number(s.p50), "p90": number(s.p90),
                "p95": number(s.p95), "p99": number(s.p99),
            })
        })
        .collect();
    body["findings"] = a
        .findings
        .iter()
        .map(|f| {
            let properties: std::collections::BTreeMap<&String, &String> = f.properties.iter().collect();
            json!({
                "id": f.id, "kind": f.kind, "severity": severity(f.severity), "metric": f.metric,
                "message": f.message, "at": rfc3339(&f.at), "value": number(f.value), "properties": properties,
            })
        })
        .collect();
    body["series"] = a
        .series
        .iter()
        .map(|c| {
            let series = c.series.clone().unwrap_or_default();
            json!({
                "metric": c.metric,
                "aggregation": aggregation_name(pb::Aggregation::try_from(c.aggregation).unwrap_or_default()),
                "buckets": series.buckets.iter().map(|b| json!({
                    "start": rfc3339(&b.start), "count": b.count,
                    "value": number(b.values.first().copied().unwrap_or(f64::NAN)),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    body
}
