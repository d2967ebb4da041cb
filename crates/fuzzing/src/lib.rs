//! The bodies of Sextant's fuzz targets, one per parser of untrusted input,
//! each taking the bytes a client could send down the path the service
//! takes them (decode, map, check, answer) and asserting what must hold of
//! any input besides not panicking.
//!
//! `fuzz/` holds the cargo-fuzz targets that call these (`make fuzz`);
//! [`seeds`] gives each a starting corpus of valid inputs; and the inputs a
//! fuzzer found that once failed are kept in `fuzz/regressions/<target>/`
//! and replayed by this crate's tests in `make test`.

pub mod seeds;

use std::collections::HashMap;

use sextant_analytics::model::{self, EventRules};
use sextant_analytics::promql::{self, engine};
use sextant_gateway::convert::metrics::{IngestBody, MAX_EVENTS};
use sextant_gateway::convert::{otlp, prometheus, remote_write};
use sextant_gateway::ws::wire::{Inbound, Reader};
use sextant_gateway::ws::{protocol, topic};
use sextant_proto::analytics::v1 as pb;

/// A fuzz target: its name (as `fuzz/fuzz_targets/<name>.rs`) and body.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

pub const TARGETS: &[Target] = &[
    Target {
        name: "remote_write",
        run: remote_write,
    },
    Target {
        name: "otlp_protobuf",
        run: otlp_protobuf,
    },
    Target {
        name: "otlp_json",
        run: otlp_json,
    },
    Target {
        name: "promql",
        run: promql,
    },
    Target {
        name: "events_body",
        run: events_body,
    },
    Target {
        name: "ws_frames",
        run: ws_frames,
    },
];

/// The gateway's default ingest body limit; a remote-write body may
/// decompress to four times it.
const INGEST_BODY_LIMIT: usize = 8 << 20;

/// The analytics service's checks of each event, as ingest runs them, with
/// its default limits and a window around a fixed "now".
fn check_events(request: pb::IngestEventsRequest) {
    const NOW: i64 = 1_750_000_000_000_000;
    let rules = EventRules {
        max_labels: 16,
        max_label_value_len: 200,
        oldest: NOW - 7 * 86_400_000_000,
        newest: NOW + 600_000_000,
    };
    let raws: Vec<model::RawEvent> = request
        .events
        .into_iter()
        .map(sextant_analytics::convert::raw_event)
        .collect();
    model::fingerprint(&raws);
    for (index, raw) in raws.into_iter().enumerate() {
        let index = u32::try_from(index).unwrap();
        if let Err(rejection) = model::check_event(index, raw, &rules) {
            assert_eq!(rejection.index, index);
            assert!(!rejection.message.is_empty());
        }
    }
    for metadata in request.metadata {
        sextant_analytics::convert::metadata(metadata);
    }
}

/// `POST /prometheus/api/v1/write`: snappy, protobuf, the mapping to events.
pub fn remote_write(data: &[u8]) {
    let Ok(write) = remote_write::decode(data, 4 * INGEST_BODY_LIMIT) else {
        return;
    };
    let mapped = remote_write::to_ingest(&write);
    let total: usize = write
        .timeseries
        .iter()
        .map(|s| s.samples.len() + s.histograms.len())
        .sum();
    assert_eq!(mapped.samples, total);
    assert!(mapped.refused_samples <= mapped.samples);
    assert_eq!(mapped.origins.len(), mapped.request.events.len());
    assert!(mapped.request.events.len() + mapped.refused_samples <= mapped.samples);
    for origin in &mapped.origins {
        remote_write::describe(&write.timeseries[origin.series].labels);
    }
    check_events(mapped.request);
}

fn otlp(data: &[u8], encoding: otlp::Encoding) {
    let Ok(export) = otlp::decode(data, encoding) else {
        return;
    };
    let mapped = otlp::to_ingest(&export);
    assert!(mapped.refused_points <= mapped.points);
    assert!(mapped.refused.len() <= 10);
    assert_eq!(mapped.point_of.len(), mapped.request.events.len());
    assert!(mapped.point_of.iter().all(|p| *p < mapped.points));
    let answer = otlp::response(encoding, i64::from(mapped.refused_points), mapped.refused.join("; "));
    if encoding == otlp::Encoding::Json {
        serde_json::from_slice::<serde_json::Value>(&answer).unwrap();
    }
    check_events(mapped.request);
}

/// `POST /otlp/v1/metrics` with `Content-Type: application/x-protobuf`.
pub fn otlp_protobuf(data: &[u8]) {
    otlp(data, otlp::Encoding::Protobuf);
}

/// `POST /otlp/v1/metrics` with `Content-Type: application/json`.
pub fn otlp_json(data: &[u8]) {
    otlp(data, otlp::Encoding::Json);
}

