//! CSV (RFC 4180, through the `csv` crate): one section of an analysis, or
//! all of them combined.
//!
//! Sections and their columns:
//! - `summary`: `field,value` — the analysis's id, title, range, bucket, and
//!   its counts of metrics and of findings per severity;
//! - `metrics`: `metric,count,sum,avg,min,max,p50,p90,p95,p99`;
//! - `findings`: `id,kind,severity,metric,at,value,message,properties`
//!   (properties as `key=value` pairs joined with `; `, keys sorted);
//! - `series`: `metric,aggregation,bucket_start,count,value`;
//! - `combined`: every row of the four, each led by its `section`, under the
//!   union of their columns (cells a section does not have are empty).
//!
//! User-supplied strings go through [`super::inert`]; numbers are written as
//! numbers (empty for a value that does not exist, e.g. the min of no
//! events), times as RFC 3339 in UTC.

use std::io::Write;

use sextant_proto::analytics::v1 as pb;

use super::{Counts, Parts, Rows, Source, aggregation, inert, properties_text, severity, time};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Summary,
    Metrics,
    Findings,
    Series,
    Combined,
}

impl Section {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "summary" => Self::Summary,
            "metrics" => Self::Metrics,
            "findings" => Self::Findings,
            "series" => Self::Series,
            "combined" => Self::Combined,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Summary => "summary",
            Self::Metrics => "metrics",
            Self::Findings => "findings",
            Self::Series => "series",
            Self::Combined => "combined",
        }
    }
}

const SUMMARY: &[&str] = &["field", "value"];
const METRICS: &[&str] = &[
    "metric", "count", "sum", "avg", "min", "max", "p50", "p90", "p95", "p99",
];
const FINDINGS: &[&str] = &[
    "id",
    "kind",
    "severity",
    "metric",
    "at",
    "value",
    "message",
    "properties",
];
const SERIES: &[&str] = &["metric", "aggregation", "bucket_start", "count", "value"];

/// The combined header: `section`, then each column name once, in order of
/// first appearance across the sections.
fn combined_columns() -> Vec<&'static str> {
    let mut columns = vec!["section"];
    for name in [SUMMARY, METRICS, FINDINGS, SERIES].concat() {
        if !columns.contains(&name) {
            columns.push(name);
        }
    }
    columns
}

fn number(v: f64) -> String {
    if v.is_finite() { format!("{v}") } else { String::new() }
}

