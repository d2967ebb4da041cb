//! XLSX: one workbook, a sheet per section (`summary`, `metrics`,
//! `findings`, `series`) and a `charts` sheet with a native line chart per
//! series. Each table has a bold header row, frozen, with an autofilter;
//! numbers carry number formats, times are Excel date-times, and columns
//! have widths that fit their content. Strings are written as strings
//! (never as formulas), so text from users can run nothing. The `series`
//! sheet — the one that grows with the range — is written in the writer's
//! constant-memory mode (rows go to a temporary file as they are written).

use rust_xlsxwriter::{Chart, ChartType, DocProperties, ExcelDateTime, Format, Workbook, Worksheet, XlsxError};
use sextant_proto::analytics::v1 as pb;

use super::{Rows, aggregation, properties_text, severity, time};

/// Charts drawn at most (the data stays in `series` either way).
pub const MAX_CHARTS: usize = 100;

struct Formats {
    header: Format,
    number: Format,
    count: Format,
    datetime: Format,
}

fn formats() -> Formats {
    Formats {
        header: Format::new().set_bold(),
        number: Format::new().set_num_format("#,##0.###"),
        count: Format::new().set_num_format("#,##0"),
        datetime: Format::new().set_num_format("yyyy-mm-dd hh:mm:ss"),
    }
}

/// A header row, frozen, with an autofilter over `rows` data rows, and widths.
fn table(sheet: &mut Worksheet, f: &Formats, header: &[(&str, f64)], rows: u32) -> Result<(), XlsxError> {
    for (col, (name, width)) in header.iter().enumerate() {
        let col = col as u16;
        sheet.write_string_with_format(0, col, *name, &f.header)?;
        sheet.set_column_width(col, *width)?;
    }
    sheet.set_freeze_panes(1, 0)?;
    sheet.autofilter(0, 0, rows, (header.len() - 1) as u16)?;
    Ok(())
}

fn number(sheet: &mut Worksheet, row: u32, col: u16, v: f64, format: &Format) -> Result<(), XlsxError> {
    // A value that does not exist (the min of no events) is an empty cell.
    if v.is_finite() {
        sheet.write_number_with_format(row, col, v, format)?;
    }
    Ok(())
}

fn datetime(
    sheet: &mut Worksheet,
    row: u32,
    col: u16,
    t: &Option<prost_types::Timestamp>,
    f: &Formats,
) -> Result<(), XlsxError> {
    if let Some(t) = t {
        let at = ExcelDateTime::from_timestamp(t.seconds)?;
        sheet.write_datetime_with_format(row, col, &at, &f.datetime)?;
    }
    Ok(())
}

fn summary(workbook: &mut Workbook, a: &pb::Analysis, f: &Formats) -> Result<(), XlsxError> {
    let sheet = workbook.add_worksheet().set_name("summary")?;
    let range = a.range.unwrap_or_default();
    let rows: [(&str, String); 4] = [
        ("id", a.id.clone()),
        ("title", a.title.clone()),
        ("start", time(&range.start)),
        ("end", time(&range.end)),
    ];
    table(sheet, f, &[("field", 16.0), ("value", 48.0)], (rows.len() + 4) as u32)?;
    for (i, (field, value)) in rows.iter().enumerate() {
        let row = i as u32 + 1;
        sheet.write_string(row, 0, *field)?;
        sheet.write_string(row, 1, value)?;
    }
    let counts = [
        ("bucket_seconds", a.bucket.map_or(0, |b| b.seconds) as f64),
        ("metrics", a.summaries.len() as f64),
        ("findings", a.findings.len() as f64),
    ];
    for (i, (field, value)) in counts.iter().enumerate() {
        let row = (rows.len() + i) as u32 + 1;
        sheet.write_string(row, 0, *field)?;
        sheet.write_number_with_format(row, 1, *value, &f.count)?;
    }
    let row = (rows.len() + counts.len()) as u32 + 1;
    sheet.write_string(row, 0, "created_at")?;
    datetime(sheet, row, 1, &a.created_at, f)?;
    Ok(())
}

