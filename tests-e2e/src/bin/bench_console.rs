//! `make bench-console`: the web console in headless chromium over the
//! benchmark data set (`BENCH_EVENTS`, default 10,000,000 events of one
//! metric over the last 24 h, 50 series).
//!
//! A dashboard of six panels over 24 h is saved through the API: avg + p95
//! of everything (line), avg by host (line), p95 by host for region r1
//! (area), count (bar), p99 (area) and the count of the newest minute
//! (stat). `tests-e2e/console/bench.py` (`CONSOLE_PYTHON`: a Python with
//! Playwright) then measures navigation → every panel drawn
//! (`BENCH_NAVIGATIONS`, default 10), ingest → the live panel changed
//! (`BENCH_INGESTS`, default 100), the assets' size, and the JS heap of the
//! page left live `BENCH_SOAK_SECONDS` (default 600) at 20 updates/s.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use sextant_e2e::bench::{DataSet, env_or, ingest_grpc};
use time::OffsetDateTime;

const TENANT: &str = "bench";
const METRIC: &str = "bench.dashboard";

fn panel(title: &str, kind: &str, query: Value, at: (u32, u32, u32, u32)) -> Value {
    let mut query = query;
    query["metric"] = json!(METRIC);
    query["bucket_seconds"] = json!(60);
    json!({"title": title, "kind": kind, "query": query, "x": at.0, "y": at.1, "width": at.2, "height": at.3})
}

fn dashboard() -> Value {
    json!({
        "title": "Benchmark: 24 h of bench.dashboard",
        "range_seconds": 86_400,
        "panels": [
            panel("latency", "line", json!({"aggregations": ["avg", "p95"]}), (0, 0, 6, 4)),
            panel("avg by host", "line", json!({"aggregations": ["avg"], "group_by": "host"}), (6, 0, 6, 4)),
            panel("p95 by host, r1", "area", json!({"aggregations": ["p95"], "group_by": "host",
                "filters": [{"label": "region", "op": "eq", "values": ["r1"]}]}), (0, 4, 6, 4)),
            panel("events", "bar", json!({"aggregations": ["count"]}), (6, 4, 6, 4)),
            panel("p99", "area", json!({"aggregations": ["p99"]}), (0, 8, 8, 4)),
            panel("events this minute", "stat", json!({"aggregations": ["count"]}), (8, 8, 4, 4)),
        ],
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let python = std::env::var_os("CONSOLE_PYTHON")
        .context("CONSOLE_PYTHON: a Python with Playwright (make bench-console sets it)")?;
    let n = env_or("BENCH_EVENTS", 10_000_000);
    let system = sextant_e2e::bench::system().await?;
    let client = system.analytics_client(TENANT).await;
    let now_us = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64;
    let end_us = now_us / 60_000_000 * 60_000_000 - 60_000_000;
    let data = Arc::new(DataSet::new(n, end_us));
    println!("console benchmark: {n} events, 1 metric, 50 series, 24 h; a dashboard of 6 panels over 24 h");
    let started = Instant::now();
    let rate = ingest_grpc(&client, &data, METRIC, 10_000, 3).await?;
    println!(
        "  loaded in {:.0} s ({rate:.0} events/s)",
        started.elapsed().as_secs_f64()
    );
    let token = system.token(TENANT, "bench");
    let response = system
        .http
        .post(system.url("/api/v1/dashboards"))
        .bearer_auth(&token)
        .json(&dashboard())
        .send()
        .await?;
    if response.status() != 201 {
        bail!("saving the dashboard: {} {}", response.status(), response.text().await?);
    }
    let id = response.json::<Value>().await?["id"]
        .as_str()
        .context("a dashboard id")?
        .to_owned();
    // Where to look while it runs (a throwaway system: its token is no secret).
    println!(
        "  dashboard: {}/console/#token={token} then #/dashboards/{id}",
        system.url("")
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("console/bench.py");
    let status = tokio::process::Command::new(python)
        .arg(script)
        .arg(system.url(""))
        .arg(&token)
        .arg(&id)
        .arg(env_or("BENCH_NAVIGATIONS", 10).to_string())
        .arg(env_or("BENCH_INGESTS", 100).to_string())
        .arg(env_or("BENCH_SOAK_SECONDS", 600).to_string())
        .status()
        .await
        .context("running the browser half")?;
    if !status.success() {
        bail!("the browser half failed: {status}");
    }
    Ok(())
}