/// The series the PromQL target's selectors read: two metrics, a counter
/// that resets, a series that goes stale, classic histogram buckets.
fn universe() -> Vec<engine::Series> {
    let labels = |pairs: &[(&str, &str)]| -> engine::Labels {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    };
    let every = |step: i64, f: &dyn Fn(i64) -> f64| -> Vec<(i64, f64)> { (0..=40).map(|i| (i * step, f(i))).collect() };
    let mut stale = every(15_000, &|i| i as f64);
    stale.truncate(20);
    stale.push((300_000, f64::from_bits(engine::STALE_NAN)));
    let mut out = vec![
        engine::Series {
            labels: labels(&[("__name__", "up"), ("job", "api"), ("instance", "a:1")]),
            samples: every(15_000, &|_| 1.0),
        },
        engine::Series {
            labels: labels(&[("__name__", "up"), ("job", "api"), ("instance", "b:1")]),
            samples: stale,
        },
        engine::Series {
            labels: labels(&[("__name__", "requests_total"), ("job", "api"), ("code", "200")]),
            samples: every(15_000, &|i| ((i % 17) * 10) as f64),
        },
        engine::Series {
            labels: labels(&[("__name__", "requests_total"), ("job", "web"), ("code", "500")]),
            samples: every(10_000, &|i| (i * i) as f64 / 3.0),
        },
    ];
    for (le, f) in [("0.1", 1.0), ("1", 3.0), ("+Inf", 4.0)] {
        out.push(engine::Series {
            labels: labels(&[("__name__", "latency_bucket"), ("job", "api"), ("le", le)]),
            samples: every(15_000, &|i| f * i as f64),
        });
    }
    out
}

/// A query as the API evaluates it: parse, plan, load (here from
/// [`universe`]), evaluate, answer, render as Prometheus' JSON.
fn evaluate(expr: &promql_parser::parser::Expr, steps: engine::Steps, universe: &[engine::Series]) {
    let range = steps.step > 0;
    let Ok(needs) = engine::plan(expr, &steps) else {
        return;
    };
    let mut data = HashMap::new();
    for need in needs {
        let selected = universe
            .iter()
            .filter(|s| engine::matches(&need.matchers, &s.labels))
            .map(|s| engine::Series {
                labels: s.labels.clone(),
                samples: engine::window(&s.samples, need.from, need.to).to_vec(),
            })
            .collect::<Vec<_>>();
        data.insert(need.key, selected);
    }
    let engine = engine::Engine::new(steps, data, 100_000);
    let Ok(value) = engine.evaluate(expr) else {
        return;
    };
    let Ok(response) = promql::answer(&engine, value, range) else {
        return;
    };
    let json = prometheus::query_data(&response);
    serde_json::to_string(&json).unwrap();
}

/// `query` and `query_range`'s PromQL, as an instant query and as a range
/// query over ten minutes at a 15 s step.
pub fn promql(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(expr) = promql::parse::parse(text) else {
        return;
    };
    let universe = universe();
    let lookback = 300_000;
    for steps in [
        engine::Steps {
            start: 600_000,
            end: 600_000,
            step: 0,
            lookback,
        },
        engine::Steps {
            start: 0,
            end: 600_000,
            step: 15_000,
            lookback,
        },
    ] {
        evaluate(&expr, steps, &universe);
    }
}

/// `POST /api/v1/events`: the gateway's JSON checks, then the analytics
/// service's per-event checks.
pub fn events_body(data: &[u8]) {
    let Ok(body) = sextant_gateway::error::parse_json::<IngestBody>(data) else {
        return;
    };
    let Ok(request) = body.request(String::new()) else {
        return;
    };
    assert!(request.events.len() <= MAX_EVENTS);
    check_events(request);
}

/// What a client sends on a WebSocket: RFC 6455 frames (fed to the reader
/// in reads of a size the first byte picks), each whole text message parsed
/// as an op and a subscribe's topic resolved.
pub fn ws_frames(data: &[u8]) {
    const MAX_MESSAGE: usize = 4096;
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut reader = Reader::new(MAX_MESSAGE, &[]);
    for piece in data.chunks(chunk) {
        reader.buffer().extend_from_slice(piece);
        loop {
            match reader.next_message() {
                Ok(Some(Inbound::Text(text))) => {
                    assert!(text.len() <= MAX_MESSAGE);
                    if let Ok(text) = std::str::from_utf8(&text) {
                        op(text);
                    }
                }
                Ok(Some(Inbound::Binary(bytes) | Inbound::Ping(bytes))) => assert!(bytes.len() <= MAX_MESSAGE),
                Ok(Some(Inbound::Pong | Inbound::Close)) => {}
                Ok(None) => break,
                // The session closes the connection: nothing more is read.
                Err(_) => return,
            }
        }
    }
}

fn op(text: &str) {
    match protocol::parse(text) {
        Ok(protocol::ClientFrame::Subscribe {
            topic,
            query,
            after_version,
            ..
        }) => {
            if let Ok((topic::Topic::Metric(spec), name)) = topic::Topic::parse(&topic, query) {
                spec.request(after_version.unwrap_or(0));
                // The canonical name names the same topic.
                let (again, _) = topic::Topic::parse(&name, None).unwrap();
                assert_eq!(again, topic::Topic::Metric(spec));
            }
        }
        Ok(_) => {}
        Err(frame) => {
            frame.to_text();
        }
    }
}
