//! Every format's bytes for one fixed analysis, pinned: a change to how an
//! analysis reaches the renderers (e.g. read in parts instead of whole)
//! must not change a byte of any file. The fixture is large enough to cross
//! every batch boundary and the SARIF result cap, and holds the strings
//! that need escaping in each format.

use sextant_proto::analytics::v1 as pb;
use sha2::{Digest, Sha256};

use crate::formats::{Contents, Format};
use crate::render::csv::Section;
use crate::render::{Source, Whole};

fn ts(seconds: i64, nanos: i32) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos })
}

/// 26,000 findings (over the SARIF cap; errors, warnings, notes and an
/// unspecified severity interleaved), 7 series of up to 2,500 buckets (one
/// empty, one with missing values), 3 metric summaries.
pub(crate) fn fixture() -> pb::Analysis {
    let start = 1_795_000_000;
    let severities = [
        pb::Severity::Note,
        pb::Severity::Warning,
        pb::Severity::Note,
        pb::Severity::Error,
        pb::Severity::Unspecified,
    ];
    let findings = (0..26_000)
        .map(|i: i64| pb::Finding {
            id: format!("anomaly:m{}:{}", i % 3, start + i * 60),
            kind: if i % 7 == 0 { "alert_fired" } else { "anomaly" }.into(),
            severity: severities[i as usize % severities.len()] as i32,
            metric: format!("m{}", i % 3),
            message: match i % 4 {
                0 => format!("bucket {i} left its baseline"),
                1 => "=HYPERLINK(\"http://x\") <b>&amp;</b>\nline two".into(),
                2 => "a \"quoted\", comma".into(),
                _ => "ünïcødé ✓".into(),
            },
            at: ts(start + i * 60, (i % 1_000) as i32 * 1_000),
            value: if i % 11 == 0 { f64::NAN } else { i as f64 * 0.25 - 100.0 },
            properties: [
                ("expected".to_owned(), format!("{}", i % 13)),
                ("score".to_owned(), format!("{:.3}", i as f64 / 7.0)),
                ("zeta".to_owned(), "@SUM(A1)".to_owned()),
            ]
            .into(),
        })
        .collect();
    let series = (0..7)
        .map(|s: i64| pb::ChartSeries {
            metric: format!("m{}", s % 3),
            aggregation: [pb::Aggregation::Avg, pb::Aggregation::P95, pb::Aggregation::Count][s as usize % 3] as i32,
            series: Some(pb::Series {
                group: String::new(),
                buckets: (0..if s == 4 { 0 } else { 2_500 - s * 100 })
                    .map(|b: i64| pb::Bucket {
                        start: ts(start + b * 60, 0),
                        values: if s == 5 && b % 9 == 0 {
                            vec![]
                        } else {
                            vec![((b * (s + 3)) % 97) as f64 / 3.0 - 10.0]
                        },
                        count: (b % 17) as u64,
                    })
                    .collect(),
            }),
        })
        .collect();
    let summary = |metric: &str, count: u64, sum: f64| pb::MetricSummary {
        metric: metric.into(),
        count,
        sum,
        avg: sum / count.max(1) as f64,
        min: -10.0,
        max: 22.333333333333332,
        p50: 1.5,
        p90: 19.0,
        p95: 20.25,
        p99: 22.0,
    };
    pb::Analysis {
        id: "01938a6e-0000-7000-8000-000000000001".into(),
        title: "Weekly <review> & \"=cmd\"".into(),
        range: Some(sextant_proto::common::v1::TimeRange {
            start: ts(start, 0),
            end: ts(start + 150_000, 0),
        }),
        created_at: ts(start + 150_060, 123_456_000),
        summaries: vec![
            summary("m0", 12_345, 6_789.5),
            summary("m1", 0, 0.0),
            pb::MetricSummary {
                min: f64::NAN,
                max: f64::NAN,
                ..summary("m2", 3, -1.25)
            },
        ],
        findings,
        series,
        bucket: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
        metrics: vec!["m0".into(), "m1".into(), "m2".into()],
    }
}

