//! OTLP/HTTP metrics → the analytics service's ingest request, with the
//! OpenTelemetry → Prometheus compatibility mapping
//! (https://opentelemetry.io/docs/specs/otel/compatibility/prometheus_and_openmetrics/):
//!
//! - names: characters outside `[a-zA-Z0-9_:]` become `_` (a leading digit
//!   gets a `_` before it); attribute keys likewise, outside `[a-zA-Z0-9_]`;
//! - resource: `service.namespace`/`service.name` is `job`,
//!   `service.instance.id` is `instance`; other resource and scope
//!   attributes are not kept;
//! - gauge → the value; monotonic cumulative sum → a counter named
//!   `…_total`; non-monotonic cumulative sum → a gauge; explicit-bucket
//!   cumulative histogram → `…_bucket{le}` (cumulative counts, `+Inf` last),
//!   `…_sum`, `…_count`; summary → `…{quantile}`, `…_sum`, `…_count`;
//! - a point flagged "no recorded value" is a staleness marker;
//! - refused per point, with the reason: delta (or unspecified)
//!   temporality, exponential histograms, a point without a time or value,
//!   a histogram whose bucket counts add up past a 64-bit count.

use std::collections::HashMap;

use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, metric, number_data_point};
use prost::Message as _;
use sextant_proto::analytics::v1 as pb;

/// The two encodings OTLP/HTTP allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    pub fn of(content_type: &str) -> Option<Self> {
        match content_type.split(';').next().unwrap_or("").trim() {
            "application/x-protobuf" => Some(Self::Protobuf),
            "application/json" => Some(Self::Json),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }
}

pub fn decode(body: &[u8], encoding: Encoding) -> Result<ExportMetricsServiceRequest, String> {
    match encoding {
        Encoding::Protobuf => ExportMetricsServiceRequest::decode(body)
            .map_err(|e| format!("the body is not a protobuf ExportMetricsServiceRequest: {e}")),
        Encoding::Json => {
            // serde would also take a JSON array for the message's fields.
            if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
                return Err("the body is not an OTLP/JSON ExportMetricsServiceRequest: expected a JSON object".into());
            }
            serde_json::from_slice(body)
                .map_err(|e| format!("the body is not an OTLP/JSON ExportMetricsServiceRequest: {e}"))
        }
    }
}

/// The export's answer: a partial success when points were refused.
pub fn response(encoding: Encoding, rejected: i64, message: String) -> Vec<u8> {
    let response = ExportMetricsServiceResponse {
        partial_success: (rejected > 0).then_some(ExportMetricsPartialSuccess {
            rejected_data_points: rejected,
            error_message: message,
        }),
    };
    match encoding {
        Encoding::Protobuf => response.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&response).unwrap_or_default(),
    }
}

/// `google.rpc.Status`, the body of an OTLP/HTTP error.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// An error body: `google.rpc.Status` with code INVALID_ARGUMENT (3) or
/// another gRPC code.
pub fn status_body(encoding: Encoding, code: i32, message: &str) -> Vec<u8> {
    match encoding {
        Encoding::Protobuf => RpcStatus {
            code,
            message: message.to_owned(),
        }
        .encode_to_vec(),
        Encoding::Json => {
            serde_json::to_vec(&serde_json::json!({ "code": code, "message": message })).unwrap_or_default()
        }
    }
}

#[derive(Debug, Default)]
pub struct Mapped {
    pub request: pb::IngestEventsRequest,
    /// For each event, the data point it came from (numbered in the request's order).
    pub point_of: Vec<u32>,
    /// Why points were refused here (the first ten).
    pub refused: Vec<String>,
    /// How many points were refused here.
    pub refused_points: u32,
    pub points: u32,
}

/// A Prometheus-compatible metric name.
pub fn metric_name(name: &str) -> String {
    sanitize(name, true)
}

