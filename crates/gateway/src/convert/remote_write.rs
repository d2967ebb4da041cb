//! Prometheus remote-write 1.0 → the analytics service's ingest request.
//!
//! [`decode`] undoes the wire format (snappy block compression around a
//! protobuf `WriteRequest`), bounded so a small body cannot claim a huge
//! one; [`to_ingest`] maps each sample to a Sextant event: `__name__` is the
//! metric, the other labels are labels, an empty label value is no label (as
//! in Prometheus), the stale marker becomes a staleness marker. A series the
//! specification forbids (no `__name__`, duplicate or unsorted label names)
//! or that carries native histograms is refused whole, with its reason.

use std::collections::HashMap;
use std::fmt::Write as _;

use prost::Message as _;
use sextant_proto::analytics::v1 as pb;
use sextant_proto::prometheus as prom;

/// Prometheus' staleness marker: a NaN with this exact bit pattern.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("the body is not snappy block-compressed data: {0}")]
    Snappy(String),
    #[error("the body decompresses to {0} bytes; at most {1} are accepted")]
    TooLarge(usize, usize),
    #[error("the body is not a protobuf prometheus.WriteRequest: {0}")]
    Protobuf(String),
}

/// The `WriteRequest` in `body`, which decompresses to at most `max_len` bytes.
pub fn decode(body: &[u8], max_len: usize) -> Result<prom::WriteRequest, DecodeError> {
    let len = snap::raw::decompress_len(body).map_err(|e| DecodeError::Snappy(e.to_string()))?;
    if len > max_len {
        return Err(DecodeError::TooLarge(len, max_len));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| DecodeError::Snappy(e.to_string()))?;
    prom::WriteRequest::decode(raw.as_slice()).map_err(|e| DecodeError::Protobuf(e.to_string()))
}

/// Where an event of the ingest request came from, to name it in a refusal.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    /// Index of the series in the write request.
    pub series: usize,
    /// The sample's timestamp, in milliseconds.
    pub ts_ms: i64,
}

/// The ingest request, with each event's origin, and the refusals found
/// before any event was made (one line each).
#[derive(Debug, Default)]
pub struct Mapped {
    pub request: pb::IngestEventsRequest,
    pub origins: Vec<Origin>,
    pub refused: Vec<String>,
    /// Samples refused here (a refused series refuses all of its samples).
    pub refused_samples: usize,
    pub samples: usize,
}

pub fn to_ingest(write: &prom::WriteRequest) -> Mapped {
    let mut out = Mapped::default();
    for (index, series) in write.timeseries.iter().enumerate() {
        let count = series.samples.len() + series.histograms.len();
        out.samples += count;
        let problem = if series.histograms.is_empty() {
            check_labels(&series.labels).err()
        } else {
            Some("carries native histogram samples, which Sextant does not store (send classic histograms)".into())
        };
        if let Some(problem) = problem {
            out.refused
                .push(format!("series {}: {problem}", describe(&series.labels)));
            out.refused_samples += count;
            continue;
        }
        let mut name = String::new();
        let mut labels = HashMap::with_capacity(series.labels.len().saturating_sub(1));
        for label in &series.labels {
            if label.name == "__name__" {
                name.clone_from(&label.value);
            } else if !label.value.is_empty() {
                labels.insert(label.name.clone(), label.value.clone());
            }
        }
        let last = series.samples.len().saturating_sub(1);
        for (i, sample) in series.samples.iter().enumerate() {
            out.origins.push(Origin {
                series: index,
                ts_ms: sample.timestamp,
            });
            let stale = sample.value.to_bits() == STALE_NAN;
            out.request.events.push(pb::MetricEvent {
                name: if i == last {
                    std::mem::take(&mut name)
                } else {
                    name.clone()
                },
                ts: Some(timestamp_ms(sample.timestamp)),
                value: if stale { 0.0 } else { sample.value },
                labels: if i == last {
                    std::mem::take(&mut labels)
                } else {
                    labels.clone()
                },
                stale,
            });
        }
    }
    out.request.metadata = write.metadata.iter().map(metadata).collect();
    out
}

/// Remote-write's label rules: `__name__` present and not empty, names
/// unique and sorted.
fn check_labels(labels: &[prom::Label]) -> Result<(), String> {
    for pair in labels.windows(2) {
        match pair[0].name.cmp(&pair[1].name) {
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Equal => return Err(format!("label name {:?} appears twice", pair[0].name)),
            std::cmp::Ordering::Greater => {
                return Err(format!(
                    "labels are not sorted by name ({:?} before {:?})",
                    pair[0].name, pair[1].name
                ));
            }
        }
    }
    match labels.iter().find(|l| l.name == "__name__") {
        Some(l) if !l.value.is_empty() => Ok(()),
        _ => Err("has no __name__ label (the metric name)".into()),
    }
}

