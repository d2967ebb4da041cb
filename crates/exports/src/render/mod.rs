//! Renderers: an analysis (the analytics service's `Analysis` message) as
//! the bytes of one file. Pure functions of the analysis and a writer, so
//! each format is tested on its own; the service runs them off the async
//! threads (they are CPU-bound).

pub mod csv;
pub mod html;
pub mod json;
pub mod sarif;
pub mod xlsx;
pub mod zip;

use sextant_proto::analytics::v1 as pb;

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
