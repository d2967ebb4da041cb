//! Metrics: JSON ⇄ the analytics service's protobuf. The HTTP routes
//! (`/api/v1/events`, `/api/v1/metrics…`) and the `metric:` WebSocket topic
//! both go through here.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sextant_proto::analytics::v1 as pb;
use sextant_proto::common::v1::{LabelMatcher, TimeRange, label_matcher::Op};
use time::OffsetDateTime;

use super::{rfc3339, timestamp};

/// Events per `POST /api/v1/events` (the analytics service's default).
pub const MAX_EVENTS: usize = 10_000;

/// The body of `POST /api/v1/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestBody {
    events: Vec<EventBody>,
}

impl IngestBody {
    /// The analytics service's request; a batch over [`MAX_EVENTS`] is refused whole.
    pub fn request(self, idempotency_key: String) -> Result<pb::IngestEventsRequest, String> {
        if self.events.len() > MAX_EVENTS {
            return Err(format!(
                "events holds {} events; a batch holds at most {MAX_EVENTS}",
                self.events.len()
            ));
        }
        Ok(pb::IngestEventsRequest {
            events: self.events.into_iter().map(EventBody::message).collect(),
            idempotency_key,
            metadata: Vec::new(),
        })
    }
}

/// One event of `POST /api/v1/events`. Its shape is checked here (a body
/// that does not match the schema is a 400); everything else about it is
/// checked by the analytics service, per event.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBody {
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub ts: OffsetDateTime,
    pub value: f64,
    #[serde(default)]
    pub labels: std::collections::HashMap<String, String>,
}

impl EventBody {
    pub fn message(self) -> pb::MetricEvent {
        pb::MetricEvent {
            name: self.name,
            ts: Some(timestamp(self.ts)),
            value: self.value,
            labels: self.labels,
            stale: false,
        }
    }
}

pub fn rejection_json(r: &pb::Rejection) -> Value {
    json!({ "index": r.index, "code": r.code, "field": r.field, "message": r.message })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AggregationName {
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

impl AggregationName {
    pub(crate) fn pb(self) -> pb::Aggregation {
        match self {
            Self::Count => pb::Aggregation::Count,
            Self::Sum => pb::Aggregation::Sum,
            Self::Avg => pb::Aggregation::Avg,
            Self::Min => pb::Aggregation::Min,
            Self::Max => pb::Aggregation::Max,
            Self::P50 => pb::Aggregation::P50,
            Self::P90 => pb::Aggregation::P90,
            Self::P95 => pb::Aggregation::P95,
            Self::P99 => pb::Aggregation::P99,
        }
    }
}

pub fn aggregation_name(a: pb::Aggregation) -> &'static str {
    match a {
        pb::Aggregation::Count => "count",
        pb::Aggregation::Sum => "sum",
        pb::Aggregation::Avg => "avg",
        pb::Aggregation::Min => "min",
        pb::Aggregation::Max => "max",
        pb::Aggregation::P50 => "p50",
        pb::Aggregation::P90 => "p90",
        pb::Aggregation::P95 => "p95",
        pb::Aggregation::P99 => "p99",
        pb::Aggregation::Unspecified => "unknown",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpName {
    Eq,
    Neq,
    In,
    NotIn,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub label: String,
    pub op: OpName,
    pub values: Vec<String>,
}

impl Filter {
    pub(crate) fn pb(&self) -> LabelMatcher {
        LabelMatcher {
            label: self.label.clone(),
            op: match self.op {
                OpName::Eq => Op::Eq,
                OpName::Neq => Op::Neq,
                OpName::In => Op::In,
                OpName::NotIn => Op::NotIn,
            } as i32,
            values: self.values.clone(),
        }
    }
}

/// The body of `POST /api/v1/metrics/query`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    pub metric: String,
    pub aggregations: Vec<AggregationName>,
    pub bucket_seconds: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
    #[serde(default)]
    pub filters: Vec<Filter>,
    #[serde(default)]
    pub group_by: Option<String>,
}

pub(crate) fn seconds(s: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(s).unwrap_or(i64::MAX),
        nanos: 0,
    }
}

pub(crate) fn query_message(
    metric: &str,
    aggregations: &[AggregationName],
    bucket_seconds: u64,
    filters: &[Filter],
    group_by: Option<&str>,
    range: Option<TimeRange>,
) -> pb::MetricQuery {
    pb::MetricQuery {
        metric: metric.to_owned(),
        aggregations: aggregations.iter().map(|a| a.pb() as i32).collect(),
        bucket: Some(seconds(bucket_seconds)),
        range,
        filters: filters.iter().map(Filter::pb).collect(),
        group_by: group_by.unwrap_or_default().to_owned(),
    }
}

/// `group_by` names a label or is absent: `""` is neither.
fn check_group_by(group_by: Option<&str>) -> Result<(), String> {
    match group_by {
        Some("") => Err("group_by must name a label, or be null to group nothing".into()),
        _ => Ok(()),
    }
}

impl QueryBody {
    pub fn check(&self) -> Result<(), String> {
        check_group_by(self.group_by.as_deref())
    }

    pub fn message(&self) -> pb::MetricQuery {
        query_message(
            &self.metric,
            &self.aggregations,
            self.bucket_seconds,
            &self.filters,
            self.group_by.as_deref(),
            Some(TimeRange {
                start: Some(timestamp(self.start)),
                end: Some(timestamp(self.end)),
            }),
        )
    }
}

/// A live metric query: the `query` of a `metric` subscription. Its
/// canonical JSON (this field order, filters sorted) names the topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchSpec {
    pub metric: String,
    pub aggregations: Vec<AggregationName>,
    pub bucket_seconds: u64,
    pub window_seconds: u64,
    #[serde(default)]
    pub filters: Vec<Filter>,
    #[serde(default)]
    pub group_by: Option<String>,
}