/// A series as Prometheus writes it: `name{a="b", …}`, cut to a readable length.
pub fn describe(labels: &[prom::Label]) -> String {
    let name = labels
        .iter()
        .find(|l| l.name == "__name__")
        .map_or("", |l| l.value.as_str());
    let mut out = String::from(name);
    out.push('{');
    for (i, label) in labels.iter().filter(|l| l.name != "__name__").enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{}={:?}", label.name, label.value);
    }
    out.push('}');
    if out.chars().count() > 200 {
        out = out.chars().take(197).collect::<String>() + "...";
    }
    out
}

fn timestamp_ms(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

fn metadata(m: &prom::MetricMetadata) -> pb::MetricMetadata {
    use prom::metric_metadata::MetricType;
    let kind = match MetricType::try_from(m.r#type).unwrap_or(MetricType::Unknown) {
        MetricType::Unknown => "unknown",
        MetricType::Counter => "counter",
        MetricType::Gauge => "gauge",
        MetricType::Histogram => "histogram",
        MetricType::Gaugehistogram => "gaugehistogram",
        MetricType::Summary => "summary",
        MetricType::Info => "info",
        MetricType::Stateset => "stateset",
    };
    pb::MetricMetadata {
        metric: m.metric_family_name.clone(),
        r#type: kind.to_owned(),
        help: m.help.clone(),
        unit: m.unit.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(name: &str, value: &str) -> prom::Label {
        prom::Label {
            name: name.into(),
            value: value.into(),
        }
    }

    fn series(labels: Vec<prom::Label>, samples: &[(i64, f64)]) -> prom::TimeSeries {
        prom::TimeSeries {
            labels,
            samples: samples
                .iter()
                .map(|&(timestamp, value)| prom::Sample { value, timestamp })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn samples_become_events_and_the_stale_nan_a_marker() {
        let write = prom::WriteRequest {
            timeseries: vec![series(
                vec![label("__name__", "up"), label("empty", ""), label("job", "node")],
                &[(1_700_000_000_123, 1.0), (1_700_000_001_000, f64::from_bits(STALE_NAN))],
            )],
            metadata: vec![],
        };
        let mapped = to_ingest(&write);
        assert!(mapped.refused.is_empty());
        let events = &mapped.request.events;
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].name, "up");
        assert_eq!(events[0].labels, HashMap::from([("job".to_owned(), "node".to_owned())]));
        assert_eq!(
            events[0].ts.as_ref().map(|t| (t.seconds, t.nanos)),
            Some((1_700_000_000, 123_000_000))
        );
        assert!(!events[0].stale);
        assert!(events[1].stale);
        assert_eq!(events[1].labels, events[0].labels);
        // An ordinary NaN is a value (which the analytics service refuses), not a marker.
        let nan = to_ingest(&prom::WriteRequest {
            timeseries: vec![series(vec![label("__name__", "x")], &[(0, f64::NAN)])],
            metadata: vec![],
        });
        assert!(!nan.request.events[0].stale);
    }

    #[test]
    fn series_that_break_the_label_rules_are_refused_whole() {
        let write = prom::WriteRequest {
            timeseries: vec![
                series(vec![label("job", "a")], &[(1, 1.0), (2, 2.0)]),
                series(
                    vec![label("__name__", "x"), label("a", "1"), label("a", "2")],
                    &[(1, 1.0)],
                ),
                series(
                    vec![label("__name__", "x"), label("b", "1"), label("a", "2")],
                    &[(1, 1.0)],
                ),
                series(vec![label("__name__", "ok")], &[(1, 1.0)]),
            ],
            metadata: vec![],
        };
        let mapped = to_ingest(&write);
        assert_eq!(mapped.request.events.len(), 1);
        assert_eq!(mapped.refused_samples, 4);
        assert_eq!(mapped.samples, 5);
        assert!(mapped.refused[0].contains("no __name__"), "{:?}", mapped.refused);
        assert!(mapped.refused[1].contains("appears twice"));
        assert!(mapped.refused[2].contains("not sorted"));
    }

    #[test]
    fn decoding_is_bounded_and_names_what_is_wrong() {
        let write = prom::WriteRequest {
            timeseries: vec![series(vec![label("__name__", "up")], &[(1, 1.0)])],
            metadata: vec![],
        };
        let body = snap::raw::Encoder::new().compress_vec(&write.encode_to_vec()).unwrap();
        assert_eq!(decode(&body, 1 << 20).unwrap(), write);
        assert!(matches!(decode(&body, 4), Err(DecodeError::TooLarge(_, 4))));
        assert!(matches!(
            decode(b"\xff\xff\xff\x7f", 1 << 20),
            Err(DecodeError::TooLarge(..))
        ));
        assert!(matches!(decode(b"not snappy", 1 << 20), Err(DecodeError::Snappy(_))));
        let junk = snap::raw::Encoder::new().compress_vec(b"\x0a\xff\xff").unwrap();
        assert!(matches!(decode(&junk, 1 << 20), Err(DecodeError::Protobuf(_))));
    }
}
