//! The Prometheus HTTP API's wire format: parameters in (times, durations)
//! and the JSON envelopes out, exactly as Prometheus documents them
//! (https://prometheus.io/docs/prometheus/latest/querying/api/).

use serde_json::{Map, Value, json};
use sextant_common::ErrorCode;
use sextant_proto::analytics::v1 as pb;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A time parameter: Unix seconds (with a fraction) or RFC 3339; in milliseconds.
pub fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(seconds) = text.parse::<f64>()
        && seconds.is_finite()
    {
        // Prometheus rounds to the millisecond.
        #[allow(clippy::cast_possible_truncation)]
        return Ok((seconds * 1000.0).round() as i64);
    }
    match OffsetDateTime::parse(text, &Rfc3339) {
        Ok(t) => i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
            .map_err(|_| format!("cannot parse {text:?} to a valid timestamp")),
        Err(_) => Err(format!("cannot parse {text:?} to a valid timestamp")),
    }
}

/// A duration parameter: seconds (with a fraction) or a Prometheus duration (`15s`, `1m30s`); in milliseconds.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    if let Ok(seconds) = text.parse::<f64>()
        && seconds.is_finite()
    {
        #[allow(clippy::cast_possible_truncation)]
        return Ok((seconds * 1000.0).round() as i64);
    }
    promql_parser::util::parse_duration(text)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .ok_or_else(|| format!("cannot parse {text:?} to a valid duration"))
}

/// A sample value as Prometheus writes it: the shortest decimal that reads
/// back the same, `+Inf`, `-Inf` or `NaN`.
pub fn value_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// A timestamp as Prometheus writes it: Unix seconds, a fraction only when there is one.
pub fn seconds(ms: i64) -> Value {
    if ms % 1000 == 0 {
        json!(ms / 1000)
    } else {
        json!(ms as f64 / 1000.0)
    }
}

fn point(ms: i64, v: f64) -> Value {
    json!([seconds(ms), value_text(v)])
}

fn metric(labels: &[pb::PromLabel]) -> Value {
    Value::Object(
        labels
            .iter()
            .map(|l| (l.name.clone(), Value::String(l.value.clone())))
            .collect::<Map<String, Value>>(),
    )
}

pub fn success(data: Value) -> Value {
    json!({ "status": "success", "data": data })
}

/// A query's `data`.
pub fn query_data(response: &pb::PromQueryResponse) -> Value {
    let result = match response.result_type.as_str() {
        "scalar" => point(response.timestamp_ms, response.scalar),
        "string" => json!([seconds(response.timestamp_ms), response.string]),
        "vector" => response
            .series
            .iter()
            .map(|s| {
                json!({
                    "metric": metric(&s.labels),
                    "value": point(s.timestamps_ms.first().copied().unwrap_or(response.timestamp_ms), s.values.first().copied().unwrap_or(f64::NAN)),
                })
            })
            .collect(),
        _ => response
            .series
            .iter()
            .map(|s| {
                json!({
                    "metric": metric(&s.labels),
                    "values": s.timestamps_ms.iter().zip(&s.values).map(|(t, v)| point(*t, *v)).collect::<Vec<_>>(),
                })
            })
            .collect(),
    };
    json!({ "resultType": response.result_type, "result": result })
}

pub fn series_data(response: &pb::PromSeriesResponse) -> Value {
    response.series.iter().map(|s| metric(&s.labels)).collect()
}

pub fn metadata_data(response: &pb::PromMetadataResponse, limit_per_metric: Option<usize>) -> Value {
    let mut out = Map::new();
    for m in &response.metadata {
        let entry = json!({ "type": m.r#type, "help": m.help, "unit": m.unit });
        let list = out.entry(m.metric.clone()).or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = list
            && limit_per_metric.is_none_or(|n| list.len() < n)
        {
            list.push(entry);
        }
    }
    Value::Object(out)
}

/// Prometheus' error types, by the status they are answered with.
pub fn error_type(code: ErrorCode) -> (u16, &'static str) {
    match code {
        ErrorCode::InvalidArgument | ErrorCode::MalformedRequest | ErrorCode::PayloadTooLarge => (400, "bad_data"),
        ErrorCode::Unimplemented | ErrorCode::FailedPrecondition => (422, "execution"),
        ErrorCode::DeadlineExceeded => (503, "timeout"),
        ErrorCode::Unavailable => (503, "unavailable"),
        ErrorCode::RateLimited => (429, "unavailable"),
        ErrorCode::NotFound => (404, "not_found"),
        ErrorCode::Unauthenticated => (401, "bad_data"),
        ErrorCode::MethodNotAllowed => (405, "bad_data"),
        ErrorCode::UnsupportedMediaType => (415, "bad_data"),
        _ => (500, "internal"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_read_as_prometheus_reads_them() {
        assert_eq!(parse_time("1700000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("1700000000.123"), Ok(1_700_000_000_123));
        assert_eq!(parse_time("4"), Ok(4000));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("2023-11-14T22:13:20.5+01:00"), Ok(1_699_996_400_500));
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("NaN").is_err());
        assert_eq!(parse_duration("15"), Ok(15_000));
        assert_eq!(parse_duration("0.5"), Ok(500));
        assert_eq!(parse_duration("1m30s"), Ok(90_000));
        assert_eq!(parse_duration("1h"), Ok(3_600_000));
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn values_are_written_as_prometheus_writes_them() {
        assert_eq!(value_text(1.0), "1");
        assert_eq!(value_text(0.1), "0.1");
        assert_eq!(value_text(1e21), "1000000000000000000000");
        assert_eq!(value_text(-2.5e-7), "-0.00000025");
        assert_eq!(value_text(f64::INFINITY), "+Inf");
        assert_eq!(value_text(f64::NEG_INFINITY), "-Inf");
        assert_eq!(value_text(f64::NAN), "NaN");
        assert_eq!(seconds(4000), json!(4));
        assert_eq!(seconds(1_700_000_000_123), json!(1_700_000_000.123));
    }
}
