//! `make bench-prometheus`: the Prometheus surface beside Prometheus itself
//! (Debian's package), on the same payloads and queries, in one run.
//!
//! 1. Remote-write: the payloads Prometheus sends (requests of 2,000
//!    samples, one per `TimeSeries`, over 1,000 series of 20 metrics),
//!    snappy-compressed once up front, sharded by series as Prometheus
//!    shards its queue into `BENCH_PROM_SENDERS` concurrent senders
//!    (default 8), posted to the gateway and to
//!    `prometheus --web.enable-remote-write-receiver`; samples/s each.
//! 2. `query_range` over the last hour at a 15 s step for one metric's 50
//!    series (`rate(…[1m])` and `sum by (region) (rate(…[1m]))`), asked
//!    `BENCH_PROM_QUERIES` times each (default 50) of both; p50 and p95.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use sextant_e2e::bench::{env_or, system};
use sextant_e2e::prometheus::PrometheusServer;
use sextant_proto::prometheus as prom;

const SERIES: usize = 1000;
const METRICS: usize = 20;
const PER_REQUEST: usize = 2000;

fn label(name: &str, value: String) -> prom::Label {
    prom::Label {
        name: name.into(),
        value,
    }
}

/// The requests of each of `shards` senders, as Prometheus shards its
/// queue: a series always goes through one shard, so its samples arrive
/// in order; each request holds 2,000 samples of its shard's series.
fn payloads(rounds: usize, start_ms: i64, spacing_ms: i64, shards: usize) -> Vec<Vec<Vec<u8>>> {
    let mut out = vec![Vec::new(); shards];
    let mut batches: Vec<Vec<prom::TimeSeries>> = vec![Vec::with_capacity(PER_REQUEST); shards];
    for round in 0..rounds {
        let ts = start_ms + round as i64 * spacing_ms;
        for s in 0..SERIES {
            let metric = s % METRICS;
            let n = s / METRICS;
            let shard = s % shards;
            batches[shard].push(prom::TimeSeries {
                labels: vec![
                    label("__name__", format!("bench_requests_{metric:02}_total")),
                    label("host", format!("h{n:02}")),
                    label("instance", format!("10.0.{}.{}:9100", n / 10, n % 10)),
                    label("job", "node".into()),
                    label("region", format!("r{}", n % 3)),
                ],
                samples: vec![prom::Sample {
                    value: (round * (s % 7 + 1)) as f64,
                    timestamp: ts,
                }],
                ..Default::default()
            });
            if batches[shard].len() == PER_REQUEST || (round == rounds - 1 && s + shards >= SERIES) {
                let write = prom::WriteRequest {
                    timeseries: std::mem::take(&mut batches[shard]),
                    metadata: Vec::new(),
                };
                out[shard].push(
                    snap::raw::Encoder::new()
                        .compress_vec(&write.encode_to_vec())
                        .expect("snappy"),
                );
            }
        }
    }
    out
}

