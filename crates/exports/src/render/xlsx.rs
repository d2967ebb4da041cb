//! XLSX: one workbook, a sheet per section (`summary`, `metrics`,
//! `findings`, `series`) and a `charts` sheet with a native line chart per
//! series. Each table has a bold header row, frozen, with an autofilter;
//! numbers carry number formats, times are Excel date-times, and columns
//! have widths that fit their content. Strings are written as strings
//! (never as formulas), so text from users can run nothing. The `series`
//! sheet — the one that grows with the range — is written in the writer's
//! constant-memory mode (rows go to a temporary file as they are written).

use rust_xlsxwriter::{Chart, ChartType, DocProperties, ExcelDateTime, Format, Workbook, Worksheet, XlsxError};

/// The Excel serial day of the Unix epoch (1970-01-01).
const UNIX_EPOCH_SERIAL: f64 = 25_569.0;
use sextant_proto::analytics::v1 as pb;

use super::{Counts, Rows, Source, aggregation, properties_text, severity};

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
        // Seconds' fractions are kept in the value; Excel shows milliseconds.
        datetime: Format::new().set_num_format("yyyy-mm-dd hh:mm:ss.000"),
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
        sheet.write_datetime_with_format(row, col, &excel_time(t)?, &f.datetime)?;
    }
    Ok(())
}

/// A time as an Excel date-time, to the microsecond (the serial's f64 holds
/// about that much for present-day dates).
fn excel_time(t: &prost_types::Timestamp) -> Result<ExcelDateTime, XlsxError> {
    let seconds = t.seconds as f64 + f64::from(t.nanos) / 1e9;
    ExcelDateTime::from_serial_datetime(UNIX_EPOCH_SERIAL + seconds / 86_400.0)
}

