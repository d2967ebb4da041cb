//! `make bench-analytics`: metrics ingest, dashboard queries and live
//! updates, each beside its baseline from the same run.
//!
//! Data set: `BENCH_EVENTS` (default 10,000,000) events of one metric over the
//! last 24 h, 50 series (`host` h00–h19 × `region` r0–r2, the first 50
//! pairs), in time order.
//!
//! 1. Ingest → queryable: the data set over gRPC in batches of 10,000 (three
//!    in flight), then 1,000,000 events in batches of 1,000 and 1,000,000
//!    through the gateway (HTTP, batches of 10,000); events/s and the
//!    analytics service's peak RSS. Baseline: binary `COPY` of the same rows
//!    (with `host` and `region` as columns) into one plain table.
//! 2. Dashboard query, 24 h in 1-minute buckets, avg + p95: (a) all series,
//!    (b) grouped by host, (c) region = r1 grouped by host; p50/p95/p99 over
//!    `BENCH_QUERY_RUNS` (default 100) runs over gRPC: computed afresh each
//!    time (a replica with its query cache off), as a dashboard asks (the
//!    range sliding a minute each run), and the same range again; and (a)
//!    through the gateway. Baselines: the same query as one SQL statement over the plain
//!    table (`date_bin` + `percentile_cont`), and in DuckDB over the same rows
//!    (`DUCKDB_PYTHON`, skipped when unset; `scripts/duckdb_bench.py`).
//! 3. Ingest → live update: 100 WebSocket subscribers of one query through the
//!    gateway while 1,000 events/s go in through the gateway (50 calls/s of 20
//!    events, one after another); the time from the start of each ingest call
//!    to the first update frame at each subscriber that covers it. Measured
//!    first, on a settled system, and again at the end, right after the load.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sextant_e2e::TestSystem;
use sextant_e2e::bench::{DAY_US, DataSet, SERIES, env_or, ingest_grpc, labels_of};
use sextant_e2e::system::AnalyticsClient;
use sextant_proto::analytics::v1 as pb;
use sextant_proto::common::v1::{LabelMatcher, TimeRange, label_matcher::Op};
use sqlx::Connection as _;
use time::OffsetDateTime;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const TENANT: &str = "bench";

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The same events through the gateway's `POST /api/v1/events`; events/s.
async fn ingest_http(system: &TestSystem, data: &Arc<DataSet>, metric: &str, batch: usize) -> anyhow::Result<f64> {
    let token = system.token(TENANT, "bench");
    let url = system.url("/api/v1/events");
    let started = Instant::now();
    let batches = data.n.div_ceil(batch);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (http, data, next, metric, token, url) = (
            system.http.clone(),
            data.clone(),
            next.clone(),
            metric.to_owned(),
            token.clone(),
            url.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let b = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if b >= batches {
                    return anyhow::Ok(());
                }
                let events: Vec<Value> = (b * batch..((b + 1) * batch).min(data.n))
                    .map(|i| data.json(&metric, i))
                    .collect();
                let body = serde_json::to_vec(&json!({ "events": events }))?;
                let response = http
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                anyhow::ensure!(response.status() == 200, "batch {b}: {}", response.text().await?);
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(data.n as f64 / started.elapsed().as_secs_f64())
}

/// Binary COPY of the same rows into a plain table; rows/s.
async fn copy_baseline(admin_url: &str, database: &str, data: &DataSet) -> anyhow::Result<(f64, String)> {
    let url = sextant_e2e::infra::database_url(admin_url, database);
    let mut conn = sqlx::PgConnection::connect(&url).await?;
    sqlx::query("DROP TABLE IF EXISTS plain_events")
        .execute(&mut conn)
        .await?;
    sqlx::query("CREATE TABLE plain_events (ts timestamptz NOT NULL, value float8 NOT NULL, host text NOT NULL, region text NOT NULL)")
        .execute(&mut conn)
        .await?;
    const PG_EPOCH: i64 = 946_684_800_000_000;
    let started = Instant::now();
    let mut copy = conn
        .copy_in_raw("COPY plain_events (ts, value, host, region) FROM STDIN (FORMAT binary)")
        .await?;
    let mut buf = Vec::with_capacity(4 << 20);
    buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    buf.extend_from_slice(&0i32.to_be_bytes());
    buf.extend_from_slice(&0i32.to_be_bytes());
    for i in 0..data.n {
        let (host, region) = labels_of(i % SERIES);
        buf.extend_from_slice(&4i16.to_be_bytes());
        buf.extend_from_slice(&8i32.to_be_bytes());
        buf.extend_from_slice(&(data.ts_us(i) - PG_EPOCH).to_be_bytes());
        buf.extend_from_slice(&8i32.to_be_bytes());
        buf.extend_from_slice(&DataSet::value(i).to_be_bytes());
        for text in [host.as_bytes(), region.as_bytes()] {
            buf.extend_from_slice(&(text.len() as i32).to_be_bytes());
            buf.extend_from_slice(text);
        }
        if buf.len() > (4 << 20) - 64 {
            copy.send(std::mem::take(&mut buf)).await?;
            buf.reserve(4 << 20);
        }
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    copy.send(buf).await?;
    copy.finish().await?;
    let rate = data.n as f64 / started.elapsed().as_secs_f64();
    sqlx::query("ANALYZE plain_events").execute(&mut conn).await?;
    Ok((rate, url))
}

fn percentiles(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0;
    format!(
        "p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms (n = {})",
        at(0.5),
        at(0.95),
        at(0.99),
        samples.len()
    )
}

/// The three dashboard queries.
fn dashboard(metric: &str, start_us: i64, end_us: i64) -> Vec<(&'static str, pb::MetricQuery)> {
    let ts = |us: i64| prost_types::Timestamp {
        seconds: us.div_euclid(1_000_000),
        nanos: 0,
    };
    let base = pb::MetricQuery {
        metric: metric.to_owned(),
        aggregations: vec![pb::Aggregation::Avg as i32, pb::Aggregation::P95 as i32],
        bucket: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
        range: Some(TimeRange {
            start: Some(ts(start_us)),
            end: Some(ts(end_us)),
        }),
        filters: vec![],
        group_by: String::new(),
    };
    let by_host = pb::MetricQuery {
        group_by: "host".into(),
        ..base.clone()
    };
    let r1 = pb::MetricQuery {
        filters: vec![LabelMatcher {
            label: "region".into(),
            op: Op::Eq as i32,
            values: vec!["r1".into()],
        }],
        ..by_host.clone()
    };
    vec![
        ("(a) all series", base),
        ("(b) by host", by_host),
        ("(c) region = r1, by host", r1),
    ]
}

async fn query_runs(
    client: &AnalyticsClient,
    query: &pb::MetricQuery,
    runs: usize,
) -> anyhow::Result<(Vec<Duration>, usize)> {
    let mut client = client.clone();
    let mut samples = Vec::with_capacity(runs);
    let mut buckets = 0;
    for run in 0..runs + 3 {
        let started = Instant::now();
        let answer = client
            .query_metrics(pb::QueryMetricsRequest {
                query: Some(query.clone()),
            })
            .await?
            .into_inner();
        if run >= 3 {
            samples.push(started.elapsed());
        }
        buckets = answer.series.iter().map(|s| s.buckets.len()).sum();
    }
    Ok((samples, buckets))
}

/// The same queries as one SQL statement each over the plain table.
async fn sql_baseline(url: &str, start_us: i64, end_us: i64, runs: usize) -> anyhow::Result<()> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let start = OffsetDateTime::from_unix_timestamp(start_us.div_euclid(1_000_000))?;
    let end = OffsetDateTime::from_unix_timestamp(end_us.div_euclid(1_000_000))?;
    let statements = [
        (
            "(a)",
            "SELECT date_bin('1 minute', ts, 'epoch'::timestamptz) AS b, avg(value), percentile_cont(0.95) WITHIN GROUP (ORDER BY value) FROM plain_events WHERE ts >= $1 AND ts < $2 GROUP BY 1",
        ),
        (
            "(b)",
            "SELECT date_bin('1 minute', ts, 'epoch'::timestamptz) AS b, host, avg(value), percentile_cont(0.95) WITHIN GROUP (ORDER BY value) FROM plain_events WHERE ts >= $1 AND ts < $2 GROUP BY 1, 2",
        ),
        (
            "(c)",
            "SELECT date_bin('1 minute', ts, 'epoch'::timestamptz) AS b, host, avg(value), percentile_cont(0.95) WITHIN GROUP (ORDER BY value) FROM plain_events WHERE ts >= $1 AND ts < $2 AND region = 'r1' GROUP BY 1, 2",
        ),
    ];
    for (name, sql) in statements {
        let mut samples = Vec::new();
        for run in 0..runs + 1 {
            let started = Instant::now();
            let rows = sqlx::query(sql).bind(start).bind(end).fetch_all(&mut conn).await?;
            if run >= 1 {
                samples.push(started.elapsed());
            }
            anyhow::ensure!(!rows.is_empty());
        }
        println!("  SQL over the plain table {name}: {}", percentiles(samples));
    }
    Ok(())
}

async fn duckdb_baseline(url: &str, start_us: i64, end_us: i64) -> anyhow::Result<()> {
    let Ok(python) = std::env::var("DUCKDB_PYTHON") else {
        println!("  DuckDB: skipped (DUCKDB_PYTHON is not set; make bench sets it)");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("events.csv");
    // The server writes as its own user: give it a file it may create.
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    sqlx::query(&format!(
        "COPY plain_events TO '{}' WITH (FORMAT csv, HEADER)",
        csv.display()
    ))
    .execute(&mut conn)
    .await
    .context("COPY … TO a file (needs a superuser and a local server)")?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/duckdb_bench.py");
    let output = std::process::Command::new(python)
        .arg(script)
        .arg(&csv)
        .arg(start_us.to_string())
        .arg(end_us.to_string())
        .output()?;
    print!("{}", String::from_utf8_lossy(&output.stdout));
    if !output.status.success() {
        bail!("duckdb_bench.py failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

/// Live: subscribers of one query through the gateway, 1,000 events/s in.
async fn live(system: &TestSystem, metric: &str, subscribers: usize, seconds: usize) -> anyhow::Result<()> {
    let token = system.token(TENANT, "bench");
    let query = json!({
        "metric": metric, "aggregations": ["count", "avg", "p95"], "bucket_seconds": 1,
        "window_seconds": 900, "group_by": "host",
    });
    let mut sockets = Vec::new();
    for i in 0..subscribers {
        // One user per browser: a user may hold only a few sockets.
        let viewer = system.token(TENANT, &format!("viewer-{i}"));
        let mut request = system.ws_url("/api/v1/ws").into_client_request()?;
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {viewer}").parse()?);
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
        socket.next().await.context("hello")??;
        socket
            .send(Message::text(
                json!({"op": "subscribe", "topic": "metric", "query": query}).to_string(),
            ))
            .await?;
        socket.next().await.context("subscribed")??;
        socket.next().await.context("snapshot")??;
        sockets.push(socket);
    }
    // Each subscriber notes when each version first arrived.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|mut socket| {
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let mut seen: Vec<(u64, Instant)> = Vec::new();
                loop {
                    tokio::select! {
                        message = socket.next() => match message {
                            Some(Ok(Message::Text(text))) => {
                                let at = Instant::now();
                                let frame: Value = serde_json::from_str(&text).unwrap_or_default();
                                if frame["type"] == "update"
                                    && let Some(v) = frame["version"].as_u64()
                                {
                                    seen.push((v, at));
                                }
                            }
                            Some(Ok(_)) => {}
                            _ => break,
                        },
                        _ = stop.changed() => break,
                    }
                }
                seen
            })
        })
        .collect();
    let url = system.url("/api/v1/events");
    let mut starts: Vec<Instant> = Vec::new();
    let calls = seconds * 50;
    let tick = Duration::from_millis(20);
    let mut next = Instant::now();
    for call in 0..calls {
        tokio::time::sleep_until(next.into()).await;
        next += tick;
        let now_ts = OffsetDateTime::now_utc();
        let events: Vec<Value> = (0..20)
            .map(|i| {
                json!({
                    "name": metric,
                    "ts": now_ts.format(&time::format_description::well_known::Rfc3339).unwrap(),
                    "value": DataSet::value(call * 20 + i),
                    "labels": {"host": format!("h{:02}", i % 5)},
                })
            })
            .collect();
        let started = Instant::now();
        let response = system
            .http
            .post(&url)
            .bearer_auth(&token)
            .json(&json!({ "events": events }))
            .send()
            .await?;
        anyhow::ensure!(response.status() == 200, "{}", response.text().await?);
        starts.push(started);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_tx.send(true)?;
    // Call k (one at a time, so in commit order) made version k + 1.
    let mut latencies = Vec::new();
    let mut missing = 0;
    for reader in readers {
        let seen = reader.await?;
        for (k, started) in starts.iter().enumerate() {
            let version = k as u64 + 1;
            match seen.iter().find(|(v, _)| *v >= version) {
                Some((_, at)) => latencies.push(at.saturating_duration_since(*started)),
                None => missing += 1,
            }
        }
    }
    println!(
        "  ingest → update frame, {subscribers} subscribers, {} events/s for {seconds} s: {}; missing {missing}",
        20 * 50,
        percentiles(latencies)
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = env_or("BENCH_EVENTS", 10_000_000);
    let runs = env_or("BENCH_QUERY_RUNS", 100);
    let system = sextant_e2e::bench::system().await?;
    let pid = system.analytics.pid();
    let client = system.analytics_client(TENANT).await;
    let now_us = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64;
    // A minute of margin: every event is inside the ingest window.
    let end_us = now_us / 60_000_000 * 60_000_000 - 60_000_000;
    let data = Arc::new(DataSet::new(n, end_us));
    let result = async {
        println!("analytics benchmark: {n} events, 1 metric, {SERIES} series, 24 h");
        // Latency first, on a settled system: after ten million events
        // PostgreSQL vacuums and checkpoints for minutes.
        println!("ingest → live update");
        live(&system, "bench.live", 100, env_or("BENCH_LIVE_SECONDS", 20)).await?;
        println!("ingest → queryable");
        println!("  analytics RSS before: {} KiB", rss_kib(pid, "VmRSS:"));
        let rate = ingest_grpc(&client, &data, "bench.dashboard", 10_000, 3).await?;
        println!("  gRPC, batches of 10,000: {rate:.0} events/s");
        println!("  analytics peak RSS: {} KiB", rss_kib(pid, "VmHWM:"));
        let small = Arc::new(DataSet::new(n.min(1_000_000), end_us));
        let rate = ingest_grpc(&client, &small, "bench.b1000", 1_000, 3).await?;
        println!("  gRPC, batches of 1,000 ({} events): {rate:.0} events/s", small.n);
        let rate = ingest_http(&system, &small, "bench.http", 10_000).await?;
        println!("  HTTP via the gateway, batches of 10,000 ({} events): {rate:.0} events/s", small.n);
        println!("  analytics peak RSS: {} KiB", rss_kib(pid, "VmHWM:"));
        let database = format!("e2e_{}_analytics", system.id);
        let (rate, url) = copy_baseline(&system.admin_url, &database, &data).await?;
        println!("  baseline, binary COPY into a plain table: {rate:.0} rows/s");

        println!("dashboard query, 24 h in 1-minute buckets, avg + p95");
        let (start_us, q_end_us) = (end_us - DAY_US, end_us);
        // Computed afresh each time: a replica with its query cache off.
        let cold = system.spawn_analytics("analytics-cold", &[("SEXTANT_ANALYTICS__QUERY__CACHE_BUCKETS", "0")]);
        let cold_client = system.analytics_client_at(&cold, TENANT).await;
        for (name, query) in dashboard("bench.dashboard", start_us, q_end_us) {
            let (samples, buckets) = query_runs(&cold_client, &query, runs).await?;
            println!("  gRPC, computed each time {name} ({buckets} buckets): {}", percentiles(samples));
        }
        drop(cold);
        // A dashboard: the same query again, its range sliding a minute each time.
        for (name, query) in dashboard("bench.dashboard", start_us, q_end_us) {
            let mut samples = Vec::new();
            let mut buckets = 0;
            let mut client = client.clone();
            for run in 0..runs + 3 {
                let mut query = query.clone();
                let shift = 60 * run as i64;
                let range = query.range.as_mut().unwrap();
                range.start.as_mut().unwrap().seconds += shift;
                range.end.as_mut().unwrap().seconds += shift;
                let started = Instant::now();
                let answer = client
                    .query_metrics(pb::QueryMetricsRequest { query: Some(query) })
                    .await?
                    .into_inner();
                if run >= 3 {
                    samples.push(started.elapsed());
                }
                buckets = answer.series.iter().map(|s| s.buckets.len()).sum();
            }
            println!("  gRPC, sliding by a minute each run {name} ({buckets} buckets): {}", percentiles(samples));
        }
        for (name, query) in dashboard("bench.dashboard", start_us, q_end_us) {
            let (samples, buckets) = query_runs(&client, &query, runs).await?;
            println!("  gRPC, the same range again {name} ({buckets} buckets): {}", percentiles(samples));
        }
        let token = system.token(TENANT, "bench");
        let mut samples = Vec::new();
        let body = json!({
            "metric": "bench.dashboard", "aggregations": ["avg", "p95"], "bucket_seconds": 60,
            "start": OffsetDateTime::from_unix_timestamp(start_us / 1_000_000)?.format(&time::format_description::well_known::Rfc3339)?,
            "end": OffsetDateTime::from_unix_timestamp(q_end_us / 1_000_000)?.format(&time::format_description::well_known::Rfc3339)?,
        });
        for run in 0..runs.min(50) + 3 {
            let started = Instant::now();
            let response = system
                .http
                .post(system.url("/api/v1/metrics/query"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await?;
            anyhow::ensure!(response.status() == 200);
            response.bytes().await?;
            if run >= 3 {
                samples.push(started.elapsed());
            }
        }
        println!("  HTTP via the gateway (a): {}", percentiles(samples));
        sql_baseline(&url, start_us, q_end_us, 5).await?;
        duckdb_baseline(&url, start_us, q_end_us).await?;
        // The same again, right after the load above.
        println!("ingest → live update, right after loading the data set");
        live(&system, "bench.live.loaded", 100, env_or("BENCH_LIVE_SECONDS", 20)).await
    }
    .await;
    if result.is_err() {
        let logs = system.all_logs();
        let problems: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        eprintln!(
            "warnings and errors from the services:\n{}",
            problems[problems.len().saturating_sub(40)..].join("\n")
        );
    }
    result
}
