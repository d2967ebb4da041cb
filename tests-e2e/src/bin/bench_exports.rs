//! `make bench-exports`: exports of a large analysis, end to end.
//!
//! Data sets, each one event per one-minute bucket over 10,000 minutes:
//! - tenant `bench`: 50 metrics, values uniform in [20, 80); its analysis has
//!   1,000,000 series rows (avg and p95 per metric) and no findings, and an
//!   analysis of 25 of its metrics has the 50 series charts of the HTML figure;
//! - tenant `sarif`: 40 metrics, about 50 in three buckets of four and about
//!   100 in the fourth, so every fourth bucket is an anomaly: 100,000 findings.
//!
//! Measured, each `BENCH_EXPORT_RUNS` (default 3) times, median: `CreateExport`
//! over gRPC, rendered at once (the job threshold is lifted so the figure is
//! the render, not the queue): fetching the analysis from analytics, rendering
//! to scratch disk, publishing to the object store and marking it ready; the
//! service's own split (render / store) from its `published` log line; then
//! the download through the gateway. The exports service is started afresh
//! for each format, and its peak RSS (`VmHWM`) read after that format's runs.
//!
//! - CSV, section `series`: exactly 1,000,000 rows;
//! - XLSX: every sheet, the series sheet 1,000,000 rows (constant memory);
//! - SARIF: one result per finding;
//! - HTML: 50 charts of 10,000 buckets each.
//!
//! Baselines (printed by `scripts/export_baseline.py`, run by the bench
//! script in a venv): the same 1,000,000 series rows written by Python's
//! `csv` module, openpyxl (write-only) and XlsxWriter (constant memory).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use sextant_e2e::TestSystem;
use sextant_proto::analytics::v1 as apb;
use sextant_proto::exports::v1 as pb;
use time::OffsetDateTime;

const METRICS: usize = 50;
const BUCKETS: i64 = 10_000;
const TENANT: &str = "bench";

fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn value(i: u64) -> f64 {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    20.0 + 60.0 * (x % 10_000) as f64 / 10_000.0
}

