//! SARIF 2.1.0, shaped for GitHub code scanning's upload requirements: one
//! run whose `tool.driver` names Sextant, its version and one rule per
//! finding kind (stable `id`, `shortDescription`, `fullDescription`, `help`,
//! default level); one result per finding with `ruleId`, `level` from the
//! finding's severity, `message.text`, a location, and `partialFingerprints`
//! so that uploading the same findings again does not duplicate alerts.
//!
//! A finding concerns a metric, not a file: its location is the artifact
//! `sextant/metrics/<metric>` (line 1), plus a logical location naming the
//! metric. The fingerprint is the SHA-256 of the finding's kind, metric and
//! stable id (e.g. the anomaly's bucket), not of its message.
//!
//! GitHub refuses a run of more than [`MAX_RESULTS`] results (and shows the
//! first 5,000): an analysis with more findings keeps the most severe
//! (errors, then warnings, then notes; the analysis' order among equals),
//! and the run says so in a tool notification and in its properties.

use serde::Serialize;
use serde_json::{Value, json};
use sextant_proto::analytics::v1 as pb;
use sha2::{Digest, Sha256};

use super::{Lazy, Parts, Source};

pub const SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

/// The most results GitHub code scanning accepts in one run.
pub const MAX_RESULTS: usize = 25_000;

/// A finding kind's rule: id, name (readable, and not the id: SARIF
/// viewers show it, and the SARIF multitool flags a name equal to the id),
/// short description, full description, help.
const RULES: &[(&str, &str, &str, &str, &str)] = &[
    (
        "alert_fired",
        "AlertRuleFired",
        "An alert rule fired",
        "An alert rule's condition held over its window (for its `for` duration) in the analysed range, so the rule's instance entered the firing state.",
        "Open the alert rule in Sextant, check the metric around the time of the finding, and follow the rule's runbook annotation if it has one.",
    ),
    (
        "anomaly",
        "MetricBucketAnomaly",
        "A metric bucket left its robust baseline",
        "The bucket's average lies more than k robust standard deviations (1.4826 × MAD) from the median of the metric's buckets over the analysed range.",
        "Compare the bucket with its neighbours in the analysis's chart; the finding's properties give the expected value, the bounds and the score.",
    ),
];

fn level(severity: i32) -> &'static str {
    match pb::Severity::try_from(severity).unwrap_or_default() {
        pb::Severity::Error => "error",
        pb::Severity::Warning => "warning",
        pb::Severity::Note | pb::Severity::Unspecified => "note",
    }
}

/// Errors first, then warnings, then notes.
fn rank(severity: i32) -> u8 {
    match pb::Severity::try_from(severity).unwrap_or_default() {
        pb::Severity::Error => 0,
        pb::Severity::Warning => 1,
        pb::Severity::Note | pb::Severity::Unspecified => 2,
    }
}

/// The findings that become results: all of them, or the [`MAX_RESULTS`]
/// most severe in the analysis' order (a pass over the findings per rank,
/// as far as the cap).
fn kept(a: &dyn Source) -> Parts<'_, pb::Finding> {
    if a.counts().findings <= MAX_RESULTS as u64 {
        return a.findings();
    }
    let of_rank = move |r| {
        a.findings()
            .filter(move |f| f.as_ref().map_or(true, |f| rank(f.severity) == r))
    };
    Box::new((0..=2).flat_map(of_rank).take(MAX_RESULTS))
}

fn default_level(rule: &str) -> &'static str {
    if rule == "alert_fired" { "error" } else { "warning" }
}

