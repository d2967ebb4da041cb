//! What the benchmarks share: the 24-hour data set of one metric over 50
//! series (`host` × `region`), and loading it over gRPC.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use sextant_proto::analytics::v1 as pb;
use time::OffsetDateTime;

use crate::TestSystem;
use crate::system::AnalyticsClient;

pub const SERIES: usize = 50;
pub const DAY_US: i64 = 86_400_000_000;
/// The system the benchmarks measure, from the release binaries: a larger
/// analytics pool (the loads keep several batches in flight).
pub async fn system() -> anyhow::Result<TestSystem> {
    use anyhow::Context as _;
    TestSystem::builder()
        .env("SEXTANT_TELEMETRY__LOG_FILTER", "info")
        .analytics_env("SEXTANT_ANALYTICS__DATABASE__MAX_CONNECTIONS", "16")
        .start()
        .await
        .context("no servers: set SEXTANT_TEST_DATABASE_URL and SEXTANT_TEST_AMQP_URL (make bench does)")
}

/// An environment variable as a number, or `default`.
pub fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Series `s`: its host and region.
pub fn labels_of(s: usize) -> (String, String) {
    (format!("h{:02}", s / 3), format!("r{}", s % 3))
}

/// The data set: event `i` of `n` over the 24 h ending at `end_us`.
pub struct DataSet {
    pub n: usize,
    pub start_us: i64,
    labels: Vec<HashMap<String, String>>,
}

impl DataSet {
    pub fn new(n: usize, end_us: i64) -> Self {
        let labels = (0..SERIES)
            .map(|s| {
                let (host, region) = labels_of(s);
                HashMap::from([("host".to_owned(), host), ("region".to_owned(), region)])
            })
            .collect();
        Self {
            n,
            start_us: end_us - DAY_US,
            labels,
        }
    }

    pub fn ts_us(&self, i: usize) -> i64 {
        self.start_us + (i as i128 * i128::from(DAY_US) / self.n as i128) as i64
    }

    /// A latency-like value: mostly 20–80, a long tail to ~2,000.
    pub fn value(i: usize) -> f64 {
        let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 29;
        let u = (x % 10_000) as f64 / 10_000.0;
        20.0 + 60.0 * u + if x.is_multiple_of(97) { 1500.0 * u } else { 0.0 }
    }

    pub fn event(&self, metric: &str, i: usize) -> pb::MetricEvent {
        let ts = self.ts_us(i);
        pb::MetricEvent {
            name: metric.to_owned(),
            ts: Some(prost_types::Timestamp {
                seconds: ts.div_euclid(1_000_000),
                nanos: (ts.rem_euclid(1_000_000) * 1000) as i32,
            }),
            value: Self::value(i),
            labels: self.labels[i % SERIES].clone(),
            stale: false,
        }
    }

    pub fn json(&self, metric: &str, i: usize) -> Value {
        let ts = OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.ts_us(i)) * 1000).unwrap();
        let (host, region) = labels_of(i % SERIES);
        json!({
            "name": metric,
            "ts": ts.format(&time::format_description::well_known::Rfc3339).unwrap(),
            "value": Self::value(i),
            "labels": {"host": host, "region": region},
        })
    }
}

/// Sends `data` over gRPC in batches of `batch`, `in_flight` at once; events/s.
pub async fn ingest_grpc(
    client: &AnalyticsClient,
    data: &Arc<DataSet>,
    metric: &str,
    batch: usize,
    in_flight: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let batches = data.n.div_ceil(batch);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let (mut client, data, next, metric) = (client.clone(), data.clone(), next.clone(), metric.to_owned());
        tasks.push(tokio::spawn(async move {
            loop {
                let b = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if b >= batches {
                    return anyhow::Ok(());
                }
                let events = (b * batch..((b + 1) * batch).min(data.n))
                    .map(|i| data.event(&metric, i))
                    .collect::<Vec<_>>();
                let count = events.len() as u32;
                let answer = client
                    .ingest_events(pb::IngestEventsRequest {
                        events,
                        idempotency_key: String::new(),
                        metadata: Vec::new(),
                    })
                    .await?
                    .into_inner();
                anyhow::ensure!(answer.accepted == count, "batch {b}: {:?}", answer.rejected.first());
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(data.n as f64 / started.elapsed().as_secs_f64())
}
