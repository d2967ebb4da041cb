//! `make bench` (jobs): starts the whole system from the release binaries and
//! measures the job queue with no-op jobs submitted over gRPC, status tracked
//! in PostgreSQL:
//!
//! - sustained throughput: `BENCH_JOBS` (default 20 000) jobs submitted in
//!   batches of 500 by 4 clients; jobs/s from the first submit to the last
//!   completion;
//! - latency at a fixed rate: 500 jobs/s for 10 s, submitted one by one;
//!   p50/p95/p99 of submit→completed, from the service's own timestamps
//!   (`finished_at - created_at`).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use sextant_e2e::TestSystem;
use sextant_e2e::system::JobsClient;
use sextant_proto::jobs::v1::{GetJobStatsRequest, JobStatus, SubmitJobRequest, SubmitJobsRequest};

fn noop() -> SubmitJobRequest {
    SubmitJobRequest {
        kind: "noop".into(),
        payload_json: "{}".into(),
        ..Default::default()
    }
}

async fn finished(client: &mut JobsClient) -> anyhow::Result<u64> {
    let stats = client.get_job_stats(GetJobStatsRequest::default()).await?.into_inner();
    Ok(stats
        .counts
        .iter()
        .filter(|c| matches!(c.status(), JobStatus::Succeeded | JobStatus::Failed))
        .map(|c| c.count)
        .sum())
}

async fn wait_finished(client: &mut JobsClient, n: u64, limit: Duration) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        if finished(client).await? >= n {
            return Ok(Instant::now());
        }
        anyhow::ensure!(Instant::now() < deadline, "jobs did not finish within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let jobs: u64 = std::env::var("BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let system = TestSystem::builder()
        .env("SEXTANT_TELEMETRY__LOG_FILTER", "info,sextant_jobs=warn")
        .jobs_env("SEXTANT_JOBS__WORKER__CONCURRENCY", "64")
        .jobs_env("SEXTANT_JOBS__DATABASE__MAX_CONNECTIONS", "32")
        .start()
        .await
        .context("no servers: set SEXTANT_TEST_DATABASE_URL and SEXTANT_TEST_AMQP_URL (make bench does)")?;

    // Throughput.
    let mut stats_client = system.jobs_client("bench-throughput").await;
    let started = Instant::now();
    let mut submitters = tokio::task::JoinSet::new();
    for s in 0..4u64 {
        let mut client = system.jobs_client("bench-throughput").await;
        let share = jobs / 4 + u64::from(s < jobs % 4);
        submitters.spawn(async move {
            let mut left = share;
            while left > 0 {
                let n = left.min(500);
                let batch = (0..n).map(|_| noop()).collect();
                client.submit_jobs(SubmitJobsRequest { jobs: batch }).await?;
                left -= n;
            }
            anyhow::Ok(())
        });
    }
    while let Some(result) = submitters.join_next().await {
        result??;
    }
    let submitted = started.elapsed();
    let done = wait_finished(&mut stats_client, jobs, Duration::from_secs(600)).await?;
    let total = done - started;
    println!(
        "throughput: {jobs} no-op jobs in {:.2} s = {:.0} jobs/s (all submitted after {:.2} s = {:.0} submits/s)",
        total.as_secs_f64(),
        jobs as f64 / total.as_secs_f64(),
        submitted.as_secs_f64(),
        jobs as f64 / submitted.as_secs_f64()
    );

    // Latency at a fixed rate.
    let rate = 500u64;
    let seconds = 10u64;
    let client = system.jobs_client("bench-latency").await;
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let mut pending = tokio::task::JoinSet::new();
    for _ in 0..rate * seconds {
        ticker.tick().await;
        let mut client = client.clone();
        pending.spawn(async move { client.submit_job(noop()).await.map(|_| ()) });
    }
    while let Some(result) = pending.join_next().await {
        result??;
    }
    let mut latency_client = system.jobs_client("bench-latency").await;
    wait_finished(&mut latency_client, rate * seconds, Duration::from_secs(120)).await?;

    let database = sextant_e2e::infra::database_url(&system.admin_url, &format!("e2e_{}_jobs", system.id));
    let pool = sqlx::PgPool::connect(&database).await?;
    let (p50, p95, p99): (f64, f64, f64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.95) WITHIN GROUP (ORDER BY ms), \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) \
         FROM (SELECT extract(epoch FROM finished_at - created_at) * 1000 AS ms FROM jobs \
               WHERE tenant = 'bench-latency' AND status = 'succeeded') t",
    )
    .fetch_one(&pool)
    .await?;
    pool.close().await;
    println!(
        "latency at {rate} jobs/s for {seconds} s: submit→completed p50 {p50:.1} ms, p95 {p95:.1} ms, p99 {p99:.1} ms"
    );
    Ok(())
}