/// One row: (column, cell) pairs; columns not named are empty.
type Row = Vec<(&'static str, String)>;

fn summary_rows(a: &pb::Analysis, counts: Counts) -> Vec<Row> {
    let range = a.range.unwrap_or_default();
    [
        ("id", inert(&a.id).into_owned()),
        ("title", inert(&a.title).into_owned()),
        ("start", time(&range.start)),
        ("end", time(&range.end)),
        ("bucket_seconds", a.bucket.map_or(0, |b| b.seconds).to_string()),
        ("created_at", time(&a.created_at)),
        ("metrics", a.summaries.len().to_string()),
        ("findings", counts.findings.to_string()),
        ("findings_error", counts.errors.to_string()),
        ("findings_warning", counts.warnings.to_string()),
        ("findings_note", counts.notes.to_string()),
    ]
    .into_iter()
    .map(|(field, value)| vec![("field", field.to_owned()), ("value", value)])
    .collect()
}

/// The summary's rows: its fields.
const SUMMARY_ROWS: u64 = 11;

fn metric_rows(a: &pb::Analysis) -> Vec<Row> {
    a.summaries
        .iter()
        .map(|s| {
            vec![
                ("metric", inert(&s.metric).into_owned()),
                ("count", s.count.to_string()),
                ("sum", number(s.sum)),
                ("avg", number(s.avg)),
                ("min", number(s.min)),
                ("max", number(s.max)),
                ("p50", number(s.p50)),
                ("p90", number(s.p90)),
                ("p95", number(s.p95)),
                ("p99", number(s.p99)),
            ]
        })
        .collect()
}

fn finding_row(f: &pb::Finding) -> Row {
    let properties = properties_text(f);
    vec![
        ("id", inert(&f.id).into_owned()),
        ("kind", inert(&f.kind).into_owned()),
        ("severity", severity(f.severity).to_owned()),
        ("metric", inert(&f.metric).into_owned()),
        ("at", time(&f.at)),
        ("value", number(f.value)),
        ("message", inert(&f.message).into_owned()),
        ("properties", inert(&properties).into_owned()),
    ]
}

/// A series' rows, a bucket each.
fn series_rows(c: pb::ChartSeries) -> impl Iterator<Item = std::io::Result<Row>> {
    let (metric, aggregation) = (inert(&c.metric).into_owned(), aggregation(c.aggregation));
    let buckets = c.series.map(|s| s.buckets).unwrap_or_default();
    buckets.into_iter().map(move |b| {
        Ok(vec![
            ("metric", metric.clone()),
            ("aggregation", aggregation.to_owned()),
            ("bucket_start", time(&b.start)),
            ("count", b.count.to_string()),
            ("value", number(b.values.first().copied().unwrap_or(f64::NAN))),
        ])
    })
}

/// The rows `section` of an analysis holds (headers not counted), from its
/// heading and counts.
pub fn rows(heading: &pb::Analysis, counts: Counts, section: Section) -> u64 {
    let metrics = heading.summaries.len() as u64;
    match section {
        Section::Summary => SUMMARY_ROWS,
        Section::Metrics => metrics,
        Section::Findings => counts.findings,
        Section::Series => counts.buckets,
        Section::Combined => SUMMARY_ROWS + metrics + counts.findings + counts.buckets,
    }
}

fn write_rows(
    writer: &mut csv::Writer<impl Write>,
    columns: &[&str],
    section: Option<&str>,
    rows: impl Iterator<Item = std::io::Result<Row>>,
    written: &mut Rows<'_>,
) -> csv::Result<()> {
    for row in rows {
        let row = row?;
        let cells = columns.iter().map(|column| {
            if *column == "section" {
                return section.unwrap_or_default().to_owned();
            }
            row.iter()
                .find(|(c, _)| c == column)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        });
        writer.write_record(cells)?;
        written.add(1)?;
    }
    Ok(())
}

type Part<'a> = (Section, &'static [&'static str], Parts<'a, Row>);

/// Writes `section` of `analysis` as CSV to `out`, counting rows in `written`.
pub fn write(analysis: &dyn Source, section: Section, out: impl Write, written: &mut Rows<'_>) -> csv::Result<()> {
    // RFC 4180 ends records with CRLF (the crate's default is LF).
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(out);
    let heading = analysis.heading();
    let summary = summary_rows(heading, analysis.counts()).into_iter().map(Ok);
    let findings = analysis.findings().map(|f| f.map(|f| finding_row(&f)));
    let series = analysis.series().flat_map(|c| -> Parts<'_, Row> {
        match c {
            Ok(c) => Box::new(series_rows(c)),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    });
    let parts: Vec<Part<'_>> = vec![
        (Section::Summary, SUMMARY, Box::new(summary)),
        (
            Section::Metrics,
            METRICS,
            Box::new(metric_rows(heading).into_iter().map(Ok)),
        ),
        (Section::Findings, FINDINGS, Box::new(findings)),
        (Section::Series, SERIES, Box::new(series)),
    ];
    if section == Section::Combined {
        let columns = combined_columns();
        writer.write_record(&columns)?;
        for (part, _, rows) in parts {
            write_rows(&mut writer, &columns, Some(part.name()), rows, written)?;
        }
    } else {
        let (_, columns, rows) = parts
            .into_iter()
            .find(|(s, _, _)| *s == section)
            .expect("every section but combined is a part");
        writer.write_record(columns)?;
        write_rows(&mut writer, columns, None, rows, written)?;
    }
    writer.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    fn analysis() -> pb::Analysis {
        pb::Analysis {
            id: "0193".into(),
            title: "=HYPERLINK(\"http://evil\",\"click\")".into(),
            range: Some(sextant_proto::common::v1::TimeRange {
                start: ts(1_795_000_000),
                end: ts(1_795_003_600),
            }),
            created_at: ts(1_795_003_700),
            summaries: vec![pb::MetricSummary {
                metric: "cpu".into(),
                count: 3,
                sum: -6.5,
                avg: -2.1666666666666665,
                min: -5.0,
                max: 1.5,
                p50: -3.0,
                p90: 1.5,
                p95: 1.5,
                p99: 1.5,
            }],
            findings: vec![pb::Finding {
                id: "anomaly:cpu:1795000060".into(),
                kind: "anomaly".into(),
                severity: pb::Severity::Error as i32,
                metric: "cpu".into(),
                message: "+cmd|' /C calc'!A0, \"quoted\"\nand a new line".into(),
                at: ts(1_795_000_060),
                value: -5.0,
                properties: [("note".to_owned(), "@SUM(A1)".to_owned())].into(),
            }],
            series: vec![pb::ChartSeries {
                metric: "cpu".into(),
                aggregation: pb::Aggregation::Avg as i32,
                series: Some(pb::Series {
                    group: String::new(),
                    buckets: vec![pb::Bucket {
                        start: ts(1_795_000_060),
                        values: vec![-2.5],
                        count: 2,
                    }],
                }),
            }],
            bucket: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
            metrics: vec!["cpu".into()],
        }
    }

    fn render(section: Section) -> Vec<csv::StringRecord> {
        let mut out = Vec::new();
        super::super::quietly(|rows| write(&crate::render::Whole::from(analysis()), section, &mut out, rows)).unwrap();
        csv::Reader::from_reader(out.as_slice())
            .records()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn numbers_stay_numbers_and_user_strings_are_inert() {
        let metrics = render(Section::Metrics);
        assert_eq!(&metrics[0][0], "cpu");
        assert_eq!(&metrics[0][2], "-6.5", "a negative number is not neutralised");
        assert_eq!(&metrics[0][4], "-5");
        let findings = render(Section::Findings);
        assert_eq!(&findings[0][6], "'+cmd|' /C calc'!A0, \"quoted\"\nand a new line");
        assert_eq!(&findings[0][5], "-5");
        assert_eq!(&findings[0][4], "2026-11-18T11:07:40Z");
        let summary = render(Section::Summary);
        let title = summary.iter().find(|r| &r[0] == "title").unwrap();
        assert_eq!(&title[1], "'=HYPERLINK(\"http://evil\",\"click\")");
        let series = render(Section::Series);
        assert_eq!(
            series[0].iter().collect::<Vec<_>>(),
            ["cpu", "avg", "2026-11-18T11:07:40Z", "2", "-2.5"]
        );
    }

    #[test]
    fn records_end_with_crlf_and_a_line_break_inside_a_field_stays_quoted() {
        for section in [Section::Summary, Section::Findings, Section::Combined] {
            let mut out = Vec::new();
            super::super::quietly(|rows| write(&crate::render::Whole::from(analysis()), section, &mut out, rows))
                .unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(text.ends_with("\r\n"), "{section:?}");
            // The only bare line feed is the one inside the quoted message.
            let bare = text
                .match_indices('\n')
                .filter(|(i, _)| !text[..*i].ends_with('\r'))
                .count();
            let inside = usize::from(section != Section::Summary);
            assert_eq!(bare, inside, "{section:?}: {text:?}");
            let records = text.matches("\r\n").count();
            assert_eq!(records, csv::Reader::from_reader(text.as_bytes()).records().count() + 1);
        }
    }

    #[test]
    fn combined_holds_every_section_under_one_header() {
        let mut out = Vec::new();
        super::super::quietly(|rows| {
            write(
                &crate::render::Whole::from(analysis()),
                Section::Combined,
                &mut out,
                rows,
            )
        })
        .unwrap();
        let mut reader = csv::Reader::from_reader(out.as_slice());
        let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_owned).collect();
        assert_eq!(header[0], "section");
        let rows: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>().unwrap();
        let count = |s: &str| rows.iter().filter(|r| &r[0] == s).count();
        assert_eq!(
            (count("summary"), count("metrics"), count("findings"), count("series")),
            (11, 1, 1, 1)
        );
        assert!(
            rows.iter().all(|r| r.len() == header.len()),
            "every record has every column"
        );
        let finding = rows.iter().find(|r| &r[0] == "findings").unwrap();
        let column = |name: &str| header.iter().position(|h| h == name).unwrap();
        assert_eq!(&finding[column("severity")], "error");
        assert_eq!(&finding[column("properties")], "note=@SUM(A1)");
    }
}
