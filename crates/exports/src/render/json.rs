//! JSON: the analysis in a documented, versioned shape
//! (`docs/exports/analysis-v1.schema.json`): `{"format": "sextant.analysis",
//! "version": 1, "analysis": {…}}`. Strings are written as JSON strings
//! (escaped by `serde_json`), numbers as numbers, a number that does not
//! exist as null.

use serde_json::{Value, json};
use sextant_proto::analytics::v1 as pb;

use super::{aggregation, severity, time};

fn number(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

pub fn render(a: &pb::Analysis) -> Value {
    let range = a.range.unwrap_or_default();
    let summaries: Vec<Value> = a
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
    let findings: Vec<Value> = a
        .findings
        .iter()
        .map(|f| {
            let properties: std::collections::BTreeMap<&String, &String> = f.properties.iter().collect();
            json!({
                "id": f.id, "kind": f.kind, "severity": severity(f.severity), "metric": f.metric,
                "message": f.message, "at": time(&f.at), "value": number(f.value), "properties": properties,
            })
        })
        .collect();
    let series: Vec<Value> = a
        .series
        .iter()
        .map(|c| {
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
        })
        .collect();
    json!({
        "format": "sextant.analysis",
        "version": 1,
        "analysis": {
            "id": a.id,
            "title": a.title,
            "start": time(&range.start),
            "end": time(&range.end),
            "bucket_seconds": a.bucket.map_or(0, |b| b.seconds),
            "metrics": a.metrics,
            "created_at": time(&a.created_at),
            "summaries": summaries,
            "findings": findings,
            "series": series,
        },
    })
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
        let out = render(&analysis);
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
