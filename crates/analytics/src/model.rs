//! The analytics domain: events, label sets, queries, and their checks.
//! Nothing here knows about protobuf (see `convert.rs`) or SQL (see `store`).

use std::collections::BTreeMap;

use time::OffsetDateTime;

/// Longest metric name and label key.
pub const MAX_NAME_LEN: usize = 200;

/// Microseconds since the Unix epoch (PostgreSQL's precision).
pub type Micros = i64;

pub const SECOND: Micros = 1_000_000;
pub const MINUTE: Micros = 60 * SECOND;

pub fn now_micros() -> Micros {
    micros_of(OffsetDateTime::now_utc())
}

pub fn micros_of(t: OffsetDateTime) -> Micros {
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

pub fn datetime(micros: Micros) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// `t` rounded down to a multiple of `width` (both in microseconds, from the epoch).
pub fn floor_to(t: Micros, width: Micros) -> Micros {
    t.div_euclid(width) * width
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    P50,
    P90,
    P95,
    P99,
}

impl Aggregation {
    pub fn is_percentile(self) -> bool {
        matches!(self, Self::P50 | Self::P90 | Self::P95 | Self::P99)
    }
}

/// Whether `name` is a valid metric name or label key:
/// `[a-zA-Z_][a-zA-Z0-9_.:]*`, at most [`MAX_NAME_LEN`] characters.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    name.len() <= MAX_NAME_LEN
        && (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':'))
}

pub const NAME_RULE: &str = "must match [a-zA-Z_][a-zA-Z0-9_.:]* and be at most 200 characters";

/// A validated event.
#[derive(Debug, Clone)]
pub struct Event {
    pub metric: String,
    pub ts: Micros,
    pub value: f64,
    pub labels: BTreeMap<String, String>,
    /// A staleness marker (the series ended at `ts`), not a value.
    pub stale: bool,
}

/// Why one event of a batch was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub index: u32,
    pub code: &'static str,
    pub field: String,
    pub message: String,
}

/// Codes of per-event rejections (documented in the OpenAPI document).
pub mod codes {
    pub const INVALID_ARGUMENT: &str = "invalid_argument";
    /// The timestamp is outside the accepted window.
    pub const OUT_OF_RANGE: &str = "out_of_range";
    /// A new series beyond `analytics.ingest.max_series_per_metric`.
    pub const CARDINALITY_LIMIT: &str = "cardinality_limit";
}

/// The per-event checks' limits.
#[derive(Debug, Clone, Copy)]
pub struct EventRules {
    pub max_labels: usize,
    pub max_label_value_len: usize,
    /// Oldest accepted timestamp.
    pub oldest: Micros,
    /// Newest accepted timestamp.
    pub newest: Micros,
}

/// An event as received, before checks.
#[derive(Debug, Clone)]
pub struct RawEvent {
    pub name: String,
    /// `None`: missing, or not representable.
    pub ts: Option<Micros>,
    pub value: f64,
    pub labels: Vec<(String, String)>,
    pub stale: bool,
}

