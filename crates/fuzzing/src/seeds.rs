//! Valid inputs for each target, the corpus a fuzzing run starts from
//! (`make fuzz` writes them out with `sextant-fuzz-seeds`): a fuzzer that
//! starts from real requests reaches the mapping and evaluation code at
//! once instead of spending its time discovering the framing.

use actix_http::ws::{OpCode, Parser};
use bytes::BytesMut;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint, metric, number_data_point,
    summary_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use sextant_proto::prometheus as prom;

/// The seeds of the target named `target` (one of [`crate::TARGETS`]).
pub fn of(target: &str) -> Vec<Vec<u8>> {
    match target {
        "remote_write" => remote_write(),
        "otlp_protobuf" => otlp().iter().map(|r| r.encode_to_vec()).collect(),
        "otlp_json" => otlp().iter().map(|r| serde_json::to_vec(r).unwrap()).collect(),
        "promql" => PROMQL.iter().map(|q| q.as_bytes().to_vec()).collect(),
        "events_body" => EVENTS.iter().map(|b| b.as_bytes().to_vec()).collect(),
        "ws_frames" => ws_frames(),
        other => panic!("no fuzz target is named {other}"),
    }
}

const T0_MS: i64 = 1_750_000_000_000;

fn label(name: &str, value: &str) -> prom::Label {
    prom::Label {
        name: name.into(),
        value: value.into(),
    }
}

fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> prom::TimeSeries {
    prom::TimeSeries {
        labels: labels.iter().map(|(n, v)| label(n, v)).collect(),
        samples: samples
            .iter()
            .map(|(t, v)| prom::Sample {
                value: *v,
                timestamp: T0_MS + t,
            })
            .collect(),
        ..Default::default()
    }
}

fn snappy(write: &prom::WriteRequest) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(&write.encode_to_vec()).unwrap()
}

fn remote_write() -> Vec<Vec<u8>> {
    let stale = f64::from_bits(sextant_gateway::convert::remote_write::STALE_NAN);
    let ordinary = prom::WriteRequest {
        timeseries: vec![
            series(
                &[("__name__", "http_requests_total"), ("code", "200"), ("job", "api")],
                &[(0, 1.0), (15_000, 4.0), (30_000, 9.0)],
            ),
            series(
                &[("__name__", "up"), ("instance", "a:9100"), ("job", "node")],
                &[(0, 1.0), (15_000, stale)],
            ),
            series(&[("__name__", "latency_seconds_bucket"), ("le", "+Inf")], &[(0, 3.0)]),
        ],
        metadata: vec![prom::MetricMetadata {
            r#type: prom::metric_metadata::MetricType::Counter as i32,
            metric_family_name: "http_requests_total".into(),
            help: "Requests served.".into(),
            unit: String::new(),
        }],
    };
    let metadata_only = prom::WriteRequest {
        metadata: ordinary.metadata.clone(),
        ..Default::default()
    };
    let refused = prom::WriteRequest {
        timeseries: vec![
            series(&[("job", "no-name")], &[(0, 1.0)]),
            series(&[("__name__", "x"), ("b", "1"), ("a", "2")], &[(0, 1.0)]),
            series(&[("__name__", "x"), ("a", "1"), ("a", "2")], &[(0, f64::NAN)]),
            series(&[("__name__", "old")], &[(-T0_MS, 1.0)]),
        ],
        ..Default::default()
    };
    [ordinary, metadata_only, refused].iter().map(snappy).collect()
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn metric(name: &str, unit: &str, data: metric::Data) -> Metric {
    Metric {
        name: name.into(),
        description: format!("{name}, as a seed"),
        unit: unit.into(),
        data: Some(data),
        ..Default::default()
    }
}

fn number(value: f64, attributes: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        time_unix_nano: 1_750_000_000_000_000_000,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    }
}

fn otlp() -> Vec<ExportMetricsServiceRequest> {
    let cumulative = AggregationTemporality::Cumulative as i32;
    let metrics = vec![
        metric(
            "queue.depth",
            "{items}",
            metric::Data::Gauge(Gauge {
                data_points: vec![number(42.5, vec![text("queue", "emails")])],
            }),
        ),
        metric(
            "http.server.requests",
            "1",
            metric::Data::Sum(Sum {
                data_points: vec![number(12.0, vec![text("http.route", "/api")])],
                aggregation_temporality: cumulative,
                is_monotonic: true,
            }),
        ),
        metric(
            "http.server.duration",
            "s",
            metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    time_unix_nano: 1_750_000_000_000_000_000,
                    count: 4,
                    sum: Some(3.25),
                    bucket_counts: vec![1, 2, 1],
                    explicit_bounds: vec![0.5, 1.0],
                    ..Default::default()
                }],
                aggregation_temporality: cumulative,
            }),
        ),
        metric(
            "rpc.latency",
            "ms",
            metric::Data::Summary(Summary {
                data_points: vec![SummaryDataPoint {
                    time_unix_nano: 1_750_000_000_000_000_000,
                    count: 3,
                    sum: 30.0,
                    quantile_values: vec![summary_data_point::ValueAtQuantile {
                        quantile: 0.5,
                        value: 9.0,
                    }],
                    ..Default::default()
                }],
            }),
        ),
        metric(
            "delta.counter",
            "1",
            metric::Data::Sum(Sum {
                data_points: vec![number(1.0, vec![])],
                aggregation_temporality: AggregationTemporality::Delta as i32,
                is_monotonic: true,
            }),
        ),
        metric(
            "exp.histogram",
            "s",
            metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint {
                    count: 1,
                    ..Default::default()
                }],
                aggregation_temporality: cumulative,
            }),
        ),
    ];
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    text("service.name", "checkout"),
                    text("service.namespace", "shop"),
                    text("service.instance.id", "pod-1"),
                    text("host.name", "node-7"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    vec![request, ExportMetricsServiceRequest::default()]
}

