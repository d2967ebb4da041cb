//! JSON: the analysis in a documented, versioned shape
//! (`docs/exports/analysis-v1.schema.json`): `{"format": "sextant.analysis",
//! "version": 1, "analysis": {…}}`. Strings are written as JSON strings
//! (escaped by `serde_json`), numbers as numbers, a number that does not
//! exist as null.

use serde_json::{Value, json};
use sextant_proto::analytics::v1 as pb;

use serde::Serialize;

use super::{Lazy, Parts, Source, aggregation, severity, time};

fn number(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

fn summary(s: &pb::MetricSummary) -> Value {
    json!({
        "metric": s.metric, "count": s.count, "sum": number(s.sum), "avg": number(s.avg),
        "min": number(s.min), "max": number(s.max), "p50": number(s.p50), "p90": number(s.p90),
        "p95": number(s.p95), "p99": number(s.p99),
    })
}

fn finding(f: &pb::Finding) -> Value {
    let properties: std::collections::BTreeMap<&String, &String> = f.properties.iter().collect();
    json!({
        "id": f.id, "kind": f.kind, "severity": severity(f.severity), "metric": f.metric,
        "message": f.message, "at": time(&f.at), "value": number(f.value), "properties": properties,
    })
}

fn series(c: &pb::ChartSeries) -> Value {
    let buckets: Vec<Value> = c
        .series
        .as_ref()
        .map(|s| s.buckets.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|b| {
            json!({
                "start": time(&b.start), "count": b.count,
                "value": number(b.values.first().copied().unwrap_or(f64::NAN)),
            })
        })
        .collect();
    json!({ "metric": c.metric, "aggregation": aggregation(c.aggregation), "buckets": buckets })
}

/// The document. Fields are in the order of a `serde_json` object's keys
/// (sorted), so the file is the one a tree of the whole analysis makes;
/// findings and series are serialised as they are read.
#[derive(Serialize)]
struct Document<'a> {
    analysis: Body<'a>,
    format: &'static str,
    version: u32,
}

#[derive(Serialize)]
struct Body<'a> {
    bucket_seconds: i64,
    created_at: String,
    end: String,
    findings: Lazy<Parts<'a, Value>>,
    id: &'a str,
    metrics: &'a [String],
    series: Lazy<Parts<'a, Value>>,
    start: String,
    summaries: Vec<Value>,
    title: &'a str,
}

/// Writes the analysis as the document, pretty-printed, to `out`.
pub fn write(a: &dyn Source, out: impl std::io::Write) -> serde_json::Result<()> {
    let h = a.heading();
    let range = h.range.unwrap_or_default();
    let document = Document {
        analysis: Body {
            bucket_seconds: h.bucket.map_or(0, |b| b.seconds),
            created_at: time(&h.created_at),
            end: time(&range.end),
            findings: Lazy::new(Box::new(a.findings().map(|f| f.map(|f| finding(&f))))),
            id: &h.id,
            metrics: &h.metrics,
            series: Lazy::new(Box::new(a.series().map(|c| c.map(|c| series(&c))))),
            start: time(&range.start),
            summaries: h.summaries.iter().map(summary).collect(),
            title: &h.title,
        },
        format: "sextant.analysis",
        version: 1,
    };
    serde_json::to_writer_pretty(out, &document)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_export_matches_its_documented_schema() {
        let schema: Value =
            serde_json::from_str(include_str!("../../../../docs/exports/analysis-v1.schema.json")).unwrap();
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
            .expect("the schema compiles");
        let ts = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
        let analysis = pb::Analysis {
            id: "0193".into(),
            title: "</script><script>alert(1)</script>".into(),
            range: Some(sextant_proto::common::v1::TimeRange {
                start: ts(1_795_000_000),
                end: ts(1_795_003_600),
            }),
            created_at: ts(1_795_003_700),
            summaries: vec![pb::MetricSummary {
                metric: "cpu".into(),
                count: 0,
                min: f64::NAN,
                ..Default::default()
            }],
            findings: vec![pb::Finding {
                id: "anomaly:cpu:1".into(),
                kind: "anomaly".into(),
                severity: pb::Severity::Warning as i32,
                metric: "cpu".into(),
                message: "=HYPERLINK(\"x\")".into(),
                at: ts(1_795_000_060),
                value: 3.5,
                properties: [("k".to_owned(), "v".to_owned())].into(),
            }],
            series: vec![pb::ChartSeries {
                metric: "cpu".into(),
                aggregation: pb::Aggregation::P95 as i32,
                series: Some(pb::Series {
                    group: String::new(),
                    buckets: vec![pb::Bucket {
                        start: ts(1_795_000_060),
                        values: vec![1.25],
                        count: 4,
                    }],
                }),
            }],
            bucket: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
            metrics: vec!["cpu".into()],
        };
        let mut written = Vec::new();
        write(&crate::render::Whole::from(analysis), &mut written).unwrap();
        let out: Value = serde_json::from_slice(&written).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&out)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{errors:#?}");
        assert_eq!(out["analysis"]["summaries"][0]["min"], Value::Null);
        assert_eq!(out["analysis"]["title"], "</script><script>alert(1)</script>");
        let mut broken = out.clone();
        broken["version"] = json!(2);
        assert!(!validator.is_valid(&broken));
    }
}