fn summary(workbook: &mut Workbook, a: &pb::Analysis, counts: Counts, f: &Formats) -> Result<(), XlsxError> {
    let sheet = workbook.add_worksheet().set_name("summary")?;
    let range = a.range.unwrap_or_default();
    // The fields of the CSV summary, in its order; times as date-times.
    enum Cell<'a> {
        Text(String),
        Time(&'a Option<prost_types::Timestamp>),
        Count(f64),
    }
    let rows = [
        ("id", Cell::Text(a.id.clone())),
        ("title", Cell::Text(a.title.clone())),
        ("start", Cell::Time(&range.start)),
        ("end", Cell::Time(&range.end)),
        ("bucket_seconds", Cell::Count(a.bucket.map_or(0, |b| b.seconds) as f64)),
        ("created_at", Cell::Time(&a.created_at)),
        ("metrics", Cell::Count(a.summaries.len() as f64)),
        ("findings", Cell::Count(counts.findings as f64)),
        ("findings_error", Cell::Count(counts.errors as f64)),
        ("findings_warning", Cell::Count(counts.warnings as f64)),
        ("findings_note", Cell::Count(counts.notes as f64)),
    ];
    table(sheet, f, &[("field", 16.0), ("value", 48.0)], rows.len() as u32)?;
    for (i, (field, value)) in rows.iter().enumerate() {
        let row = i as u32 + 1;
        sheet.write_string(row, 0, *field)?;
        match value {
            Cell::Text(text) => sheet.write_string(row, 1, text).map(|_| ())?,
            Cell::Time(t) => datetime(sheet, row, 1, t, f)?,
            Cell::Count(n) => sheet.write_number_with_format(row, 1, *n, &f.count).map(|_| ())?,
        }
    }
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

fn findings(workbook: &mut Workbook, a: &dyn Source, f: &Formats) -> Result<(), XlsxError> {
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
    table(sheet, f, &header, a.counts().findings as u32)?;
    for (i, x) in a.findings().enumerate() {
        let (row, x) = (i as u32 + 1, &x?);
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

/// The series sheet, in constant memory: a row goes to disk as the next begins.
fn series(workbook: &mut Workbook, a: &dyn Source, f: &Formats, written: &mut Rows<'_>) -> Result<(), XlsxError> {
    let sheet = workbook.add_worksheet_with_constant_memory()?;
    sheet.set_name("series")?;
    let rows = a.counts().buckets as u32;
    let header = [
        ("metric", 28.0),
        ("aggregation", 12.0),
        ("bucket_start", 20.0),
        ("count", 10.0),
        ("value", 14.0),
    ];
    table(sheet, f, &header, rows)?;
    let mut row = 1;
    for c in a.series() {
        let c = c?;
        for b in c.series.as_ref().map(|s| s.buckets.as_slice()).unwrap_or_default() {
            sheet.write_string(row, 0, &c.metric)?;
            sheet.write_string(row, 1, aggregation(c.aggregation))?;
            datetime(sheet, row, 2, &b.start, f)?;
            sheet.write_number_with_format(row, 3, b.count as f64, &f.count)?;
            number(sheet, row, 4, b.values.first().copied().unwrap_or(f64::NAN), &f.number)?;
            row += 1;
            written.add(1)?;
        }
    }
    Ok(())
}

/// Columns of a chart, in points: a chart's data keeps at most two a column.
const CHART_COLUMNS: f64 = 480.0;

/// The `charts` sheet: a native line chart per series (at most
/// [`MAX_CHARTS`]), drawn from the hidden `chart_data` sheet. That sheet holds
/// each series reduced to at most two points per chart column (its lowest
/// and highest, so spikes stay): a chart of 10,000 buckets looks the same,
/// and charts need not point into the constant-memory `series` sheet, whose
/// rows are no longer in memory when the workbook is saved.
fn charts(workbook: &mut Workbook, a: &dyn Source, f: &Formats) -> Result<(), XlsxError> {
    let mut drawn: Vec<Drawn> = Vec::new();
    for c in a.series() {
        if drawn.len() == MAX_CHARTS {
            break;
        }
        let c = c?;
        let buckets = c.series.as_ref().map(|s| s.buckets.as_slice()).unwrap_or_default();
        let points: Vec<(f64, f64)> = buckets
            .iter()
            .filter_map(|b| {
                let value = b.values.first().copied().filter(|v| v.is_finite())?;
                Some((b.start.map_or(0.0, |t| t.seconds as f64), value))
            })
            .collect();
        let (Some(first), Some(last)) = (points.first(), points.last()) else {
            continue;
        };
        let (first, span) = (first.0, (last.0 - first.0).max(1.0));
        let kept = super::per_pixel(&points, |t| ((t - first) / span * CHART_COLUMNS) as i64);
        let name = format!("{} ({})", c.metric, aggregation(c.aggregation));
        drawn.push((c.metric, name, kept));
    }
    let charts = workbook.add_worksheet().set_name("charts")?;
    for (i, (_, name, points)) in drawn.iter().enumerate() {
        let (col, last) = (i as u16 * 2, points.len() as u32);
        // A scatter with lines: its x axis is a value axis, so times show to
        // the minute (a line chart's date axis counts whole days).
        let mut chart = Chart::new(ChartType::ScatterStraight);
        chart.title().set_name(name.as_str());
        chart.legend().set_hidden();
        chart
            .add_series()
            .set_name(name.as_str())
            .set_categories(("chart_data", 1, col, last, col))
            .set_values(("chart_data", 1, col + 1, last, col + 1));
        let span = points.last().map_or(0.0, |p| p.0) - points.first().map_or(0.0, |p| p.0);
        chart.x_axis().set_num_format(time_axis_format(span));
        charts.insert_chart(i as u32 * 16, 0, &chart)?;
    }
    let data = workbook.add_worksheet().set_name("chart_data")?.set_hidden(true);
    for (i, (metric, name, points)) in drawn.iter().enumerate() {
        let col = i as u16 * 2;
        data.write_string(0, col, format!("{metric} time"))?;
        data.write_string(0, col + 1, name)?;
        for (row, (t, v)) in points.iter().enumerate() {
            let at = ExcelDateTime::from_serial_datetime(UNIX_EPOCH_SERIAL + *t / 86_400.0)?;
            data.write_datetime_with_format(row as u32 + 1, col, &at, &f.datetime)?;
            data.write_number(row as u32 + 1, col + 1, *v)?;
        }
    }
    Ok(())
}

/// A series drawn: its metric, its name, and its points kept.
type Drawn = (String, String, Vec<(f64, f64)>);

/// How a chart's time axis reads for a series spanning `seconds`.
fn time_axis_format(seconds: f64) -> &'static str {
    match seconds {
        s if s <= 2.0 * 86_400.0 => "mm-dd hh:mm",
        s if s <= 366.0 * 86_400.0 => "yyyy-mm-dd",
        _ => "yyyy-mm",
    }
}

/// Writes the workbook to `out`, counting rows in `written`. The same
/// analysis always makes the same bytes: the workbook's creation time is the
/// analysis's.
pub fn write(a: &dyn Source, out: impl std::io::Write + Send, written: &mut Rows<'_>) -> Result<(), XlsxError> {
    let (heading, counts) = (a.heading(), a.counts());
    let mut workbook = Workbook::new();
    let created = heading.created_at.map_or(0, |t| t.seconds);
    workbook.set_properties(
        &DocProperties::new()
            .set_title(&heading.title)
            .set_creation_datetime(&ExcelDateTime::from_timestamp(created)?),
    );
    let f = formats();
    summary(&mut workbook, heading, counts, &f)?;
    metrics(&mut workbook, heading, &f)?;
    findings(&mut workbook, a, &f)?;
    let [summary, metrics] =
        [super::csv::Section::Summary, super::csv::Section::Metrics].map(|s| super::csv::rows(heading, counts, s));
    written.add(counts.findings + summary + metrics)?;
    series(&mut workbook, a, &f, written)?;
    charts(&mut workbook, a, &f)?;
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
        super::super::quietly(|rows| write(&crate::render::Whole::from(analysis()), &mut bytes, rows)).unwrap();
        let mut book: Xlsx<_> = Xlsx::new(Cursor::new(bytes)).unwrap();
        assert_eq!(
            book.sheet_names(),
            ["summary", "metrics", "findings", "series", "charts", "chart_data"]
        );
        let data = book.worksheet_range("chart_data").unwrap();
        assert_eq!(data.height(), 11, "ten points need no thinning");
        assert_eq!(data.get_value((10, 1)), Some(&Data::Float(13.5)));
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

    #[test]
    fn the_workbook_carries_what_the_csv_does_to_the_microsecond() {
        let mut a = analysis();
        a.created_at = Some(prost_types::Timestamp {
            seconds: 1_795_000_123,
            nanos: 262_987_000,
        });
        a.findings.push(pb::Finding {
            severity: pb::Severity::Error as i32,
            ..a.findings[0].clone()
        });
        let a = crate::render::Whole::from(a);
        let mut bytes = Vec::new();
        super::super::quietly(|rows| write(&a, &mut bytes, rows)).unwrap();
        let mut book: Xlsx<_> = Xlsx::new(Cursor::new(bytes.clone())).unwrap();
        let summary = book.worksheet_range("summary").unwrap();
        let field = |name: &str| {
            summary
                .rows()
                .find(|r| r[0] == Data::String(name.into()))
                .unwrap_or_else(|| panic!("no {name} row"))[1]
                .clone()
        };
        // The summary's fields are the CSV's, in its order.
        let mut csv = Vec::new();
        super::super::quietly(|rows| super::super::csv::write(&a, super::super::csv::Section::Summary, &mut csv, rows))
            .unwrap();
        let csv_fields: Vec<String> = ::csv::Reader::from_reader(csv.as_slice())
            .records()
            .map(|r| r.unwrap()[0].to_owned())
            .collect();
        let xlsx_fields: Vec<String> = summary.rows().skip(1).map(|r| r[0].to_string()).collect();
        assert_eq!(xlsx_fields, csv_fields);
        assert_eq!(field("findings_error"), Data::Float(1.0));
        assert_eq!(field("findings_warning"), Data::Float(1.0));
        assert_eq!(field("findings_note"), Data::Float(0.0));
        // created_at keeps its fraction of a second.
        let Data::DateTime(created) = field("created_at") else {
            panic!("created_at is a date-time")
        };
        let seconds = (created.as_f64() - UNIX_EPOCH_SERIAL) * 86_400.0;
        assert!((seconds - 1_795_000_123.262_987).abs() < 2e-6, "{seconds}");
        // The chart reads times to the minute on a value axis.
        let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
        let mut xml = String::new();
        std::io::Read::read_to_string(&mut zip.by_name("xl/charts/chart1.xml").unwrap(), &mut xml).unwrap();
        assert!(xml.contains("<c:scatterChart>"), "{xml}");
        assert!(xml.contains(r#"formatCode="mm-dd hh:mm""#), "{xml}");
    }
}
