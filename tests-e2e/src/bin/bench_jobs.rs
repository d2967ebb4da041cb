//! `make bench` (jobs): starts the whole system from the release binaries and
//! measures the job queue with no-op jobs, status tracked in PostgreSQL, along
//! two paths: the jobs service's gRPC API, and the gateway (HTTP + WebSocket)
//! as a frontend uses it.
//!
//! - sustained throughput: `BENCH_JOBS` (default 20 000) jobs submitted in
//!   batches of 500 by 4 clients; jobs/s from the first submit until every
//!   job's `succeeded` event has arrived;
//! - latency at a fixed rate: `BENCH_RATE` (default 500) jobs/s for 10 s,
//!   submitted one by one; p50/p95/p99 from just before each submit until its
//!   `succeeded` event arrives (a `WatchJobs` stream, or the WebSocket `jobs`
//!   topic), measured on the client's clock.
//! - flatness: over gRPC, a `BENCH_SMALL_JOBS` (default 5 000) run and then a
//!   `BENCH_LARGE_JOBS` (default 200 000) run, on the tables the runs before
//!   left; the large run's rate against the small one's, and its rate per
//!   tenth (does it slow down as the tables grow?).
//!
//! `BENCH_PHASES` (default `latency,throughput,flatness`) picks the phases;
//! `BENCH_WORK_QUEUES` (`quorum`, the default, or `classic`) the type of the
//! work queues, to compare the two in one sitting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sextant_e2e::TestSystem;
use sextant_e2e::system::JobsClient;
use sextant_proto::jobs::v1::watch_jobs_request::Target;
use sextant_proto::jobs::v1::watch_jobs_response::Message;
use sextant_proto::jobs::v1::{JobEventType, SubmitJobRequest, SubmitJobsRequest, WatchJobsRequest, WatchJobsResponse};
use sqlx::Connection as _;
use tokio_tungstenite::tungstenite;

const BATCH: u64 = 500;
const SUBMITTERS: u64 = 4;
const SECONDS: u64 = 10;

