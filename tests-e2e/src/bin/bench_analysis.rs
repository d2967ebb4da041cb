//! `make bench-analysis`: an analysis report over 24 h of 50 metrics.
//!
//! Data set: `BENCH_EVENTS` (default 10,000,000) events over the last 24 h,
//! spread round-robin over 50 metrics (`svc.m00` … `svc.m49`), each with two
//! series (`host` a, b), ingested over gRPC in batches of 10,000.
//!
//! Measured: `CreateAnalysis` over the 24 h in 1-minute buckets with every
//! metric (summaries, avg and p95 chart series, anomaly and alert findings),
//! p50/p95 over `BENCH_ANALYSIS_RUNS` (default 10) runs over gRPC; and the
//! same through the gateway as a frontend asks (`POST /api/v1/analyses`, then
//! following the `analyze` job until it succeeds), 3 runs. Baseline: the
//! summaries alone (count, sum, avg, min, max and four `percentile_cont`s per
//! metric) as one SQL statement over the service's own raw events.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};
use sextant_proto::analytics::v1 as pb;
use sqlx::Connection as _;
use time::OffsetDateTime;

const METRICS: usize = 50;
const DAY_US: i64 = 86_400_000_000;
const TENANT: &str = "bench";

fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn value(i: usize) -> f64 {
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    let u = (x % 10_000) as f64 / 10_000.0;
    20.0 + 60.0 * u + if x.is_multiple_of(97) { 1500.0 * u } else { 0.0 }
}

fn ts(us: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: us.div_euclid(1_000_000),
        nanos: (us.rem_euclid(1_000_000) * 1000) as i32,
    }
}

fn stats(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0;
    format!("p50 {:.1} ms, p95 {:.1} ms (n = {})", at(0.5), at(0.95), samples.len())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = env_or("BENCH_EVENTS", 10_000_000);
    let runs = env_or("BENCH_ANALYSIS_RUNS", 10);
    let system = sextant_e2e::bench::system().await?;
    let client = system.analytics_client(TENANT).await;
    let now_us = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64;
    let end_us = now_us / 60_000_000 * 60_000_000 - 60_000_000;
    let start_us = end_us - DAY_US;
    println!("analysis benchmark: {n} events, {METRICS} metrics × 2 series, 24 h");

    let started = Instant::now();
    let batch = 10_000;
    let batches = n.div_ceil(batch);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (mut client, next) = (client.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let b = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if b >= batches {
                    return anyhow::Ok(());
                }
                let events: Vec<pb::MetricEvent> = (b * batch..((b + 1) * batch).min(n))
                    .map(|i| pb::MetricEvent {
                        name: format!("svc.m{:02}", i % METRICS),
                        ts: Some(ts(start_us + (i as i128 * i128::from(DAY_US) / n as i128) as i64)),
                        value: value(i),
                        labels: [("host".to_owned(), ["a", "b"][(i / METRICS) % 2].to_owned())].into(),
                        stale: false,
                    })
                    .collect();
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
    println!(
        "  loaded in {:.1} s ({:.0} events/s)",
        started.elapsed().as_secs_f64(),
        n as f64 / started.elapsed().as_secs_f64()
    );

    let request = pb::CreateAnalysisRequest {
        title: "bench".into(),
        range: Some(sextant_proto::common::v1::TimeRange {
            start: Some(ts(start_us)),
            end: Some(ts(end_us)),
        }),
        metrics: Vec::new(),
        bucket: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
    };
    let mut samples = Vec::new();
    let mut shape = String::new();
    for run in 0..runs + 1 {
        let started = Instant::now();
        let report = client.clone().create_analysis(request.clone()).await?.into_inner();
        if run > 0 {
            samples.push(started.elapsed());
        }
        let buckets: usize = report
            .series
            .iter()
            .map(|s| s.series.as_ref().map_or(0, |s| s.buckets.len()))
            .sum();
        shape = format!(
            "{} metrics, {} findings, {} chart buckets",
            report.summaries.len(),
            report.findings.len(),
            buckets
        );
    }
    println!(
        "  gRPC CreateAnalysis, 24 h × 50 metrics in 1-minute buckets ({shape}): {}",
        stats(samples)
    );

    // Through the gateway, as a frontend: POST, then follow the job.
    let token = system.token(TENANT, "bench");
    let body = json!({
        "title": "bench", "bucket_seconds": 60,
        "start": OffsetDateTime::from_unix_timestamp(start_us / 1_000_000)?.format(&time::format_description::well_known::Rfc3339)?,
        "end": OffsetDateTime::from_unix_timestamp(end_us / 1_000_000)?.format(&time::format_description::well_known::Rfc3339)?,
    });
    let mut samples = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let response = system
            .http
            .post(system.url("/api/v1/analyses"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(response.status() == 202, "{}", response.text().await?);
        let job: Value = response.json().await?;
        let id = job["id"].as_str().context("a job id")?.to_owned();
        loop {
            let job: Value = system
                .http
                .get(system.url(&format!("/api/v1/jobs/{id}")))
                .bearer_auth(&token)
                .send()
                .await?
                .json()
                .await?;
            match job["status"].as_str() {
                Some("succeeded") => break,
                Some("failed" | "cancelled") => anyhow::bail!("analysis job ended: {job}"),
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        samples.push(started.elapsed());
    }
    println!(
        "  HTTP via the gateway, POST to job succeeded (polling every 10 ms): {}",
        stats(samples)
    );

    // Baseline: the summaries alone, one SQL statement over the raw events.
    let url = sextant_e2e::infra::database_url(&system.admin_url, &format!("e2e_{}_analytics", system.id));
    let mut conn = sqlx::PgConnection::connect(&url).await?;
    let mut samples = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let rows = sqlx::query(
            "SELECT s.metric, count(*) AS n
                    , sum(e.value), avg(e.value), min(e.value), max(e.value)
                    , percentile_cont(ARRAY[0.5, 0.9, 0.95, 0.99]) WITHIN GROUP (ORDER BY e.value)
             FROM events e JOIN series s ON s.tenant = e.tenant AND s.id = e.series_id
             WHERE e.tenant = $1 AND e.ts >= $2 AND e.ts < $3
             GROUP BY s.metric",
        )
        .bind(TENANT)
        .bind(OffsetDateTime::from_unix_timestamp_nanos(i128::from(start_us) * 1000)?)
        .bind(OffsetDateTime::from_unix_timestamp_nanos(i128::from(end_us) * 1000)?)
        .fetch_all(&mut conn)
        .await?;
        anyhow::ensure!(rows.len() == METRICS, "{} metrics", rows.len());
        samples.push(started.elapsed());
    }
    println!(
        "  baseline, the summaries alone as one SQL statement over the raw events: {}",
        stats(samples)
    );
    Ok(())
}
