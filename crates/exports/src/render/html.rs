//! HTML: one self-contained file — no request leaves it. The CSS is inline,
//! each chart is an inline SVG drawn here (so it needs no script, prints,
//! and shows in e-mail clients), and a `Content-Security-Policy` `<meta>`
//! forbids every fetch and every script. Every string from the analysis
//! (titles, metric names, messages, property values) is escaped by `maud`,
//! which escapes whatever it interpolates.
//!
//! Contents: the title and range, a summary table per metric, the findings,
//! and one chart per series (a line over the range, its min and max marked).

use maud::{DOCTYPE, Markup, PreEscaped, html};
use sextant_proto::analytics::v1 as pb;

use super::{Source, aggregation, per_pixel, severity, sorted_properties, time};

/// Forbids every fetch and script; allows only the inline style.
pub const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'";

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}\
th:first-child,td:first-child{text-align:left}.sev-error{color:#b00020}.sev-warning{color:#a15c00}\
figure{margin:1em 0;break-inside:avoid}figcaption{font-weight:600}svg{background:#fafafa}";

const W: f64 = 640.0;
const H: f64 = 160.0;
const PAD: f64 = 40.0;

fn fmt(v: f64) -> String {
    if v.is_finite() {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        "–".into()
    }
}

fn seconds(t: &Option<prost_types::Timestamp>) -> f64 {
    t.map_or(0.0, |t| t.seconds as f64 + f64::from(t.nanos) / 1e9)
}

/// One series as an SVG line chart over `[start, end)`.
fn chart(c: &pb::ChartSeries, start: f64, end: f64) -> Markup {
    let buckets = c.series.as_ref().map(|s| s.buckets.as_slice()).unwrap_or_default();
    let points: Vec<(f64, f64)> = buckets
        .iter()
        .filter_map(|b| {
            b.values
                .first()
                .filter(|v| v.is_finite())
                .map(|v| (seconds(&b.start), *v))
        })
        .collect();
    let (lo, hi) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (_, v)| {
            (lo.min(*v), hi.max(*v))
        });
    let span = (end - start).max(1.0);
    let height = if hi > lo { hi - lo } else { 1.0 };
    let x = |t: f64| PAD + (t - start) / span * (W - 2.0 * PAD);
    let y = |v: f64| H - PAD / 2.0 - (v - lo) / height * (H - PAD);
    let line: String = per_pixel(&points, |t| x(t).round() as i64)
        .iter()
        .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
        .collect::<Vec<_>>()
        .join(" ");
    let name = format!("{} ({})", c.metric, aggregation(c.aggregation));
    html! {
        figure {
            figcaption { (name) }
            svg xmlns="http://www.w3.org/2000/svg" width=(W) height=(H) viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(name) {
                @if points.is_empty() {
                    text x=(W / 2.0) y=(H / 2.0) text-anchor="middle" { "no data" }
                } @else {
                    line x1=(PAD) y1=(H - PAD / 2.0) x2=(W - PAD) y2=(H - PAD / 2.0) stroke="#999" {}
                    polyline points=(line) fill="none" stroke="#1565c0" stroke-width="1.5" {}
                    text x="2" y=(y(hi) + 4.0) font-size="10" { (fmt(hi)) }
                    text x="2" y=(y(lo) + 4.0) font-size="10" { (fmt(lo)) }
                }
            }
        }
    }
}

/// One finding as a table row.
fn finding(f: &pb::Finding) -> Markup {
    let properties = sorted_properties(f);
    html! {
        tr {
            td { (time(&f.at)) }
            td class=(format!("sev-{}", severity(f.severity))) { (severity(f.severity)) }
            td { (f.kind) } td { (f.metric) } td { (fmt(f.value)) } td { (f.message) }
            td { @for (k, v) in &properties { (k) "=" (v) br; } }
        }
    }
}

/// Writes the analysis as one HTML document to `out`, a finding and a chart
/// at a time: the document is the one `maud` makes of the whole page, whose
/// open elements around the findings and charts are written here as tags.
pub fn write(a: &dyn Source, mut out: impl std::io::Write) -> std::io::Result<()> {
    let h = a.heading();
    let range = h.range.unwrap_or_default();
    let (start, end) = (seconds(&range.start), seconds(&range.end));
    let title = if h.title.is_empty() {
        "Analysis"
    } else {
        h.title.as_str()
    };
    let findings = a.counts().findings;
    let top = html! {
        (DOCTYPE)
        (PreEscaped(r#"<html lang="en">"#))
        head {
            meta charset="utf-8";
            meta http-equiv="Content-Security-Policy" content=(CSP);
            meta name="referrer" content="no-referrer";
            title { (title) }
            style { (PreEscaped(STYLE)) }
        }
        (PreEscaped("<body>"))
        h1 { (title) }
        p { "From " (time(&range.start)) " to " (time(&range.end))
            ", in buckets of " (h.bucket.map_or(0, |b| b.seconds)) " s. Analysis " code { (h.id) } "." }
        h2 { "Summary" }
        table {
            thead { tr { th { "metric" } th { "count" } th { "sum" } th { "avg" } th { "min" } th { "max" }
                th { "p50" } th { "p90" } th { "p95" } th { "p99" } } }
            tbody {
                @for s in &h.summaries {
                    tr { td { (s.metric) } td { (s.count) } td { (fmt(s.sum)) } td { (fmt(s.avg)) }
                        td { (fmt(s.min)) } td { (fmt(s.max)) } td { (fmt(s.p50)) } td { (fmt(s.p90)) }
                        td { (fmt(s.p95)) } td { (fmt(s.p99)) } }
                }
            }
        }
        h2 { "Findings (" (findings) ")" }
        @if findings == 0 {
            p { "None." }
        } @else {
            (PreEscaped("<table>"))
            thead { tr { th { "time" } th { "severity" } th { "kind" } th { "metric" } th { "value" } th { "message" } th { "details" } } }
            (PreEscaped("<tbody>"))
        }
    };
    out.write_all(top.into_string().as_bytes())?;
    for f in a.findings() {
        out.write_all(finding(&f?).into_string().as_bytes())?;
    }
    if findings > 0 {
        out.write_all(b"</tbody></table>")?;
    }
    out.write_all(html! { h2 { "Charts" } }.into_string().as_bytes())?;
    for c in a.series() {
        out.write_all(chart(&c?, start, end).into_string().as_bytes())?;
    }
    out.write_all(b"</body></html>")
}

/// The analysis as one HTML document.
pub fn render(a: &dyn Source) -> String {
    let mut page = Vec::new();
    write(a, &mut page).expect("a render into memory does not fail");
    String::from_utf8(page).expect("maud writes UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "\"><img src=x onerror=alert(1)><script>alert(2)</script>";

    fn analysis() -> pb::Analysis {
        let ts = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
        pb::Analysis {
            id: "0193".into(),
            title: HOSTILE.into(),
            range: Some(sextant_proto::common::v1::TimeRange {
                start: ts(1_795_000_000),
                end: ts(1_795_000_600),
            }),
            summaries: vec![pb::MetricSummary {
                metric: HOSTILE.into(),
                count: 2,
                ..Default::default()
            }],
            findings: vec![pb::Finding {
                kind: "anomaly".into(),
                severity: pb::Severity::Error as i32,
                metric: "cpu".into(),
                message: HOSTILE.into(),
                at: ts(1_795_000_060),
                properties: [("annotation.runbook".to_owned(), HOSTILE.to_owned())].into(),
                ..Default::default()
            }],
            series: vec![pb::ChartSeries {
                metric: HOSTILE.into(),
                aggregation: pb::Aggregation::Avg as i32,
                series: Some(pb::Series {
                    group: String::new(),
                    buckets: (0..10)
                        .map(|i| pb::Bucket {
                            start: ts(1_795_000_000 + i * 60),
                            values: vec![(i * i) as f64],
                            count: 1,
                        })
                        .collect(),
                }),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn user_strings_are_escaped_and_nothing_is_fetched_or_run() {
        let page = render(&crate::render::Whole::from(analysis()));
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(2)&lt;/script&gt;"));
        assert!(page.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
        assert!(page.contains(&format!("content=\"{}\"", CSP.replace('\'', "&#39;"))) || page.contains(CSP));
        // The only URL is the SVG namespace, which is a name, not a fetch.
        let urls: Vec<&str> = page
            .match_indices("://")
            .map(|(i, _)| &page[i.saturating_sub(4)..(i + 22).min(page.len())])
            .collect();
        assert!(urls.iter().all(|u| *u == "http://www.w3.org/2000/svg"), "{urls:?}");
        assert!(
            !page.contains(" src=\"") && !page.contains(" href=\""),
            "no attribute loads anything"
        );
        assert!(page.contains("<polyline"), "a chart is drawn");
        assert!(page.contains(">81<"), "its max is marked");
    }
}