/// Posts every shard's requests in order, the shards concurrently; samples/s.
async fn send_all(url: &str, token: Option<&str>, shards: Arc<Vec<Vec<Vec<u8>>>>) -> anyhow::Result<f64> {
    let http = reqwest::Client::new();
    let samples: usize = shards.iter().map(|shard| shard.len()).sum::<usize>() * PER_REQUEST;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for shard in 0..shards.len() {
        let (http, shards) = (http.clone(), shards.clone());
        let (url, token) = (url.to_owned(), token.map(str::to_owned));
        tasks.push(tokio::spawn(async move {
            for body in &shards[shard] {
                let mut request = http
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .header("content-encoding", "snappy")
                    .header("x-prometheus-remote-write-version", "0.1.0")
                    .body(body.clone());
                if let Some(token) = &token {
                    request = request.bearer_auth(token);
                }
                let response = request.send().await?;
                let status = response.status();
                anyhow::ensure!(status.is_success(), "{url}: {status} {}", response.text().await?);
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(samples as f64 / started.elapsed().as_secs_f64())
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Asks `query` `times` times; (p50, p95) in ms and the series answered.
async fn time_query(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    form: &[(&str, String)],
    times: usize,
) -> anyhow::Result<(f64, f64, usize)> {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    let mut took = Vec::with_capacity(times);
    let mut series = 0;
    for _ in 0..times {
        let mut request = http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let started = Instant::now();
        let response = request.send().await?;
        let answer: serde_json::Value = response.json().await?;
        took.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(answer["status"] == "success", "{url}: {answer}");
        series = answer["data"]["result"].as_array().map_or(0, Vec::len);
    }
    took.sort_by(f64::total_cmp);
    Ok((percentile(&took, 0.5), percentile(&took, 0.95), series))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let senders = env_or("BENCH_PROM_SENDERS", 8);
    let rounds = env_or("BENCH_PROM_ROUNDS", 1000);
    let times = env_or("BENCH_PROM_QUERIES", 50);
    let system = system().await?;
    let token = system.token("bench-prom", "bench");
    let prometheus = PrometheusServer::start(
        "global:\n  scrape_interval: 1m\n",
        &["--web.enable-remote-write-receiver"],
    )
    .await?;

    // One hour of rounds ending a minute ago.
    let now_ms = i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)?;
    let spacing = 3_600_000 / rounds as i64;
    let start_ms = now_ms - 60_000 - spacing * rounds as i64;
    let payloads = Arc::new(payloads(rounds, start_ms, spacing, senders));
    let requests: usize = payloads.iter().map(Vec::len).sum();
    println!(
        "remote-write: {} samples in {requests} requests of up to {PER_REQUEST} over {SERIES} series, {senders} shards",
        rounds * SERIES
    );

    let theirs = send_all(&prometheus.url("/api/v1/write"), None, payloads.clone()).await?;
    println!(
        "  prometheus {}: {theirs:.0} samples/s",
        sextant_e2e::prometheus::binary().display()
    );
    let ours = send_all(&system.url("/prometheus/api/v1/write"), Some(&token), payloads).await?;
    println!(
        "  sextant (gateway → analytics → PostgreSQL): {ours:.0} samples/s ({:.2}× Prometheus)",
        ours / theirs
    );

    let end_s = (start_ms + spacing * (rounds as i64 - 1)) / 1000;
    let http = reqwest::Client::new();
    println!("query_range, 1 h at 15 s (241 steps), one metric's 50 series, {times} times each:");
    for query in [
        "rate(bench_requests_03_total[1m])",
        "sum by (region) (rate(bench_requests_03_total[1m]))",
    ] {
        let form = [
            ("query", query.to_owned()),
            ("start", (end_s - 3600).to_string()),
            ("end", end_s.to_string()),
            ("step", "15".to_owned()),
        ];
        // One unmeasured ask each, so neither is timed cold.
        time_query(&http, &prometheus.url("/api/v1/query_range"), None, &form, 1).await?;
        time_query(
            &http,
            &system.url("/prometheus/api/v1/query_range"),
            Some(&token),
            &form,
            1,
        )
        .await?;
        let (p50a, p95a, na) = time_query(&http, &prometheus.url("/api/v1/query_range"), None, &form, times).await?;
        let (p50b, p95b, nb) = time_query(
            &http,
            &system.url("/prometheus/api/v1/query_range"),
            Some(&token),
            &form,
            times,
        )
        .await?;
        anyhow::ensure!(na == nb, "{query}: Prometheus answered {na} series, Sextant {nb}");
        println!("  {query} ({na} series)");
        println!("    prometheus p50 {p50a:.1} ms, p95 {p95a:.1} ms");
        println!(
            "    sextant    p50 {p50b:.1} ms, p95 {p95b:.1} ms ({:.1}× Prometheus at p95)",
            p95b / p95a
        );
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}