fn ts(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

/// The process's peak RSS in MiB since the last reset.
fn peak_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// `render_ms` and `store_ms` of the service's last `published` line.
fn split(logs: &str) -> (u64, u64) {
    logs.lines()
        .rev()
        .find(|l| l.contains("\"published\""))
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map_or((0, 0), |v| {
            (
                v["render_ms"].as_u64().unwrap_or(0),
                v["store_ms"].as_u64().unwrap_or(0),
            )
        })
}

/// One event per minute of `metrics` metrics (`svc.m00` …) over `BUCKETS`
/// minutes from `start`, valued `value(minute, metric)`.
async fn ingest(
    client: &mut sextant_e2e::system::AnalyticsClient,
    start: i64,
    metrics: usize,
    value: impl Fn(i64, usize) -> f64,
) -> anyhow::Result<()> {
    let mut events = Vec::new();
    for minute in 0..BUCKETS {
        for m in 0..metrics {
            events.push(apb::MetricEvent {
                name: format!("svc.m{m:02}"),
                ts: Some(ts(start + minute * 60 + 30)),
                value: value(minute, m),
                labels: Default::default(),
                stale: false,
            });
            if events.len() == 10_000 || (minute == BUCKETS - 1 && m == metrics - 1) {
                let answer = client
                    .ingest_events(apb::IngestEventsRequest {
                        events: std::mem::take(&mut events),
                        idempotency_key: String::new(),
                        metadata: Vec::new(),
                    })
                    .await?
                    .into_inner();
                anyhow::ensure!(answer.rejected.is_empty(), "rejected: {:?}", answer.rejected.first());
            }
        }
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs = env_or("BENCH_EXPORT_RUNS", 3);
    let system = TestSystem::builder()
        .exports_env("SEXTANT_EXPORTS__JOB_THRESHOLD_ROWS", "1000000000")
        .exports_env("SEXTANT_EXPORTS__LIMITS__EXPORTS_PER_MINUTE", "10000")
        .start()
        .await
        .context("no servers: set SEXTANT_TEST_DATABASE_URL and SEXTANT_TEST_AMQP_URL (make bench does)")?;
    let mut analytics = system.analytics_client(TENANT).await.max_decoding_message_size(1 << 30);
    let end = OffsetDateTime::now_utc().unix_timestamp() / 60 * 60;
    let start = end - BUCKETS * 60;
    println!("exports benchmark: {METRICS} metrics × {BUCKETS} one-minute buckets");

    let started = Instant::now();
    ingest(&mut analytics, start, METRICS, |minute, m| {
        value(minute as u64 * METRICS as u64 + m as u64)
    })
    .await?;
    let mut sarif_client = system
        .analytics_client("sarif")
        .await
        .max_decoding_message_size(1 << 30);
    ingest(&mut sarif_client, start, 40, |minute, m| {
        let noise = ((minute * 7 + m as i64) % 11) as f64 / 10.0;
        if minute % 4 == 0 { 100.0 + noise } else { 50.0 + noise }
    })
    .await?;
    println!("  loaded 900,000 events in {:.1} s", started.elapsed().as_secs_f64());

    let analysis = |metrics: Vec<String>| apb::CreateAnalysisRequest {
        title: "bench".into(),
        range: Some(sextant_proto::common::v1::TimeRange {
            start: Some(ts(start)),
            end: Some(ts(end)),
        }),
        metrics,
        bucket: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
    };
    let started = Instant::now();
    let full = analytics.create_analysis(analysis(Vec::new())).await?.into_inner();
    let series_rows: usize = full
        .series
        .iter()
        .map(|s| s.series.as_ref().map_or(0, |s| s.buckets.len()))
        .sum();
    println!(
        "  analysis: {series_rows} series rows, {} findings, in {:.1} s",
        full.findings.len(),
        started.elapsed().as_secs_f64()
    );
    let half = analytics
        .create_analysis(analysis((0..METRICS / 2).map(|m| format!("svc.m{m:02}")).collect()))
        .await?
        .into_inner();
    println!("  analysis for HTML: {} series charts", half.series.len());
    let sarif = sarif_client.create_analysis(analysis(Vec::new())).await?.into_inner();
    let findings = sarif.findings.len();
    println!(
        "  analysis for SARIF: {findings} findings, {} metrics, {} events",
        sarif.summaries.len(),
        sarif.summaries.iter().map(|s| s.count).sum::<u64>()
    );

    // Reading the analysis in parts, as the exports service does first.
    let mut fetch = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let mut parts = analytics
            .read_analysis(apb::ReadAnalysisRequest { id: full.id.clone() })
            .await?
            .into_inner();
        while parts.message().await?.is_some() {}
        fetch.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "  ReadAnalysis of the full report, every part (part of every export below): {:.0} ms",
        median(fetch)
    );

    let cases = [
        (
            "CSV, series section, 1,000,000 rows",
            TENANT,
            &full,
            pb::ExportFormat::Csv,
            pb::CsvSection::Series,
        ),
        (
            "XLSX, every sheet (series: 1,000,000 rows)",
            TENANT,
            &full,
            pb::ExportFormat::Xlsx,
            pb::CsvSection::Unspecified,
        ),
        (
            "SARIF, 100,000 results",
            "sarif",
            &sarif,
            pb::ExportFormat::Sarif,
            pb::CsvSection::Unspecified,
        ),
        (
            "HTML, 50 charts × 10,000 buckets",
            TENANT,
            &half,
            pb::ExportFormat::Html,
            pb::CsvSection::Unspecified,
        ),
    ];
    let mut service: Option<sextant_e2e::process::ServiceProcess> = None;
    for (label, tenant, analysis, format, section) in cases {
        // A fresh exports service for each format: its peak is this format's.
        match service.take() {
            Some(old) => old.signal(libc::SIGKILL),
            None => system.exports.signal(libc::SIGKILL),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let fresh = system.respawn_exports("exports-bench");
        let pid = fresh.pid();
        let idle = peak_mib(pid);
        let mut exports = system.exports_client(tenant).await;
        let token = system.token(tenant, "e2e");
        let (mut totals, mut renders, mut stores, mut downloads) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut size = 0;
        for _ in 0..runs {
            let started = Instant::now();
            let export = exports
                .create_export(pb::CreateExportRequest {
                    analysis_id: analysis.id.clone(),
                    format: Some(pb::FormatSpec {
                        format: format as i32,
                        csv_section: section as i32,
                    }),
                    idempotency_key: String::new(),
                })
                .await?
                .into_inner();
            totals.push(started.elapsed().as_secs_f64() * 1000.0);
            anyhow::ensure!(export.status == pb::ExportStatus::Ready as i32, "{export:?}");
            let (render, store) = split(&fresh.logs());
            renders.push(render as f64);
            stores.push(store as f64);
            size = export.size_bytes;
            let started = Instant::now();
            let response = system
                .http
                .get(system.url(&format!("/api/v1/exports/{}/download", export.id)))
                .bearer_auth(&token)
                .timeout(Duration::from_secs(300))
                .send()
                .await?;
            anyhow::ensure!(response.status() == 200, "download: {}", response.status());
            let mut response = response;
            let mut got = 0u64;
            while let Some(chunk) = response.chunk().await? {
                got += chunk.len() as u64;
            }
            anyhow::ensure!(got == size, "downloaded {got} of {size} bytes");
            downloads.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        println!(
            "  {label}: {:.1} MB; CreateExport {:.0} ms (render {:.0} ms, store {:.0} ms); download via the gateway {:.0} ms; exports service peak RSS {:.0} MiB (idle {idle:.0})",
            size as f64 / 1e6,
            median(totals),
            median(renders),
            median(stores),
            median(downloads),
            peak_mib(pid),
        );
        service = Some(fresh);
    }

    if let Ok(python) = std::env::var("EXPORT_PYTHON") {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/export_baseline.py");
        let output = std::process::Command::new(python)
            .arg(script)
            .arg(series_rows.to_string())
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "baseline: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        print!("{}", String::from_utf8_lossy(&output.stdout));
    }
    Ok(())
}