/// The formats pinned, each with its file's SHA-256 and size (made by the
/// renderers before they read analyses in parts).
const PINNED: &[(&str, &str, usize)] = &[
    (
        "sarif",
        "b44b9b4fcfdab265160651f1a490406f7aede9ae7e29781595a8bf6adaf9a682",
        12404892,
    ),
    (
        "html",
        "ed4a246139958feb50bd52aae4b5baa7b9a6eefbc25e6bbcbc5033ed9776b473",
        5774092,
    ),
    (
        "json",
        "adb4c41005277cd10abba5f4ce0bd4e3282be172a06ffcd7a3f3787833def4ec",
        11688436,
    ),
    (
        "xlsx",
        "77923251acbc8e5fe91930e8ab1c50234dc5c234f034af50b80ce6eaba30926d",
        1771026,
    ),
    (
        "csv:combined",
        "d6d64f05d34a183cceb7652cefa282ef8466d11d6edbff40c0eb5e40e804f564",
        5217844,
    ),
    (
        "csv:summary",
        "a722f32781080981ea4158af4a4b8c88ea6b1bba4e0da91c27b747e1a541c67f",
        295,
    ),
    (
        "csv:metrics",
        "829e133203efebf169e22fd48cce22313f1c8367d49029dbea31baa8a876f2dc",
        220,
    ),
    (
        "csv:findings",
        "6f1baf54016a581c02a0dd2829408f385cba7368230f6b647ced2039deadf654",
        3778255,
    ),
    (
        "csv:series",
        "31705153b8fbc95e8fc9f415801fc8c9b07e6949f209b2c976d788772f5e9509",
        600161,
    ),
    (
        "zip:manifest.json",
        "ea25cbec2c4cd6292e1cc0d041de72ebe6b47a23764f2c826d19c2c2611743a0",
        2251,
    ),
];

fn every_format() -> Vec<Format> {
    vec![
        Format::Sarif,
        Format::Html,
        Format::Json,
        Format::Xlsx,
        Format::Csv(Section::Combined),
        Format::Csv(Section::Summary),
        Format::Csv(Section::Metrics),
        Format::Csv(Section::Findings),
        Format::Csv(Section::Series),
    ]
}

fn digest(bytes: &[u8]) -> String {
    crate::publish::hex(&Sha256::digest(bytes))
}

#[test]
fn every_format_renders_the_pinned_bytes() {
    let analysis = Whole::from(fixture());
    let mut rendered: Vec<(String, String, usize)> = every_format()
        .into_iter()
        .map(|f| {
            let bytes = f.render(&analysis).unwrap();
            (f.name(), digest(&bytes), bytes.len())
        })
        .collect();
    // A ZIP's deflated bytes depend on how its writer is fed (files are
    // copied in, not written in one piece): what is pinned is its files —
    // each the format's render, byte for byte — and its manifest.
    let batch = Contents::Batch(every_format()).render(&analysis).unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(batch)).unwrap();
    let mut unpack = |name: &str| {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut archive.by_name(name).unwrap(), &mut bytes).unwrap();
        bytes
    };
    for (f, (_, sha, size)) in every_format().into_iter().zip(&rendered) {
        let bytes = unpack(&f.filename(&analysis.heading().id));
        assert_eq!((&digest(&bytes), bytes.len()), (sha, *size), "{} in the ZIP", f.name());
    }
    let manifest = unpack(crate::render::zip::MANIFEST);
    rendered.push(("zip:manifest.json".into(), digest(&manifest), manifest.len()));
    let table: String = rendered
        .iter()
        .map(|(name, sha, size)| format!("    (\"{name}\", \"{sha}\", {size}),\n"))
        .collect();
    let pinned: Vec<(String, String, usize)> = PINNED
        .iter()
        .map(|(n, s, z)| ((*n).to_owned(), (*s).to_owned(), *z))
        .collect();
    assert_eq!(rendered, pinned, "renders changed; today's table:\n{table}");
}