impl WatchSpec {
    pub fn check(&self) -> Result<(), String> {
        check_group_by(self.group_by.as_deref())
    }

    /// The same query in its one written form.
    pub fn canonical(mut self) -> Self {
        for filter in &mut self.filters {
            filter.values.sort();
            filter.values.dedup();
        }
        self.filters.sort();
        self.filters.dedup();
        self
    }

    pub fn name(&self) -> String {
        format!("metric:{}", serde_json::to_string(self).expect("specs serialise"))
    }

    pub fn request(&self, after_version: u64) -> pb::WatchMetricRequest {
        pb::WatchMetricRequest {
            query: Some(query_message(
                &self.metric,
                &self.aggregations,
                self.bucket_seconds,
                &self.filters,
                self.group_by.as_deref(),
                None,
            )),
            after_version,
            window: Some(seconds(self.window_seconds)),
        }
    }
}

/// A label matcher as written in a request.
pub(crate) fn filter_json(m: &LabelMatcher) -> Value {
    let op = match Op::try_from(m.op).unwrap_or(Op::Unspecified) {
        Op::Eq => OpName::Eq,
        Op::Neq => OpName::Neq,
        Op::In => OpName::In,
        Op::NotIn | Op::Unspecified => OpName::NotIn,
    };
    json!({ "label": m.label, "op": op, "values": m.values })
}

pub(crate) fn number(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

fn bucket_json(names: &[&'static str], bucket: &pb::Bucket) -> Value {
    let values: Map<String, Value> = names
        .iter()
        .zip(&bucket.values)
        .map(|(name, v)| ((*name).to_owned(), number(*v)))
        .collect();
    json!({ "start": rfc3339(&bucket.start), "count": bucket.count, "values": values })
}

fn names(aggregations: &[i32]) -> Vec<&'static str> {
    aggregations
        .iter()
        .map(|a| aggregation_name(pb::Aggregation::try_from(*a).unwrap_or_default()))
        .collect()
}

fn series_json(names: &[&'static str], group: &str, grouped: bool, buckets: &[pb::Bucket]) -> Value {
    json!({
        "group": if grouped { Value::from(group) } else { Value::Null },
        "buckets": buckets.iter().map(|b| bucket_json(names, b)).collect::<Vec<_>>(),
    })
}

/// `series`: per group (its name and buckets) the JSON of a query answer or an update.
fn series_list<'a>(
    names: &[&'static str],
    grouped: bool,
    series: impl Iterator<Item = (&'a str, &'a [pb::Bucket])>,
) -> Value {
    series
        .map(|(group, buckets)| series_json(names, group, grouped, buckets))
        .collect::<Vec<_>>()
        .into()
}

/// A query's answer: `aggregations`, and per group its buckets.
pub fn query_json(response: &pb::QueryMetricsResponse, grouped: bool) -> Map<String, Value> {
    let names = names(&response.aggregations);
    let series = response.series.iter().map(|s| (s.group.as_str(), s.buckets.as_slice()));
    let mut body = Map::new();
    body.insert("aggregations".into(), json!(names));
    body.insert("series".into(), series_list(&names, grouped, series));
    body
}

/// An update frame's `series`: the changed buckets per group.
pub fn update_json(update: &pb::MetricUpdate, spec: &WatchSpec) -> Map<String, Value> {
    let names: Vec<&'static str> = spec.aggregations.iter().map(|a| aggregation_name(a.pb())).collect();
    let series = update.series.iter().map(|s| (s.group.as_str(), s.buckets.as_slice()));
    let mut body = Map::new();
    body.insert("series".into(), series_list(&names, spec.group_by.is_some(), series));
    body
}

pub fn metric_info_json(m: &pb::MetricInfo) -> Value {
    json!({
        "name": m.name,
        "label_keys": m.label_keys,
        "first_seen": rfc3339(&m.first_seen),
        "last_seen": rfc3339(&m.last_seen),
    })
}