/// `metric` as a URI path segment: unreserved characters kept, the rest
/// percent-encoded (metric names are `[a-zA-Z0-9_.:]`, so in practice only
/// `:`).
fn segment(metric: &str) -> String {
    metric
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn fingerprint(f: &pb::Finding) -> String {
    let mut hash = Sha256::new();
    for part in [f.kind.as_str(), f.metric.as_str(), f.id.as_str()] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hex(&hash.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One finding as a SARIF result.
fn result(f: &pb::Finding) -> Value {
    let rule = RULES.iter().position(|(id, ..)| *id == f.kind);
    let mut properties: serde_json::Map<String, Value> =
        f.properties.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    properties.insert("findingId".into(), json!(f.id));
    if f.value.is_finite() {
        properties.insert("value".into(), json!(f.value));
    }
    let mut result = json!({
        "ruleId": f.kind,
        "level": level(f.severity),
        "message": { "text": f.message },
        "locations": [{
            "physicalLocation": {
                "artifactLocation": { "uri": format!("sextant/metrics/{}", segment(&f.metric)) },
                "region": { "startLine": 1 },
            },
            "logicalLocations": [{ "name": f.metric, "kind": "metric" }],
        }],
        "partialFingerprints": { "sextantFinding/v1": fingerprint(f) },
        "properties": properties,
    });
    if let Some(index) = rule {
        result["ruleIndex"] = json!(index);
    }
    result
}

#[derive(Serialize)]
struct Log<'a> {
    #[serde(rename = "$schema")]
    schema: &'static str,
    version: &'static str,
    runs: [Run<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Run<'a> {
    tool: Value,
    automation_details: Value,
    /// Only when results were left out: the notification saying so.
    #[serde(skip_serializing_if = "Option::is_none")]
    invocations: Option<Value>,
    properties: Value,
    /// Serialised one at a time: a log of 25,000 results is never a tree
    /// in memory.
    results: Lazy<Parts<'a, Value>>,
}

fn log<'a>(a: &'a dyn Source, version: &str) -> Log<'a> {
    let analysis = a.heading();
    let findings = a.counts().findings;
    let rules: Vec<Value> = RULES
        .iter()
        .map(|(id, name, short, full, help)| {
            json!({
                "id": id,
                "name": name,
                "shortDescription": { "text": short },
                "fullDescription": { "text": full },
                "help": { "text": help },
                "defaultConfiguration": { "level": default_level(id) },
            })
        })
        .collect();
    let range = analysis.range.unwrap_or_default();
    let left_out = findings.saturating_sub(MAX_RESULTS as u64);
    let mut properties = json!({
        "analysisId": analysis.id,
        "title": analysis.title,
        "start": range.start.map(|t| t.seconds),
        "end": range.end.map(|t| t.seconds),
    });
    let invocations = (left_out > 0).then(|| {
        properties["findings"] = json!(findings);
        properties["resultCap"] = json!(MAX_RESULTS);
        properties["resultsLeftOut"] = json!(left_out);
        json!([{
            "executionSuccessful": true,
            "toolExecutionNotifications": [{
                "level": "warning",
                "message": { "text": format!(
                    "{left_out} of the analysis' {findings} findings were left out: GitHub code scanning accepts at most \
                     {MAX_RESULTS} results per run, so the most severe are kept (errors, then warnings, then notes)"
                )},
            }],
        }])
    });
    Log {
        schema: SCHEMA,
        version: "2.1.0",
        runs: [Run {
            tool: json!({ "driver": {
                "name": "Sextant",
                "version": version,
                "informationUri": "https://sextant.dev",
                "rules": rules,
            }}),
            automation_details: json!({ "id": format!("sextant/analysis/{}", analysis.id) }),
            invocations,
            properties,
            results: Lazy::new(Box::new(kept(a).map(|f| f.map(|f| result(&f))))),
        }],
    }
}

/// The analysis as one SARIF log (a tree: for tests and small logs).
pub fn render(analysis: &dyn Source, version: &str) -> Value {
    serde_json::to_value(log(analysis, version)).expect("a SARIF log serialises")
}

/// Writes the analysis as one SARIF log to `out`, a result at a time.
pub fn write(analysis: &dyn Source, version: &str, out: impl std::io::Write) -> serde_json::Result<()> {
    serde_json::to_writer(out, &log(analysis, version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::Whole;

    fn analysis() -> pb::Analysis {
        let finding = |id: &str, kind: &str, severity: pb::Severity, metric: &str| pb::Finding {
            id: id.into(),
            kind: kind.into(),
            severity: severity as i32,
            metric: metric.into(),
            message: format!("<script>alert(1)</script> {kind} on {metric}"),
            at: Some(prost_types::Timestamp {
                seconds: 1_795_000_060,
                nanos: 0,
            }),
            value: 900.0,
            properties: [("rule_name".to_owned(), "\"><img onerror=x>".to_owned())].into(),
        };
        pb::Analysis {
            id: "0193".into(),
            title: "t".into(),
            findings: vec![
                finding(
                    "anomaly:api.latency:1795000060",
                    "anomaly",
                    pb::Severity::Error,
                    "api.latency",
                ),
                finding("alert_fired:r:4", "alert_fired", pb::Severity::Error, "ns:cpu"),
                finding("anomaly:x:1", "anomaly", pb::Severity::Warning, "x"),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn the_log_is_valid_against_the_sarif_2_1_0_schema() {
        let schema: Value = serde_json::from_str(include_str!("../../tests/data/sarif-schema-2.1.0.json")).unwrap();
        let validator = jsonschema::draft4::new(&schema).expect("the OASIS schema compiles");
        let log = render(&Whole::from(analysis()), "0.1.0");
        let errors: Vec<String> = validator
            .iter_errors(&log)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{errors:#?}");
        // And one with no findings at all.
        assert!(validator.is_valid(&render(&Whole::from(pb::Analysis::default()), "0.1.0")));
        // The validator does refuse what the schema forbids.
        let mut broken = log.clone();
        broken["runs"][0]["results"][0]["level"] = json!("fatal");
        assert!(!validator.is_valid(&broken));
    }

    #[test]
    fn a_log_of_more_findings_than_github_accepts_keeps_the_most_severe_and_says_so() {
        let finding = |i: usize, severity: pb::Severity| pb::Finding {
            id: format!("anomaly:m{}:{i}", i % 40),
            kind: "anomaly".into(),
            severity: severity as i32,
            metric: format!("m{}", i % 40),
            message: format!("bucket {i} of m{} left its baseline", i % 40),
            value: i as f64,
            properties: [("expected".to_owned(), "50".to_owned())].into(),
            ..Default::default()
        };
        // 100,000 findings: 20,000 errors and 30,000 warnings among notes.
        let findings: Vec<pb::Finding> = (0..100_000)
            .map(|i| match i % 10 {
                0 | 5 => finding(i, pb::Severity::Error),
                1 | 4 | 7 => finding(i, pb::Severity::Warning),
                _ => finding(i, pb::Severity::Note),
            })
            .collect();
        let analysis = pb::Analysis {
            id: "big".into(),
            findings,
            ..Default::default()
        };
        let mut bytes = Vec::new();
        write(&Whole::from(analysis.clone()), "0.1.0", &mut bytes).unwrap();
        let log: Value = serde_json::from_slice(&bytes).unwrap();
        let run = &log["runs"][0];
        let results = run["results"].as_array().unwrap();
        assert_eq!(results.len(), MAX_RESULTS);
        let levels = |level: &str| results.iter().filter(|r| r["level"] == level).count();
        assert_eq!((levels("error"), levels("warning"), levels("note")), (20_000, 5_000, 0));
        // Errors first, each severity in the analysis' order.
        assert_eq!(results[0]["properties"]["findingId"], "anomaly:m0:0");
        assert_eq!(results[20_000]["properties"]["findingId"], "anomaly:m1:1");
        assert_eq!(run["properties"]["resultsLeftOut"], 75_000);
        assert_eq!(run["properties"]["resultCap"], MAX_RESULTS);
        let note = &run["invocations"][0]["toolExecutionNotifications"][0];
        assert_eq!(note["level"], "warning");
        assert!(
            note["message"]["text"]
                .as_str()
                .unwrap()
                .starts_with("75000 of the analysis' 100000 findings were left out")
        );
        // Valid SARIF, and within GitHub's 10 MB for the gzipped file.
        let schema: Value = serde_json::from_str(include_str!("../../tests/data/sarif-schema-2.1.0.json")).unwrap();
        assert!(jsonschema::draft4::new(&schema).unwrap().is_valid(&log));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &bytes).unwrap();
        let gzipped = gz.finish().unwrap().len();
        eprintln!("{} bytes, {gzipped} gzipped", bytes.len());
        assert!(gzipped < 10 << 20, "{gzipped} bytes gzipped");
        // Up to the cap, nothing is left out and nothing is said.
        let small = render(
            &Whole::from(pb::Analysis {
                findings: analysis.findings[..MAX_RESULTS].to_vec(),
                ..Default::default()
            }),
            "0.1.0",
        );
        assert_eq!(small["runs"][0]["results"].as_array().unwrap().len(), MAX_RESULTS);
        assert!(small["runs"][0].get("invocations").is_none());
        assert!(small["runs"][0]["properties"].get("resultsLeftOut").is_none());
    }

    #[test]
    fn results_carry_what_github_code_scanning_requires() {
        let log = render(&Whole::from(analysis()), "0.1.0");
        let run = &log["runs"][0];
        let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
        for rule in rules {
            assert_ne!(rule["name"], rule["id"], "SARIF1001: a rule's name is not its id");
            let name = rule["name"].as_str().unwrap();
            assert!(
                name.chars().all(char::is_alphanumeric) && name.starts_with(char::is_uppercase),
                "{name}"
            );
            for field in [
                "id",
                "shortDescription",
                "fullDescription",
                "help",
                "defaultConfiguration",
            ] {
                assert!(!rule[field].is_null(), "{field} in {rule}");
            }
        }
        let results = run["results"].as_array().unwrap();
        assert_eq!(results.len(), 3);
        assert_eq!(results[0]["level"], "error");
        assert_eq!(results[2]["level"], "warning");
        assert_eq!(
            results[1]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
            "sextant/metrics/ns%3Acpu"
        );
        let prints: Vec<&str> = results
            .iter()
            .map(|r| r["partialFingerprints"]["sextantFinding/v1"].as_str().unwrap())
            .collect();
        assert_eq!(prints.len(), 3);
        assert!(prints[0] != prints[1] && prints[1] != prints[2] && prints[0] != prints[2]);
        // The same finding fingerprints alike however its message reads.
        let mut again = analysis();
        again.findings[0].message = "reworded".into();
        assert_eq!(
            render(&Whole::from(again), "0.1.0")["runs"][0]["results"][0]["partialFingerprints"],
            results[0]["partialFingerprints"]
        );
    }
}