fn sanitize(name: &str, colons: bool) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn value_text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::ArrayValue(a)) => {
            format!("[{}]", a.values.iter().map(value_text).collect::<Vec<_>>().join(","))
        }
        Some(any_value::Value::KvlistValue(kv)) => format!(
            "{{{}}}",
            kv.values
                .iter()
                .map(|k| format!("{}:{}", k.key, k.value.as_ref().map(value_text).unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        ),
        Some(any_value::Value::BytesValue(b)) => hex::encode(b),
        Some(any_value::Value::StringValueStrindex(_)) | None => String::new(),
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

/// The labels a resource gives every series under it.
fn resource_labels(attributes: &[KeyValue]) -> HashMap<String, String> {
    let mut labels = HashMap::new();
    let name = attribute(attributes, "service.name").map(value_text);
    let namespace = attribute(attributes, "service.namespace").map(value_text);
    let job = match (namespace, name) {
        (Some(ns), Some(name)) if !ns.is_empty() => Some(format!("{ns}/{name}")),
        (_, name) => name,
    };
    if let Some(job) = job.filter(|j| !j.is_empty()) {
        labels.insert("job".to_owned(), job);
    }
    if let Some(instance) = attribute(attributes, "service.instance.id")
        .map(value_text)
        .filter(|i| !i.is_empty())
    {
        labels.insert("instance".to_owned(), instance);
    }
    labels
}

fn point_labels(base: &HashMap<String, String>, attributes: &[KeyValue]) -> HashMap<String, String> {
    let mut labels = base.clone();
    for kv in attributes {
        let value = kv.value.as_ref().map(value_text).unwrap_or_default();
        if value.is_empty() {
            continue;
        }
        let key = sanitize(&kv.key, false);
        // Two keys that sanitise alike are joined with ';', as the specification says.
        labels
            .entry(key)
            .and_modify(|v: &mut String| {
                v.push(';');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    labels
}

fn timestamp_nanos(nanos: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: i64::try_from(nanos / 1_000_000_000).unwrap_or(i64::MAX),
        nanos: i32::try_from(nanos % 1_000_000_000).unwrap_or(0),
    }
}

/// The "no recorded value" flag: the series ended here.
const NO_RECORDED_VALUE: u32 = 1;

struct Out<'a> {
    mapped: &'a mut Mapped,
    point: u32,
    ts: prost_types::Timestamp,
    stale: bool,
}

impl<'a> Out<'a> {
    /// The events of a point at `time_unix_nano` with `flags`, numbered as
    /// the next point of `mapped`.
    fn new(mapped: &'a mut Mapped, time_unix_nano: u64, flags: u32) -> Self {
        Self {
            point: mapped.points,
            mapped,
            ts: timestamp_nanos(time_unix_nano),
            stale: flags & NO_RECORDED_VALUE != 0,
        }
    }

    fn event(&mut self, name: String, labels: HashMap<String, String>, value: f64) {
        self.mapped.request.events.push(pb::MetricEvent {
            name,
            ts: Some(self.ts),
            value: if self.stale { 0.0 } else { value },
            labels,
            stale: self.stale,
        });
        self.mapped.point_of.push(self.point);
    }
}

fn format_bound(bound: f64) -> String {
    if bound == f64::INFINITY {
        "+Inf".to_owned()
    } else {
        format!("{bound}")
    }
}

pub fn to_ingest(export: &ExportMetricsServiceRequest) -> Mapped {
    let mut mapped = Mapped::default();
    let cumulative = AggregationTemporality::Cumulative as i32;
    for rm in &export.resource_metrics {
        let base = resource_labels(rm.resource.as_ref().map_or(&[][..], |r| r.attributes.as_slice()));
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                let name = metric_name(&m.name);
                let mut refuse = |mapped: &mut Mapped, reason: String| {
                    mapped.points += 1;
                    mapped.refused_points += 1;
                    if mapped.refused.len() < 10 {
                        mapped.refused.push(format!("metric {:?}: {reason}", m.name));
                    }
                };
                let mut kind = "unknown";
                match &m.data {
                    None => {}
                    Some(metric::Data::Gauge(g)) => {
                        kind = "gauge";
                        for p in &g.data_points {
                            number_point(&mut mapped, &mut refuse, &name, &base, p);
                        }
                    }
                    Some(metric::Data::Sum(s)) => {
                        if s.aggregation_temporality != cumulative {
                            for _ in &s.data_points {
                                refuse(&mut mapped, "delta temporality is not supported; configure the exporter's temporality preference as cumulative".into());
                            }
                            continue;
                        }
                        let name = if s.is_monotonic {
                            kind = "counter";
                            if name.ends_with("_total") {
                                name.clone()
                            } else {
                                format!("{name}_total")
                            }
                        } else {
                            kind = "gauge";
                            name.clone()
                        };
                        for p in &s.data_points {
                            number_point(&mut mapped, &mut refuse, &name, &base, p);
                        }
                    }
                    Some(metric::Data::Histogram(h)) => {
                        kind = "histogram";
                        if h.aggregation_temporality != cumulative {
                            for _ in &h.data_points {
                                refuse(&mut mapped, "delta temporality is not supported; configure the exporter's temporality preference as cumulative".into());
                            }
                            continue;
                        }
                        for p in &h.data_points {
                            if p.time_unix_nano == 0 {
                                refuse(&mut mapped, "a data point has no time_unix_nano".into());
                                continue;
                            }
                            if !p.bucket_counts.is_empty() && p.bucket_counts.len() != p.explicit_bounds.len() + 1 {
                                refuse(
                                    &mut mapped,
                                    format!(
                                        "a histogram point has {} bucket counts for {} bounds (expected one more)",
                                        p.bucket_counts.len(),
                                        p.explicit_bounds.len()
                                    ),
                                );
                                continue;
                            }
                            if p.bucket_counts
                                .iter()
                                .try_fold(0u64, |a, c| a.checked_add(*c))
                                .is_none()
                            {
                                refuse(
                                    &mut mapped,
                                    "a histogram point's bucket counts add up to more than 2^64".into(),
                                );
                                continue;
                            }
                            let labels = point_labels(&base, &p.attributes);
                            let mut out = Out::new(&mut mapped, p.time_unix_nano, p.flags);
                            let mut cumulative_count = 0u64;
                            for (i, count) in p.bucket_counts.iter().enumerate() {
                                cumulative_count += count;
                                let bound = p.explicit_bounds.get(i).copied().unwrap_or(f64::INFINITY);
                                let mut l = labels.clone();
                                l.insert("le".into(), format_bound(bound));
                                out.event(format!("{name}_bucket"), l, cumulative_count as f64);
                            }
                            if let Some(sum) = p.sum {
                                out.event(format!("{name}_sum"), labels.clone(), sum);
                            }
                            out.event(format!("{name}_count"), labels, p.count as f64);
                            mapped.points += 1;
                        }
                    }
                    Some(metric::Data::ExponentialHistogram(h)) => {
                        for _ in &h.data_points {
                            refuse(
                                &mut mapped,
                                "exponential histograms are not supported; use explicit bucket histograms".into(),
                            );
                        }
                    }
                    Some(metric::Data::Summary(s)) => {
                        kind = "summary";
                        for p in &s.data_points {
                            if p.time_unix_nano == 0 {
                                refuse(&mut mapped, "a data point has no time_unix_nano".into());
                                continue;
                            }
                            let labels = point_labels(&base, &p.attributes);
                            let mut out = Out::new(&mut mapped, p.time_unix_nano, p.flags);
                            for q in &p.quantile_values {
                                let mut l = labels.clone();
                                l.insert("quantile".into(), format_bound(q.quantile));
                                out.event(name.clone(), l, q.value);
                            }
                            out.event(format!("{name}_sum"), labels.clone(), p.sum);
                            out.event(format!("{name}_count"), labels, p.count as f64);
                            mapped.points += 1;
                        }
                    }
                }
                if !m.description.is_empty() || !m.unit.is_empty() {
                    let metric = match kind {
                        "counter" if !name.ends_with("_total") => format!("{name}_total"),
                        _ => name.clone(),
                    };
                    mapped.request.metadata.push(pb::MetricMetadata {
                        metric,
                        r#type: kind.to_owned(),
                        help: m.description.clone(),
                        unit: m.unit.clone(),
                    });
                }
            }
        }
    }
    mapped
}

fn number_point(
    mapped: &mut Mapped,
    refuse: &mut impl FnMut(&mut Mapped, String),
    name: &str,
    base: &HashMap<String, String>,
    p: &opentelemetry_proto::tonic::metrics::v1::NumberDataPoint,
) {
    if p.time_unix_nano == 0 {
        refuse(mapped, "a data point has no time_unix_nano".into());
        return;
    }
    let stale = p.flags & NO_RECORDED_VALUE != 0;
    let value = match p.value {
        Some(number_data_point::Value::AsDouble(v)) => v,
        #[allow(clippy::cast_precision_loss)]
        Some(number_data_point::Value::AsInt(v)) => v as f64,
        None if stale => 0.0,
        None => {
            refuse(mapped, "a data point has no value".into());
            return;
        }
    };
    let labels = point_labels(base, &p.attributes);
    let mut out = Out::new(mapped, p.time_unix_nano, p.flags);
    out.event(name.to_owned(), labels, value);
    mapped.points += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys_follow_the_compatibility_specification() {
        assert_eq!(
            metric_name("http.server.request.duration"),
            "http_server_request_duration"
        );
        assert_eq!(metric_name("2xx-rate"), "_2xx_rate");
        assert_eq!(metric_name("job:rate5m"), "job:rate5m");
        assert_eq!(sanitize("k8s.pod:name", false), "k8s_pod_name");
    }

    #[test]
    fn a_histogram_whose_counts_overflow_is_refused_alone() {
        // Found by the otlp_protobuf fuzz target: the cumulative count overflowed.
        let json = br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[
            {"name":"latency","histogram":{"aggregationTemporality":2,"dataPoints":[
              {"timeUnixNano":"1700000000000000000","count":"2","bucketCounts":["18446744073709551615","1"],"explicitBounds":[1]},
              {"timeUnixNano":"1700000000000000000","count":"1","bucketCounts":["1","0"],"explicitBounds":[1]}]}}
          ]}]}]}"#;
        let mapped = to_ingest(&decode(json, Encoding::Json).unwrap());
        assert_eq!((mapped.points, mapped.refused_points), (2, 1));
        assert!(mapped.refused[0].contains("more than 2^64"), "{:?}", mapped.refused);
        assert_eq!(mapped.request.events.len(), 3, "the good point's two buckets and count");
    }

    #[test]
    fn json_and_protobuf_decode_alike() {
        let json = br#"{"resourceMetrics":[{"resource":{"attributes":[
            {"key":"service.name","value":{"stringValue":"checkout"}},
            {"key":"service.namespace","value":{"stringValue":"shop"}},
            {"key":"service.instance.id","value":{"stringValue":"i-1"}}]},
          "scopeMetrics":[{"metrics":[
            {"name":"queue.depth","unit":"1","gauge":{"dataPoints":[
              {"attributes":[{"key":"queue","value":{"stringValue":"emails"}}],"timeUnixNano":"1700000000000000000","asInt":"7"}]}},
            {"name":"requests","sum":{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[
              {"timeUnixNano":"1700000000000000000","asDouble":12.5}]}},
            {"name":"latency","histogram":{"aggregationTemporality":2,"dataPoints":[
              {"timeUnixNano":"1700000000000000000","count":"6","sum":3.5,"bucketCounts":["1","2","3"],"explicitBounds":[0.1,1]}]}},
            {"name":"deltas","sum":{"aggregationTemporality":1,"isMonotonic":true,"dataPoints":[
              {"timeUnixNano":"1700000000000000000","asDouble":1}]}}
          ]}]}]}"#;
        let export = decode(json, Encoding::Json).unwrap();
        let again = decode(&export.encode_to_vec(), Encoding::Protobuf).unwrap();
        assert_eq!(export, again);
        let mapped = to_ingest(&export);
        assert_eq!(mapped.points, 4);
        assert_eq!(mapped.refused.len(), 1, "{:?}", mapped.refused);
        assert!(mapped.refused[0].contains("delta temporality"));
        type Event = (String, Vec<(String, String)>, f64);
        let events: Vec<Event> = mapped
            .request
            .events
            .iter()
            .map(|e| {
                let mut labels: Vec<(String, String)> = e
                    .labels
                    .iter()
                    .filter(|(k, _)| *k != "job" && *k != "instance")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                labels.sort();
                (e.name.clone(), labels, e.value)
            })
            .collect();
        let le = |b: &str| vec![("le".to_owned(), b.to_owned())];
        assert_eq!(
            events,
            vec![
                ("queue_depth".into(), vec![("queue".into(), "emails".into())], 7.0),
                ("requests_total".into(), vec![], 12.5),
                ("latency_bucket".into(), le("0.1"), 1.0),
                ("latency_bucket".into(), le("1"), 3.0),
                ("latency_bucket".into(), le("+Inf"), 6.0),
                ("latency_sum".into(), vec![], 3.5),
                ("latency_count".into(), vec![], 6.0),
            ]
        );
        let first = &mapped.request.events[0];
        assert_eq!(first.labels["job"], "shop/checkout");
        assert_eq!(first.labels["instance"], "i-1");
        assert_eq!(mapped.point_of, vec![0, 1, 2, 2, 2, 2, 2]);
    }
}