/// One of each construct of the subset (docs/prometheus.md), over the
/// metrics of the target's universe, and a few it refuses.
const PROMQL: &[&str] = &[
    "up",
    r#"up{job="api", instance!="b:1"}"#,
    r#"{__name__=~"req.*", code!~"5.."}"#,
    "up offset 1m",
    "rate(requests_total[1m])",
    "irate(requests_total[1m] offset 30s)",
    "increase(requests_total[2m])",
    "delta(up[1m])",
    "avg_over_time(up[1m])",
    "quantile_over_time(0.9, requests_total[2m])",
    "count_over_time(up[5m])",
    "last_over_time(up[1m])",
    "sum by (job) (rate(requests_total[1m]))",
    "avg without (code) (requests_total)",
    "topk(1, requests_total)",
    "bottomk(2, up)",
    "quantile(0.5, requests_total)",
    "count(up) by (job)",
    "requests_total / on(job) group_left up",
    "up * 2 + 1 > bool 1",
    "requests_total > 10 and up",
    "requests_total or up unless up",
    "histogram_quantile(0.9, sum by (le) (rate(latency_bucket[1m])))",
    "abs(ceil(floor(round(up, 0.5))))",
    "clamp_min(clamp_max(requests_total, 50), 1)",
    r#"absent(nonexistent{job="x"})"#,
    "time() - scalar(sum(up))",
    "vector(1) + 1",
    r#"label_replace(up, "host", "$1", "instance", "([^:]+):.*")"#,
    "-requests_total ^ 2 % 3",
    "(up)",
    r#""a string""#,
    "rate(requests_total[1m])[5m:1m]",
    "predict_linear(up[1m], 60)",
    "up @ 100",
];

const EVENTS: &[&str] = &[
    r#"{"events":[{"name":"cpu.load","ts":"2025-06-15T15:06:40Z","value":0.5,"labels":{"host":"a"}}]}"#,
    r#"{"events":[{"name":"x","ts":"2025-06-15T15:06:40.123456Z","value":1.0},{"name":"9bad","ts":"1999-01-01T00:00:00Z","value":-2,"labels":{"k":""}}]}"#,
    r#"{"events":[]}"#,
];

/// A client frame: masked, as RFC 6455 requires of clients.
fn frame(out: &mut BytesMut, payload: &str, op: OpCode, fin: bool) {
    Parser::write_message(out, payload.as_bytes(), op, fin, true);
}

fn ws_frames() -> Vec<Vec<u8>> {
    let ops = [
        r#"{"op":"ping","id":1}"#,
        r#"{"op":"subscribe","id":"a","topic":"jobs"}"#,
        r#"{"op":"subscribe","id":2,"topic":"job:0190b7a4-0000-7000-8000-000000000000","after_version":3}"#,
        r#"{"op":"subscribe","topic":"metric","query":{"metric":"cpu.load","aggregations":["avg","p95"],"window_seconds":300,"bucket_seconds":10,"filters":[{"label":"host","op":"in","values":["a","b"]}],"group_by":"host"}}"#,
        r#"{"op":"unsubscribe","topic":"alerts"}"#,
        r#"{"op":"dance"}"#,
    ];
    let mut seeds = Vec::new();
    for chunk in [255u8, 7] {
        let mut out = BytesMut::new();
        out.extend_from_slice(&[chunk]);
        for op in ops {
            frame(&mut out, op, OpCode::Text, true);
        }
        // A fragmented message with a ping between its fragments.
        frame(&mut out, r#"{"op":"subscribe","#, OpCode::Text, false);
        frame(&mut out, "", OpCode::Ping, true);
        frame(&mut out, r#""topic":"alerts"}"#, OpCode::Continue, true);
        frame(&mut out, "", OpCode::Close, true);
        seeds.push(out.to_vec());
    }
    seeds
}
