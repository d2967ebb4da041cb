//! Renderers: an analysis (the analytics service's `Analysis` message) as
//! the bytes of one file. Pure functions of the analysis and a writer, so
//! each format is tested on its own; the service runs them off the async
//! threads (they are CPU-bound).
//!
//! A renderer reads the analysis through a [`Source`]: the heading whole,
//! the findings and series one at a time, as often as the format needs
//! (XLSX reads the series twice: rows, then charts; a capped SARIF reads the
//! findings once per severity). What it holds is bounded by one finding or
//! series, not by the analysis: the service's source is the spooled stream
//! of `ReadAnalysis` on local disk.

pub mod csv;
pub mod html;
pub mod json;
pub mod sarif;
pub mod xlsx;
pub mod zip;

use std::cell::RefCell;

use sextant_proto::analytics::v1 as pb;

/// Findings or series, one at a time; an `Err` ends the render.
pub type Parts<'a, T> = Box<dyn Iterator<Item = std::io::Result<T>> + 'a>;

/// How many of each an analysis holds: what a renderer must know before it
/// reads them (summary counts, table sizes, progress totals).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub findings: u64,
    pub errors: u64,
    pub warnings: u64,
    pub notes: u64,
    pub series: u64,
    pub buckets: u64,
}

impl Counts {
    pub fn finding(&mut self, f: &pb::Finding) {
        self.findings += 1;
        match pb::Severity::try_from(f.severity).unwrap_or_default() {
            pb::Severity::Error => self.errors += 1,
            pb::Severity::Warning => self.warnings += 1,
            pb::Severity::Note => self.notes += 1,
            pb::Severity::Unspecified => {}
        }
    }

    pub fn series(&mut self, c: &pb::ChartSeries) {
        self.series += 1;
        self.buckets += c.series.as_ref().map_or(0, |s| s.buckets.len() as u64);
    }
}

/// An analysis as renderers read it.
pub trait Source: Sync {
    /// Every field but findings and series (those are empty here).
    fn heading(&self) -> &pb::Analysis;
    fn counts(&self) -> Counts;
    /// The findings in the analysis' order, from the first.
    fn findings(&self) -> Parts<'_, pb::Finding>;
    /// The series in the analysis' order, from the first.
    fn series(&self) -> Parts<'_, pb::ChartSeries>;
}

/// An analysis held whole: for tests and small renders.
pub struct Whole {
    heading: pb::Analysis,
    findings: Vec<pb::Finding>,
    series: Vec<pb::ChartSeries>,
    counts: Counts,
}

impl From<pb::Analysis> for Whole {
    fn from(mut a: pb::Analysis) -> Self {
        let (findings, series) = (std::mem::take(&mut a.findings), std::mem::take(&mut a.series));
        let mut counts = Counts::default();
        findings.iter().for_each(|f| counts.finding(f));
        series.iter().for_each(|c| counts.series(c));
        Self {
            heading: a,
            findings,
            series,
            counts,
        }
    }
}

impl Source for Whole {
    fn heading(&self) -> &pb::Analysis {
        &self.heading
    }

    fn counts(&self) -> Counts {
        self.counts
    }

    fn findings(&self) -> Parts<'_, pb::Finding> {
        Box::new(self.findings.iter().cloned().map(Ok))
    }

    fn series(&self) -> Parts<'_, pb::ChartSeries> {
        Box::new(self.series.iter().cloned().map(Ok))
    }
}

/// A JSON array serialised as its items come from a source; an item's
/// `Err` fails the serialisation. Serialises once.
pub(crate) struct Lazy<I>(RefCell<Option<I>>);

impl<I> Lazy<I> {
    pub(crate) fn new(items: I) -> Self {
        Self(RefCell::new(Some(items)))
    }
}