fn metrics(workbook: &mut Workbook, a: &pb::Analysis, f: &Formats) -> Result<(), XlsxError> {
    let sheet = workbook.add_worksheet().set_name("metrics")?;
    let mut header = vec![("metric", 28.0), ("count", 12.0)];
    header.extend(["sum", "avg", "min", "max", "p50", "p90", "p95", "p99"].map(|n| (n, 12.0)));
    table(sheet, f, &header, a.summaries.len() as u32)?;
    for (i, s) in a.summaries.iter().enumerate() {
        let row = i as u32 + 1;
        sheet.write_string(row, 0, &s.metric)?;
        sheet.write_number_with_format(row, 1, s.count as f64, &f.count)?;
        for (col, v) in [s.sum, s.avg, s.min, s.max, s.p50, s.p90, s.p95, s.p99]
            .into_iter()
            .enumerate()
        {
            number(sheet, row, col as u16 + 2, v, &f.number)?;
        }
    }
    Ok(())
}

fn findings(workbook: &mut Workbook, a: &pb::Analysis, f: &Formats) -> Result<(), XlsxError> {
    let sheet = workbook.add_worksheet().set_name("findings")?;
    let header = [
        ("at", 20.0),
        ("severity", 10.0),
        ("kind", 14.0),
        ("metric", 28.0),
        ("value", 12.0),
        ("message", 60.0),
        ("properties", 60.0),
        ("id", 30.0),
    ];
    table(sheet, f, &header, a.findings.len() as u32)?;
    for (i, x) in a.findings.iter().enumerate() {
        let row = i as u32 + 1;
        let properties = properties_text(x);
        datetime(sheet, row, 0, &x.at, f)?;
        sheet.write_string(row, 1, severity(x.severity))?;
        sheet.write_string(row, 2, &x.kind)?;
        sheet.write_string(row, 3, &x.metric)?;
        number(sheet, row, 4, x.value, &f.number)?;
        sheet.write_string(row, 5, &x.message)?;
        sheet.write_string(row, 6, &properties)?;
        sheet.write_string(row, 7, &x.id)?;
    }
    Ok(())
}

/// The series sheet (constant memory) and, per series, its rows.
fn series(
    workbook: &mut Workbook,
    a: &pb::Analysis,
    f: &Formats,
    written: &mut Rows<'_>,
) -> Result<Vec<(String, u32, u32)>, XlsxError> {
    let sheet = workbook.add_worksheet_with_constant_memory()?;
    sheet.set_name("series")?;
    let rows: u32 = a
        .series
        .iter()
        .map(|c| c.series.as_ref().map_or(0, |s| s.buckets.len() as u32))
        .sum();
    let header = [
        ("metric", 28.0),
        ("aggregation", 12.0),
        ("bucket_start", 20.0),
        ("count", 10.0),
        ("value", 14.0),
    ];
    table(sheet, f, &header, rows)?;
    let mut ranges = Vec::new();
    let mut row = 1;
    for c in &a.series {
        let first = row;
        for b in c.series.as_ref().map(|s| s.buckets.as_slice()).unwrap_or_default() {
            sheet.write_string(row, 0, &c.metric)?;
            sheet.write_string(row, 1, aggregation(c.aggregation))?;
            datetime(sheet, row, 2, &b.start, f)?;
            sheet.write_number_with_format(row, 3, b.count as f64, &f.count)?;
            number(sheet, row, 4, b.values.first().copied().unwrap_or(f64::NAN), &f.number)?;
            row += 1;
            written.add(1)?;
        }
        if row > first {
            ranges.push((format!("{} ({})", c.metric, aggregation(c.aggregation)), first, row - 1));
        }
    }
    Ok(ranges)
}