fn noop() -> SubmitJobRequest {
    SubmitJobRequest {
        kind: "noop".into(),
        payload_json: "{}".into(),
        ..Default::default()
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The tenant's `WatchJobs` stream, past its snapshot.
async fn watch_tenant(client: &mut JobsClient) -> anyhow::Result<tonic::Streaming<WatchJobsResponse>> {
    let mut stream = client
        .watch_jobs(WatchJobsRequest {
            target: Some(Target::All(true)),
            after_version: 0,
            all_events: false,
        })
        .await?
        .into_inner();
    stream.message().await?.context("snapshot")?;
    Ok(stream)
}

/// Counts `succeeded` and `failed` events on the tenant's watch stream (no
/// polling: a stats query per tick would cost the database more than the jobs).
async fn completions(client: &mut JobsClient) -> anyhow::Result<tokio::sync::watch::Receiver<u64>> {
    let mut stream = watch_tenant(client).await?;
    let (count, receiver) = tokio::sync::watch::channel(0u64);
    tokio::spawn(async move {
        while let Ok(Some(message)) = stream.message().await {
            if let Some(Message::Event(event)) = message.message
                && matches!(event.r#type(), JobEventType::Succeeded | JobEventType::Failed)
            {
                count.send_modify(|n| *n += 1);
            }
        }
    });
    Ok(receiver)
}

async fn wait_finished(
    done: &mut tokio::sync::watch::Receiver<u64>,
    n: u64,
    limit: Duration,
) -> anyhow::Result<Instant> {
    tokio::time::timeout(limit, done.wait_for(|count| *count >= n))
        .await
        .context("jobs did not finish in time")??;
    Ok(Instant::now())
}

fn report_throughput(path: &str, jobs: u64, started: Instant, submitted: Duration, done: Instant) -> f64 {
    let total = done - started;
    println!(
        "{path} throughput: {jobs} no-op jobs in {:.2} s = {:.0} jobs/s (all submitted after {:.2} s = {:.0} submits/s)",
        total.as_secs_f64(),
        jobs as f64 / total.as_secs_f64(),
        submitted.as_secs_f64(),
        jobs as f64 / submitted.as_secs_f64()
    );
    jobs as f64 / total.as_secs_f64()
}

fn report_latency(path: &str, rate: u64, mut latencies: Vec<f64>, expected: u64) {
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{path} latency at {rate} jobs/s for {SECONDS} s: submit→succeeded event p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms ({} of {expected} events)",
        at(0.5),
        at(0.95),
        at(0.99),
        latencies.len()
    );
}

/// Submit times by job id, and latencies once their `succeeded` event arrives.
#[derive(Default)]
struct Clock {
    submitted: HashMap<String, Instant>,
    /// Events that beat their submit's response (the id was not known yet).
    early: HashMap<String, Instant>,
    latencies: Vec<f64>,
}

impl Clock {
    fn submitted(&mut self, id: String, at: Instant) {
        match self.early.remove(&id) {
            Some(seen) => self.latencies.push((seen - at).as_secs_f64() * 1000.0),
            None => {
                self.submitted.insert(id, at);
            }
        }
    }

    fn succeeded(&mut self, id: String, seen: Instant) {
        match self.submitted.remove(&id) {
            Some(at) => self.latencies.push((seen - at).as_secs_f64() * 1000.0),
            None => {
                self.early.insert(id, seen);
            }
        }
    }
}

/// Submits `jobs` in batches from [`SUBMITTERS`] clients, each calling
/// `submit(n)` for its next batch of `n`, and reports jobs/s until the last
/// job's `succeeded` event.
async fn throughput<F, Fut>(system: &TestSystem, path: &str, tenant: &str, jobs: u64, submit: F) -> anyhow::Result<f64>
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let mut done = completions(&mut system.jobs_client(tenant).await).await?;
    let mut db = sqlx::PgConnection::connect(&system.admin_url).await?;
    let wal_before: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(&mut db)
        .await?;
    let started = Instant::now();
    let mut submitters = tokio::task::JoinSet::new();
    for s in 0..SUBMITTERS {
        let share = jobs / SUBMITTERS + u64::from(s < jobs % SUBMITTERS);
        let submit = submit.clone();
        submitters.spawn(async move {
            let mut left = share;
            while left > 0 {
                let n = left.min(BATCH);
                submit(n).await?;
                left -= n;
            }
            anyhow::Ok(())
        });
    }
    while let Some(result) = submitters.join_next().await {
        result??;
    }
    let submitted = started.elapsed();
    // The rate per tenth of the jobs, to see whether it falls as tables grow.
    let mut tenths = Vec::with_capacity(10);
    let mut mark = started;
    for tenth in 1..=10 {
        let at = wait_finished(&mut done, jobs * tenth / 10, Duration::from_secs(1800)).await?;
        tenths.push((jobs / 10) as f64 / (at - mark).as_secs_f64());
        mark = at;
    }
    let rate = report_throughput(path, jobs, started, submitted, mark);
    if jobs >= 50_000 {
        let rates: Vec<String> = tenths.iter().map(|r| format!("{r:.0}")).collect();
        println!("  {path}: jobs/s per tenth of the run: {}", rates.join(", "));
    }
    // Everything PostgreSQL wrote to its log for the run (the whole cluster:
    // nothing else runs during a benchmark), per job.
    let wal: i64 = sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::bigint")
        .bind(&wal_before)
        .fetch_one(&mut db)
        .await?;
    println!("  {path}: WAL written {:.0} bytes per job", wal as f64 / jobs as f64);
    Ok(rate)
}

async fn grpc_throughput(system: &TestSystem, tenant: &str, jobs: u64) -> anyhow::Result<f64> {
    let client = system.jobs_client(tenant).await;
    throughput(system, &format!("gRPC {jobs}"), tenant, jobs, move |n| {
        let mut client = client.clone();
        async move {
            let batch = (0..n).map(|_| noop()).collect();
            client.submit_jobs(SubmitJobsRequest { jobs: batch }).await?;
            Ok(())
        }
    })
    .await
}

async fn gateway_throughput(system: &TestSystem, jobs: u64) -> anyhow::Result<f64> {
    let tenant = "bench-http";
    let (http, url, token) = (
        system.http.clone(),
        system.url("/api/v1/jobs/batch"),
        system.token(tenant, "bench"),
    );
    throughput(system, "gateway", tenant, jobs, move |n| {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        async move {
            let batch: Vec<Value> = (0..n).map(|_| json!({"kind": "noop"})).collect();
            let response = http
                .post(&url)
                .bearer_auth(&token)
                .json(&json!({ "jobs": batch }))
                .send()
                .await?;
            anyhow::ensure!(response.status() == 200, "batch submit: {}", response.status());
            Ok(())
        }
    })
    .await
}

/// Calls `submit` (which returns the new job's id) `rate` times a second for
/// [`SECONDS`], timing each from just before the call; waits for `listener`
/// to have seen every `succeeded` event; returns the latencies.
async fn at_fixed_rate<F, Fut>(
    rate: u64,
    clock: &Arc<Mutex<Clock>>,
    listener: tokio::task::JoinHandle<anyhow::Result<()>>,
    submit: F,
) -> anyhow::Result<Vec<f64>>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<String>> + Send + 'static,
{
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let mut pending = tokio::task::JoinSet::new();
    for _ in 0..rate * SECONDS {
        ticker.tick().await;
        let (call, clock) = (submit(), clock.clone());
        pending.spawn(async move {
            let at = Instant::now();
            let id = call.await?;
            clock.lock().unwrap().submitted(id, at);
            anyhow::Ok(())
        });
    }
    while let Some(result) = pending.join_next().await {
        result??;
    }
    tokio::time::timeout(Duration::from_secs(120), listener).await???;
    Ok(std::mem::take(&mut clock.lock().unwrap().latencies))
}

async fn grpc_latency(system: &TestSystem, rate: u64) -> anyhow::Result<()> {
    let tenant = "bench-grpc-latency";
    let clock = Arc::new(Mutex::new(Clock::default()));
    let mut stream = watch_tenant(&mut system.jobs_client(tenant).await).await?;
    let expected = rate * SECONDS;
    let listener = {
        let clock = clock.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            while seen < expected {
                let Some(message) = stream.message().await? else { break };
                if let Some(Message::Event(event)) = message.message
                    && event.r#type() == JobEventType::Succeeded
                {
                    clock.lock().unwrap().succeeded(event.job_id, Instant::now());
                    seen += 1;
                }
            }
            anyhow::Ok(())
        })
    };
    let client = system.jobs_client(tenant).await;
    let latencies = at_fixed_rate(rate, &clock, listener, move || {
        let mut client = client.clone();
        async move { Ok(client.submit_job(noop()).await?.into_inner().job.context("job")?.id) }
    })
    .await?;
    report_latency("gRPC", rate, latencies, expected);
    report_recorded(system, tenant).await
}