impl<I, T> serde::Serialize for Lazy<I>
where
    I: Iterator<Item = std::io::Result<T>>,
    T: serde::Serialize,
{
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq};
        let items = self
            .0
            .borrow_mut()
            .take()
            .ok_or_else(|| S::Error::custom("serialised twice"))?;
        let mut seq = serializer.serialize_seq(None)?;
        for item in items {
            seq.serialize_element(&item.map_err(S::Error::custom)?)?;
        }
        seq.end()
    }
}

/// Rows between two progress reports.
const REPORT_EVERY: u64 = 4096;

/// Counts the rows a render has written and tells its caller every
/// [`REPORT_EVERY`] rows. The caller's `Err` (it went away: the job was
/// cancelled) stops the render at the next row.
pub struct Rows<'a> {
    written: u64,
    report: &'a mut dyn FnMut(u64) -> std::io::Result<()>,
}

impl<'a> Rows<'a> {
    pub fn new(report: &'a mut dyn FnMut(u64) -> std::io::Result<()>) -> Self {
        Self { written: 0, report }
    }

    /// `n` more rows written.
    pub fn add(&mut self, n: u64) -> std::io::Result<()> {
        let before = self.written / REPORT_EVERY;
        self.written += n;
        if self.written / REPORT_EVERY != before {
            (self.report)(self.written)?;
        }
        Ok(())
    }

    /// Tells the caller the final count.
    pub fn finish(&mut self) -> std::io::Result<()> {
        (self.report)(self.written)
    }

    pub fn written(&self) -> u64 {
        self.written
    }
}

/// Renders without reporting: for tests and one-off renders.
pub fn quietly<T>(render: impl FnOnce(&mut Rows<'_>) -> T) -> T {
    let mut ignore = |_| Ok(());
    render(&mut Rows::new(&mut ignore))
}

/// The rows of an analysis: its summary fields, metrics, findings and
/// series buckets, the unit of a render's progress.
pub fn rows(heading: &pb::Analysis, counts: Counts) -> u64 {
    csv::rows(heading, counts, csv::Section::Combined)
}

/// A writer for JSON that escapes `<`, `>` and `&` as `\u003c`, `\u003e` and
/// `\u0026`. In JSON those bytes occur only inside strings, so a JSON reader
/// reads the same document; a file or viewer that treats it as HTML finds
/// no markup in it.
pub struct MarkupFree<W>(pub W);

impl<W: std::io::Write> std::io::Write for MarkupFree<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut start = 0;
        for (i, b) in buf.iter().enumerate() {
            let escaped: &[u8] = match b {
                b'<' => b"\\u003c",
                b'>' => b"\\u003e",
                b'&' => b"\\u0026",
                _ => continue,
            };
            self.0.write_all(&buf[start..i])?;
            self.0.write_all(escaped)?;
            start = i + 1;
        }
        self.0.write_all(&buf[start..])?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// At most two points per pixel column (`column` maps a time to it): its
/// lowest and highest, in time order. A chart drawn from them looks the same
/// (spikes stay) while one of 10,000 buckets stays small: HTML charts and
/// XLSX chart data both use it.
pub(crate) fn per_pixel(points: &[(f64, f64)], column: impl Fn(f64) -> i64) -> Vec<(f64, f64)> {
    let mut kept: Vec<(f64, f64)> = Vec::new();
    let mut i = 0;
    while i < points.len() {
        let col = column(points[i].0);
        let mut j = i;
        let (mut lo, mut hi) = (points[i], points[i]);
        while j < points.len() && column(points[j].0) == col {
            if points[j].1 < lo.1 {
                lo = points[j];
            }
            if points[j].1 > hi.1 {
                hi = points[j];
            }
            j += 1;
        }
        if lo.0 <= hi.0 {
            kept.push(lo);
            if hi != lo {
                kept.push(hi);
            }
        } else {
            kept.extend([hi, lo]);
        }
        i = j;
    }
    kept
}

/// The error that stops a render whose caller went away.
pub fn stopped() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::Interrupted, "the render was stopped")
}

