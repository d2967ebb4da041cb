//! Protobuf ↔ domain for metrics and queries, and the conversions every
//! feature shares (times, durations, aggregations, matchers, paging). Alert
//! rules convert in `alerts::convert`, next to the rules.

use sextant_common::ErrorCode;
use sextant_proto::analytics::v1 as pb;
use sextant_proto::common::v1::PageResponse;
use sextant_proto::common::v1::label_matcher::Op;
use tonic::Status;

use crate::model::{
    self, Aggregation, BucketResult, Matcher, Micros, Query, RawEvent, Rejection, SECOND, SeriesResult, valid_name,
};

/// The widest bucket: 366 days.
pub const MAX_BUCKET: Micros = 366 * 24 * 3600 * SECOND;

pub fn invalid(message: impl Into<String>) -> Status {
    ErrorCode::InvalidArgument.status(message)
}

/// The most items a list page holds, and how many when the caller asks for 0.
pub const MAX_PAGE_SIZE: u32 = 1000;
pub const DEFAULT_PAGE_SIZE: u32 = 100;

/// A page of `rows`, read one beyond `size` to tell whether another page
/// follows: the first `size`, and the page answer, whose cursor is that of
/// the last row (`cursor`) when more follow.
pub fn page_of<T>(mut rows: Vec<T>, size: i64, cursor: impl Fn(&T) -> String) -> (Vec<T>, PageResponse) {
    let size = usize::try_from(size).unwrap_or(0);
    let more = rows.len() > size;
    rows.truncate(size);
    let next_cursor = match rows.last() {
        Some(last) if more => cursor(last),
        _ => String::new(),
    };
    (rows, PageResponse { next_cursor })
}

/// A list request's page size, checked.
pub fn page_size(size: u32) -> Result<i64, Status> {
    match size {
        0 => Ok(i64::from(DEFAULT_PAGE_SIZE)),
        1..=MAX_PAGE_SIZE => Ok(i64::from(size)),
        _ => Err(invalid(format!("page.page_size must be at most {MAX_PAGE_SIZE}"))),
    }
}

/// A timestamp in microseconds; `None` when out of range.
pub fn micros(t: &prost_types::Timestamp) -> Option<Micros> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return None;
    }
    let micros = i128::from(t.seconds) * 1_000_000 + i128::from(t.nanos / 1000);
    // Years 1 to 9999, as RFC 3339 can write them.
    (-62_135_596_800_000_000..=253_402_300_799_999_999)
        .contains(&micros)
        .then(|| i64::try_from(micros).ok())
        .flatten()
}

pub fn timestamp(micros: Micros) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(SECOND),
        nanos: i32::try_from(micros.rem_euclid(SECOND) * 1000).unwrap_or(0),
    }
}

pub fn offset_timestamp(t: time::OffsetDateTime) -> prost_types::Timestamp {
    timestamp(model::micros_of(t))
}

/// A duration in microseconds; `None` when negative or not representable.
pub fn duration(d: &prost_types::Duration) -> Option<Micros> {
    if d.seconds < 0 || d.nanos < 0 {
        return None;
    }
    d.seconds.checked_mul(SECOND)?.checked_add(i64::from(d.nanos / 1000))
}

pub fn raw_event(event: pb::MetricEvent) -> RawEvent {
    let mut labels: Vec<(String, String)> = event.labels.into_iter().collect();
    labels.sort();
    RawEvent {
        name: event.name,
        ts: event.ts.as_ref().and_then(micros),
        value: event.value,
        labels,
        stale: event.stale,
    }
}

pub fn metadata(m: pb::MetricMetadata) -> model::Metadata {
    model::Metadata {
        metric: m.metric,
        kind: m.r#type,
        help: m.help,
        unit: m.unit,
    }
}

pub fn rejection(r: &Rejection) -> pb::Rejection {
    pb::Rejection {
        index: r.index,
        code: r.code.to_owned(),
        message: r.message.clone(),
        field: r.field.clone(),
    }
}

pub fn aggregation(value: i32) -> Option<Aggregation> {
    Some(match pb::Aggregation::try_from(value).ok()? {
        pb::Aggregation::Unspecified => return None,
        pb::Aggregation::Count => Aggregation::Count,
        pb::Aggregation::Sum => Aggregation::Sum,
        pb::Aggregation::Avg => Aggregation::Avg,
        pb::Aggregation::Min => Aggregation::Min,
        pb::Aggregation::Max => Aggregation::Max,
        pb::Aggregation::P50 => Aggregation::P50,
        pb::Aggregation::P90 => Aggregation::P90,
        pb::Aggregation::P95 => Aggregation::P95,
        pb::Aggregation::P99 => Aggregation::P99,
    })
}

pub fn aggregation_pb(a: Aggregation) -> pb::Aggregation {
    match a {
        Aggregation::Count => pb::Aggregation::Count,
        Aggregation::Sum => pb::Aggregation::Sum,
        Aggregation::Avg => pb::Aggregation::Avg,
        Aggregation::Min => pb::Aggregation::Min,
        Aggregation::Max => pb::Aggregation::Max,
        Aggregation::P50 => pb::Aggregation::P50,
        Aggregation::P90 => pb::Aggregation::P90,
        Aggregation::P95 => pb::Aggregation::P95,
        Aggregation::P99 => pb::Aggregation::P99,
    }
}