/// The part of the latency spent before the event: `finished_at - created_at`
/// as PostgreSQL recorded them.
async fn report_recorded(system: &TestSystem, tenant: &str) -> anyhow::Result<()> {
    let database = sextant_e2e::infra::database_url(&system.admin_url, &format!("e2e_{}_jobs", system.id));
    let pool = sqlx::PgPool::connect(&database).await?;
    let (p50, p95, p99): (f64, f64, f64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.95) WITHIN GROUP (ORDER BY ms), \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) \
         FROM (SELECT extract(epoch FROM finished_at - created_at) * 1000 AS ms FROM jobs \
               WHERE tenant = $1 AND status = 'succeeded') t",
    )
    .bind(tenant)
    .fetch_one(&pool)
    .await?;
    let (queued, ran): (f64, f64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - created_at) * 1000), \
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at) * 1000) \
         FROM jobs WHERE tenant = $1 AND status = 'succeeded'",
    )
    .bind(tenant)
    .fetch_one(&pool)
    .await?;
    pool.close().await;
    println!(
        "  of which created→finished in PostgreSQL: p50 {p50:.1} ms, p95 {p95:.1} ms, p99 {p99:.1} ms \
         (p50 created→started {queued:.1} ms, started→finished {ran:.1} ms)"
    );
    Ok(())
}