/// A user-supplied string as a spreadsheet cell: text a spreadsheet would run
/// as a formula (starting with `=`, `+`, `-`, `@`, a tab or a carriage
/// return) gets a leading `'`, which spreadsheets show as text (OWASP
/// "CSV injection"). Numbers are never passed through here: they stay numbers.
pub fn inert(text: &str) -> std::borrow::Cow<'_, str> {
    match text.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{text}").into(),
        _ => text.into(),
    }
}

/// A finding's properties, sorted by key, as `key=value` pairs.
pub(crate) fn sorted_properties(f: &pb::Finding) -> Vec<(&String, &String)> {
    let mut pairs: Vec<_> = f.properties.iter().collect();
    pairs.sort();
    pairs
}

/// A finding's properties in one cell: `key=value` pairs, keys sorted,
/// joined with `; `.
pub(crate) fn properties_text(f: &pb::Finding) -> String {
    sorted_properties(f)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A time as RFC 3339 in UTC; empty when absent.
pub(crate) fn time(t: &Option<prost_types::Timestamp>) -> String {
    t.and_then(|t| {
        time::OffsetDateTime::from_unix_timestamp(t.seconds)
            .ok()
            .map(|d| (d, t.nanos))
    })
    .and_then(|(d, nanos)| {
        (d + time::Duration::nanoseconds(i64::from(nanos)))
            .format(&time::format_description::well_known::Rfc3339)
            .ok()
    })
    .unwrap_or_default()
}

/// A finding's severity by name; empty when unspecified.
pub(crate) fn severity(s: i32) -> &'static str {
    match pb::Severity::try_from(s).unwrap_or_default() {
        pb::Severity::Note => "note",
        pb::Severity::Warning => "warning",
        pb::Severity::Error => "error",
        pb::Severity::Unspecified => "",
    }
}

/// An aggregation by name; empty when unspecified.
pub(crate) fn aggregation(a: i32) -> &'static str {
    match pb::Aggregation::try_from(a).unwrap_or_default() {
        pb::Aggregation::Count => "count",
        pb::Aggregation::Sum => "sum",
        pb::Aggregation::Avg => "avg",
        pb::Aggregation::Min => "min",
        pb::Aggregation::Max => "max",
        pb::Aggregation::P50 => "p50",
        pb::Aggregation::P90 => "p90",
        pb::Aggregation::P95 => "p95",
        pb::Aggregation::P99 => "p99",
        pb::Aggregation::Unspecified => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_series_keeps_two_points_a_pixel_and_its_spike() {
        let points: Vec<(f64, f64)> = (0..10_000)
            .map(|i| (f64::from(i), if i == 4_321 { 99.0 } else { f64::from(i % 7) }))
            .collect();
        let kept = per_pixel(&points, |t| (t / 10_000.0 * 560.0) as i64);
        assert!(kept.len() <= 2 * 561, "{}", kept.len());
        assert!(kept.contains(&(4_321.0, 99.0)), "the spike stays");
        assert!(kept.windows(2).all(|w| w[0].0 < w[1].0), "in time order");
    }

    #[test]
    fn json_without_markup_reads_back_the_same() {
        use std::io::Write;
        let value = serde_json::json!({"title": "<script>alert(1)</script> & \"><img onerror=x>"});
        let mut out = MarkupFree(Vec::new());
        serde_json::to_writer(&mut out, &value).unwrap();
        let text = String::from_utf8(out.0).unwrap();
        assert!(!text.contains(['<', '>', '&']), "{text}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap(), value);
        let mut split = MarkupFree(Vec::new());
        split.write_all(b"\"<a").unwrap();
        assert_eq!(split.0, b"\"\\u003ca");
    }

    #[test]
    fn formulas_become_text_and_other_strings_stay() {
        for formula in [
            "=HYPERLINK(\"http://x\")",
            "+cmd|' /C calc'!A0",
            "-2+3",
            "@SUM(A1)",
            "\tx",
            "\rx",
        ] {
            assert!(inert(formula).starts_with('\''), "{formula}");
        }
        for text in ["cpu", "", "a=b", "<script>", "'quoted"] {
            assert_eq!(inert(text), text);
        }
    }
}