/// Writes the workbook to `out`, counting rows in `written`. The same
/// analysis always makes the same bytes: the workbook's creation time is the
/// analysis's.
pub fn write(a: &pb::Analysis, out: impl std::io::Write + Send, written: &mut Rows<'_>) -> Result<(), XlsxError> {
    let mut workbook = Workbook::new();
    let created = a.created_at.map_or(0, |t| t.seconds);
    workbook.set_properties(
        &DocProperties::new()
            .set_title(&a.title)
            .set_creation_datetime(&ExcelDateTime::from_timestamp(created)?),
    );
    let f = formats();
    summary(&mut workbook, a, &f)?;
    metrics(&mut workbook, a, &f)?;
    findings(&mut workbook, a, &f)?;
    written.add((a.summaries.len() + a.findings.len()) as u64 + super::csv::rows(a, super::csv::Section::Summary))?;
    let ranges = series(&mut workbook, a, &f, written)?;
    let sheet = workbook.add_worksheet().set_name("charts")?;
    for (i, (name, first, last)) in ranges.iter().take(MAX_CHARTS).enumerate() {
        let mut chart = Chart::new(ChartType::Line);
        chart.title().set_name(name.as_str());
        chart.legend().set_hidden();
        chart
            .add_series()
            .set_name(name.as_str())
            .set_categories(("series", *first, 2, *last, 2))
            .set_values(("series", *first, 4, *last, 4));
        chart.x_axis().set_num_format("hh:mm");
        sheet.insert_chart(i as u32 * 16, 0, &chart)?;
    }
    workbook.save_to_writer(out)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use calamine::{Data, Reader, Xlsx};

    use super::*;

    fn analysis() -> pb::Analysis {
        let ts = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
        pb::Analysis {
            id: "0193".into(),
            title: "=HYPERLINK(\"http://evil\",\"x\")".into(),
            range: Some(sextant_proto::common::v1::TimeRange {
                start: ts(1_795_000_000),
                end: ts(1_795_000_600),
            }),
            summaries: vec![pb::MetricSummary {
                metric: "+cmd|' /C calc'!A0".into(),
                count: 10,
                sum: 45.5,
                avg: 4.55,
                min: f64::NAN,
                max: 9.0,
                ..Default::default()
            }],
            findings: vec![pb::Finding {
                kind: "anomaly".into(),
                severity: pb::Severity::Warning as i32,
                metric: "cpu".into(),
                message: "@SUM(A1:A9)".into(),
                at: ts(1_795_000_060),
                value: -3.5,
                ..Default::default()
            }],
            series: vec![pb::ChartSeries {
                metric: "cpu".into(),
                aggregation: pb::Aggregation::Avg as i32,
                series: Some(pb::Series {
                    group: String::new(),
                    buckets: (0..10)
                        .map(|i| pb::Bucket {
                            start: ts(1_795_000_000 + i * 60),
                            values: vec![i as f64 * 1.5],
                            count: 3,
                        })
                        .collect(),
                }),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_reader_finds_the_sheets_values_and_inert_strings() {
        let mut bytes = Vec::new();
        super::super::quietly(|rows| write(&analysis(), &mut bytes, rows)).unwrap();
        let mut book: Xlsx<_> = Xlsx::new(Cursor::new(bytes)).unwrap();
        assert_eq!(
            book.sheet_names(),
            ["summary", "metrics", "findings", "series", "charts"]
        );
        let summary = book.worksheet_range("summary").unwrap();
        assert_eq!(
            summary.get_value((2, 1)),
            Some(&Data::String("=HYPERLINK(\"http://evil\",\"x\")".into()))
        );
        let metrics = book.worksheet_range("metrics").unwrap();
        assert_eq!(metrics.get_value((0, 0)), Some(&Data::String("metric".into())));
        assert_eq!(
            metrics.get_value((1, 0)),
            Some(&Data::String("+cmd|' /C calc'!A0".into()))
        );
        assert_eq!(metrics.get_value((1, 1)), Some(&Data::Float(10.0)));
        assert_eq!(metrics.get_value((1, 2)), Some(&Data::Float(45.5)));
        assert!(
            matches!(metrics.get_value((1, 4)), None | Some(Data::Empty)),
            "no min of nothing"
        );
        let findings = book.worksheet_range("findings").unwrap();
        assert_eq!(findings.get_value((1, 5)), Some(&Data::String("@SUM(A1:A9)".into())));
        assert_eq!(findings.get_value((1, 4)), Some(&Data::Float(-3.5)));
        assert!(
            matches!(findings.get_value((1, 0)), Some(Data::DateTime(_))),
            "a date-time"
        );
        let series = book.worksheet_range("series").unwrap();
        assert_eq!(series.height(), 11);
        assert_eq!(series.get_value((10, 4)), Some(&Data::Float(13.5)));
        // No cell anywhere holds a formula.
        for name in ["summary", "metrics", "findings", "series"] {
            let formulas = book.worksheet_formula(name).unwrap();
            assert!(formulas.used_cells().all(|(_, _, f)| f.is_empty()), "{name}");
        }
    }
}