async fn gateway_latency(system: &TestSystem, rate: u64) -> anyhow::Result<()> {
    let tenant = "bench-http-latency";
    let token = system.token(tenant, "bench");
    let clock = Arc::new(Mutex::new(Clock::default()));
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(system.ws_url("/api/v1/ws"))?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
    let subscribe = json!({"op": "subscribe", "topic": "jobs"}).to_string();
    socket.send(tungstenite::Message::text(subscribe)).await?;
    let expected = rate * SECONDS;
    let listener = {
        let clock = clock.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            while seen < expected {
                let Some(message) = socket.next().await else { break };
                let tungstenite::Message::Text(text) = message? else {
                    continue;
                };
                let frame: Value = serde_json::from_str(&text)?;
                if frame["type"] == "event" && frame["event"] == "succeeded" {
                    let id = frame["job_id"].as_str().unwrap_or_default().to_owned();
                    clock.lock().unwrap().succeeded(id, Instant::now());
                    seen += 1;
                }
                anyhow::ensure!(frame["type"] != "error", "subscription failed: {frame}");
            }
            anyhow::Ok(())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (http, url) = (system.http.clone(), system.url("/api/v1/jobs"));
    let latencies = at_fixed_rate(rate, &clock, listener, move || {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        async move {
            let response = http
                .post(&url)
                .bearer_auth(&token)
                .json(&json!({"kind": "noop"}))
                .send()
                .await?;
            anyhow::ensure!(response.status() == 201, "submit: {}", response.status());
            let job: Value = response.json().await?;
            Ok(job["id"].as_str().unwrap_or_default().to_owned())
        }
    })
    .await?;
    report_latency("gateway", rate, latencies, expected);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let jobs = env_or("BENCH_JOBS", 20_000);
    let rate = env_or("BENCH_RATE", 500);
    let phases = std::env::var("BENCH_PHASES").unwrap_or_else(|_| "latency,throughput,flatness".into());
    let phases: Vec<&str> = phases.split(',').map(str::trim).collect();
    let work_queues = std::env::var("BENCH_WORK_QUEUES").unwrap_or_else(|_| "quorum".into());
    println!("work queues: {work_queues}");
    let system = TestSystem::builder()
        .env("SEXTANT_TELEMETRY__LOG_FILTER", "info,sextant_jobs=warn")
        .jobs_env("SEXTANT_JOBS__WORKER__CONCURRENCY", "64")
        .jobs_env("SEXTANT_JOBS__DATABASE__MAX_CONNECTIONS", "32")
        .jobs_env("SEXTANT_JOBS__QUEUE__WORK_QUEUES", &work_queues)
        .gateway_env("SEXTANT_GATEWAY__WS__OUTBOUND_BUFFER", "4096")
        .start()
        .await
        .context("no servers: set SEXTANT_TEST_DATABASE_URL and SEXTANT_TEST_AMQP_URL (make bench does)")?;

    let result = async {
        // Latency first, on a settled system: the throughput runs leave tens of
        // thousands of events and dead row versions behind for a while.
        if phases.contains(&"latency") {
            grpc_latency(&system, rate).await?;
            gateway_latency(&system, rate).await?;
        }
        if phases.contains(&"throughput") {
            grpc_throughput(&system, "bench-grpc", jobs).await?;
            gateway_throughput(&system, jobs).await?;
        }
        if phases.contains(&"flatness") {
            let small = grpc_throughput(&system, "bench-small", env_or("BENCH_SMALL_JOBS", 5_000)).await?;
            let large = grpc_throughput(&system, "bench-large", env_or("BENCH_LARGE_JOBS", 200_000)).await?;
            println!(
                "flatness: the large run sustained {:.0} % of the small run's rate",
                large / small * 100.0
            );
        }
        anyhow::Ok(())
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