/// Filters must name a valid label and carry one value (`=`, `!=`) or at
/// least one (`in`, `not in`).
/// `field` names the matcher in errors, e.g. `query.filters[0]`.
pub(crate) fn matcher(m: sextant_proto::common::v1::LabelMatcher, field: &str) -> Result<Matcher, Status> {
    if !valid_name(&m.label) {
        return Err(invalid(format!("{field}.label {:?} {}", m.label, model::NAME_RULE)));
    }
    let one = |values: Vec<String>| {
        let [value]: [String; 1] = values
            .try_into()
            .map_err(|_| invalid(format!("{field}.values must hold exactly one value for = and !=")))?;
        Ok::<_, Status>(value)
    };
    let many = |values: Vec<String>| {
        if values.is_empty() {
            Err(invalid(format!("{field}.values must not be empty for in and not_in")))
        } else {
            Ok(values)
        }
    };
    if m.values.iter().any(|v| v.contains('\0')) {
        return Err(invalid(format!("{field}.values must not contain U+0000 (NUL)")));
    }
    match Op::try_from(m.op).unwrap_or(Op::Unspecified) {
        Op::Eq => Ok(Matcher::Eq(m.label, one(m.values)?)),
        Op::Neq => Ok(Matcher::Neq(m.label, one(m.values)?)),
        Op::In => Ok(Matcher::In(m.label, many(m.values)?)),
        Op::NotIn => Ok(Matcher::NotIn(m.label, many(m.values)?)),
        Op::Unspecified => Err(invalid(format!("{field}.op is required"))),
    }
}

pub(crate) fn matcher_pb(m: &Matcher) -> sextant_proto::common::v1::LabelMatcher {
    let (label, op, values) = match m {
        Matcher::Eq(l, v) => (l, Op::Eq, vec![v.clone()]),
        Matcher::Neq(l, v) => (l, Op::Neq, vec![v.clone()]),
        Matcher::In(l, vs) => (l, Op::In, vs.clone()),
        Matcher::NotIn(l, vs) => (l, Op::NotIn, vs.clone()),
    };
    sextant_proto::common::v1::LabelMatcher {
        label: label.clone(),
        op: op as i32,
        values,
    }
}

/// A query's parts other than its range.
pub fn query_shape(q: pb::MetricQuery) -> Result<Query, Status> {
    if !valid_name(&q.metric) {
        return Err(invalid(format!("query.metric {:?} {}", q.metric, model::NAME_RULE)));
    }
    if q.aggregations.is_empty() {
        return Err(invalid("query.aggregations must name at least one aggregation"));
    }
    if q.aggregations.len() > 16 {
        return Err(invalid("query.aggregations holds at most 16 aggregations"));
    }
    let aggregations = q
        .aggregations
        .iter()
        .map(|a| aggregation(*a).ok_or_else(|| invalid(format!("query.aggregations: unknown aggregation {a}"))))
        .collect::<Result<Vec<_>, _>>()?;
    if aggregations
        .iter()
        .enumerate()
        .any(|(i, a)| aggregations[..i].contains(a))
    {
        return Err(invalid("query.aggregations must not name an aggregation twice"));
    }
    let bucket = q
        .bucket
        .as_ref()
        .and_then(duration)
        .ok_or_else(|| invalid("query.bucket is required and must not be negative"))?;
    if bucket < SECOND || bucket % SECOND != 0 || bucket > MAX_BUCKET {
        return Err(invalid(
            "query.bucket must be a whole number of seconds, from 1s to 366 days",
        ));
    }
    if q.filters.len() > 32 {
        return Err(invalid("query.filters holds at most 32 matchers"));
    }
    let filters = q
        .filters
        .into_iter()
        .enumerate()
        .map(|(i, m)| matcher(m, &format!("query.filters[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let group_by = match q.group_by.as_str() {
        "" => None,
        label if valid_name(label) => Some(label.to_owned()),
        label => return Err(invalid(format!("query.group_by {label:?} {}", model::NAME_RULE))),
    };
    Ok(Query {
        metric: q.metric,
        aggregations,
        bucket,
        start: 0,
        end: 0,
        filters,
        group_by,
    })
}

/// A query with its range, as `QueryMetrics` takes it.
pub fn query(q: pb::MetricQuery) -> Result<Query, Status> {
    let range = q.range;
    let mut query = query_shape(q)?;
    let range = range.ok_or_else(|| invalid("query.range is required"))?;
    let start = range
        .start
        .as_ref()
        .and_then(micros)
        .ok_or_else(|| invalid("query.range.start is required and must be a valid time"))?;
    let end = range
        .end
        .as_ref()
        .and_then(micros)
        .ok_or_else(|| invalid("query.range.end is required and must be a valid time"))?;
    // An empty range (start = end) is a query with no buckets.
    if start > end {
        return Err(invalid("query.range.start must not be after query.range.end"));
    }
    query.start = start;
    query.end = end;
    Ok(query)
}

pub fn bucket(b: &BucketResult) -> pb::Bucket {
    pb::Bucket {
        start: Some(timestamp(b.start)),
        values: b.values.clone(),
        count: b.count,
    }
}

pub fn series(s: &SeriesResult) -> pb::Series {
    pb::Series {
        group: s.group.clone(),
        buckets: s.buckets.iter().map(bucket).collect(),
    }
}

pub fn query_response(query: &Query, series: &[SeriesResult]) -> pb::QueryMetricsResponse {
    pb::QueryMetricsResponse {
        aggregations: query.aggregations.iter().map(|a| aggregation_pb(*a) as i32).collect(),
        series: series.iter().map(self::series).collect(),
    }
}