pub fn check_event(index: u32, raw: RawEvent, rules: &EventRules) -> Result<Event, Rejection> {
    let reject = |code: &'static str, field: &str, message: String| Rejection {
        index,
        code,
        field: field.to_owned(),
        message,
    };
    if !valid_name(&raw.name) {
        return Err(reject(
            codes::INVALID_ARGUMENT,
            "name",
            format!("metric name {:?} {NAME_RULE}", truncate(&raw.name)),
        ));
    }
    if !raw.stale && !raw.value.is_finite() {
        return Err(reject(
            codes::INVALID_ARGUMENT,
            "value",
            format!("value must be a finite number, not {}", raw.value),
        ));
    }
    let Some(ts) = raw.ts else {
        return Err(reject(codes::INVALID_ARGUMENT, "ts", "ts is required".into()));
    };
    if ts < rules.oldest {
        return Err(reject(
            codes::OUT_OF_RANGE,
            "ts",
            format!(
                "ts {} is older than the raw retention allows (oldest accepted now: {})",
                rfc3339(ts),
                rfc3339(rules.oldest)
            ),
        ));
    }
    if ts > rules.newest {
        return Err(reject(
            codes::OUT_OF_RANGE,
            "ts",
            format!(
                "ts {} is too far in the future (newest accepted now: {})",
                rfc3339(ts),
                rfc3339(rules.newest)
            ),
        ));
    }
    if raw.labels.len() > rules.max_labels {
        return Err(reject(
            codes::INVALID_ARGUMENT,
            "labels",
            format!(
                "at most {} labels per event, got {}",
                rules.max_labels,
                raw.labels.len()
            ),
        ));
    }
    let mut labels = BTreeMap::new();
    for (key, value) in raw.labels {
        if !valid_name(&key) {
            return Err(reject(
                codes::INVALID_ARGUMENT,
                "labels",
                format!("label key {:?} {NAME_RULE}", truncate(&key)),
            ));
        }
        let field = format!("labels.{key}");
        if value.is_empty() {
            return Err(reject(
                codes::INVALID_ARGUMENT,
                &field,
                "label values must not be empty (leave the label out instead)".into(),
            ));
        }
        if value.chars().count() > rules.max_label_value_len {
            return Err(reject(
                codes::INVALID_ARGUMENT,
                &field,
                format!("label values are at most {} characters", rules.max_label_value_len),
            ));
        }
        if value.contains('\0') {
            return Err(reject(
                codes::INVALID_ARGUMENT,
                &field,
                "label values must not contain U+0000".into(),
            ));
        }
        labels.insert(key, value);
    }
    Ok(Event {
        metric: raw.name,
        ts,
        value: if raw.stale { 0.0 } else { raw.value },
        labels,
        stale: raw.stale,
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

pub fn rfc3339(micros: Micros) -> String {
    datetime(micros)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The types Prometheus' exposition formats name.
pub const TYPES: &[&str] = &[
    "counter",
    "gauge",
    "histogram",
    "gaugehistogram",
    "summary",
    "info",
    "stateset",
    "unknown",
];

/// Longest help text kept; longer ones are cut (at a character boundary).
const MAX_HELP: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
/// What a metric is, as Prometheus and OpenTelemetry senders describe it.
pub struct Metadata {
    pub metric: String,
    pub kind: String,
    pub help: String,
    pub unit: String,
}

impl Metadata {
    /// `None` when the metric name or the type is not one we know.
    pub fn checked(mut self) -> Option<Self> {
        if !valid_name(&self.metric) || !TYPES.contains(&self.kind.as_str()) || self.unit.len() > 200 {
            return None;
        }
        if self.help.len() > MAX_HELP {
            let cut = (0..=MAX_HELP)
                .rev()
                .find(|&i| self.help.is_char_boundary(i))
                .unwrap_or(0);
            self.help.truncate(cut);
        }
        self.help.retain(|c| c != '\0');
        Some(self)
    }
}

/// A label matcher. A series without the label matches as if its value were "".
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Matcher {
    Eq(String, String),
    Neq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl Matcher {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let get = |key: &str| labels.get(key).map_or("", String::as_str);
        match self {
            Matcher::Eq(k, v) => get(k) == v,
            Matcher::Neq(k, v) => get(k) != v,
            Matcher::In(k, vs) => vs.iter().any(|v| v == get(k)),
            Matcher::NotIn(k, vs) => !vs.iter().any(|v| v == get(k)),
        }
    }
}

/// A validated time-bucketed query over `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Query {
    pub metric: String,
    pub aggregations: Vec<Aggregation>,
    /// Bucket width, a whole number of seconds; buckets are aligned to the epoch.
    pub bucket: Micros,
    pub start: Micros,
    pub end: Micros,
    pub filters: Vec<Matcher>,
    pub group_by: Option<String>,
}

impl Query {
    pub fn needs_sketch(&self) -> bool {
        self.aggregations.iter().any(|a| a.is_percentile())
    }

    /// How many buckets one series can have over the range.
    pub fn bucket_count(&self) -> u64 {
        if self.end <= self.start {
            return 0;
        }
        let first = floor_to(self.start, self.bucket);
        let last = floor_to(self.end - 1, self.bucket);
        u64::try_from((last - first) / self.bucket + 1).unwrap_or(u64::MAX)
    }
}

/// One group's buckets, oldest first; only buckets with events.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesResult {
    pub group: String,
    pub buckets: Vec<BucketResult>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BucketResult {
    pub start: Micros,
    pub values: Vec<f64>,
    pub count: u64,
}

/// A batch's identity for idempotency: the same events in the same order
/// give the same bytes (labels sorted, values by their bits).
pub fn fingerprint(events: &[RawEvent]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for event in events {
        hash.update((event.name.len() as u64).to_le_bytes());
        hash.update(event.name.as_bytes());
        hash.update(event.ts.unwrap_or(i64::MIN).to_le_bytes());
        hash.update(event.value.to_bits().to_le_bytes());
        if event.stale {
            // Only then, so the keys stored before markers existed still match.
            hash.update(b"stale");
        }
        hash.update((event.labels.len() as u64).to_le_bytes());
        for (k, v) in &event.labels {
            hash.update((k.len() as u64).to_le_bytes());
            hash.update(k.as_bytes());
            hash.update((v.len() as u64).to_le_bytes());
            hash.update(v.as_bytes());
        }
    }
    hash.finalize().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_syntax() {
        for good in ["cpu", "_x", "http.requests:rate5m", "A9_"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "9cpu", ".x", "cpu load", "cpu-load", "ü", &"a".repeat(201)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn bucket_count_covers_partial_buckets_at_both_ends() {
        let q = Query {
            metric: "m".into(),
            aggregations: vec![Aggregation::Count],
            bucket: MINUTE,
            start: 30 * SECOND,
            end: 2 * MINUTE + SECOND,
            filters: vec![],
            group_by: None,
        };
        assert_eq!(q.bucket_count(), 3);
        let aligned = Query {
            start: 0,
            end: 2 * MINUTE,
            ..q
        };
        assert_eq!(aligned.bucket_count(), 2);
    }

    #[test]
    fn a_missing_label_matches_as_empty() {
        let labels = BTreeMap::from([("host".to_string(), "a".to_string())]);
        assert!(Matcher::Eq("region".into(), String::new()).matches(&labels));
        assert!(Matcher::NotIn("region".into(), vec!["eu".into()]).matches(&labels));
        assert!(!Matcher::In("host".into(), vec!["b".into()]).matches(&labels));
        assert!(Matcher::Neq("host".into(), "b".into()).matches(&labels));
    }
}
