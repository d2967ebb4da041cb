//! `make bench-fanout`: live fan-out at N browsers. N WebSocket clients on
//! one gateway, all subscribed to one tenant's `jobs` topic; one job
//! submitted per round (`FANOUT_ROUNDS`, default 20); the time from just
//! before the submit to the job's `queued` frame at each client, on the
//! client's clock. Also: missing deliveries, the gateway's and the jobs
//! service's RSS before and with the N idle subscribed clients, and the jobs
//! service's open watch streams.
//!
//! Beside it, in the same run and with the same client, the prototype's
//! pattern: a FastAPI server (one uvicorn worker) whose `ConnectionManager`
//! loops over its sockets (`scripts/fanout_fastapi.py`), started with the
//! Python named by `FANOUT_PYTHON` (skipped when unset). Each round it
//! broadcasts what a job gives a Sextant client: three frames of about the
//! same size, the first of them timed.
//!
//! `FANOUT_CLIENTS` lists the sizes (default `1000,5000,10000`).
//! `FANOUT_HELLO_ONLY=1` connects the Sextant clients without subscribing,
//! to tell what a connection costs from what its subscription adds.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use sextant_e2e::TestSystem;
use sextant_e2e::ws::Socket;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const CONNECT_CONCURRENCY: usize = 200;
const ROUND_TIMEOUT: Duration = Duration::from_secs(20);

/// What is being driven.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Sextant,
    FastApi,
}

/// One client's receipts: (job id, arrival) of each `queued` frame.
type Receipts = Vec<(String, Instant)>;

struct Outcome {
    latencies: Vec<Duration>,
    missing: usize,
    rss_base_kib: u64,
    rss_idle_kib: u64,
    clients: usize,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The job id of a `queued` frame, found without parsing the whole frame
/// (the client must not be the bottleneck at 10 000 sockets).
fn queued_job(text: &str) -> Option<String> {
    if !text.contains(r#""event":"queued""#) {
        return None;
    }
    let start = text.find(r#""job_id":""#)? + 10;
    let end = start + text[start..].find('"')?;
    Some(text[start..end].to_owned())
}

async fn connect(url: &str, token: Option<&str>) -> anyhow::Result<Socket> {
    let mut request = url.into_client_request()?;
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
    }
    let (socket, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(socket)
}

async fn text(socket: &mut Socket) -> anyhow::Result<String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), socket.next()).await? {
            Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
            Some(Ok(_)) => continue,
            other => bail!("socket ended during the handshake: {other:?}"),
        }
    }
}

/// Connects and subscribes one client; ready to receive once it returns.
async fn open(target: Target, url: &str, token: Option<String>) -> anyhow::Result<Socket> {
    let mut socket = connect(url, token.as_deref()).await?;
    if target == Target::Sextant {
        anyhow::ensure!(text(&mut socket).await?.contains(r#""type":"hello""#));
        if std::env::var_os("FANOUT_HELLO_ONLY").is_some() {
            return Ok(socket);
        }
        let subscribe = json!({"op": "subscribe", "topic": "jobs"}).to_string();
        socket.send(Message::text(subscribe)).await?;
        let subscribed = text(&mut socket).await?;
        anyhow::ensure!(subscribed.contains(r#""type":"subscribed""#), "{subscribed}");
        let snapshot = text(&mut socket).await?;
        anyhow::ensure!(snapshot.contains(r#""type":"snapshot""#), "{snapshot}");
    }
    Ok(socket)
}

/// Reads until stopped, noting each `queued` frame's arrival.
async fn receive(mut socket: Socket, delivered: Arc<AtomicUsize>, mut stop: watch::Receiver<bool>) -> Receipts {
    let mut receipts = Vec::new();
    loop {
        tokio::select! {
            message = socket.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let arrived = Instant::now();
                    if let Some(job) = queued_job(&text) {
                        receipts.push((job, arrived));
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Some(Ok(_)) => {}
                _ => break,
            },
            _ = stop.changed() => break,
        }
    }
    let _ = socket.close(None).await;
    receipts
}

/// How a round's event is caused: returns the id the frames will carry.
trait Trigger {
    async fn fire(&self, round: usize) -> anyhow::Result<String>;
}

struct SubmitJob<'a> {
    system: &'a TestSystem,
    token: String,
}

impl Trigger for SubmitJob<'_> {
    async fn fire(&self, _round: usize) -> anyhow::Result<String> {
        let response = self
            .system
            .http
            .post(self.system.url("/api/v1/jobs"))
            .bearer_auth(&self.token)
            .json(&json!({"kind": "noop"}))
            .send()
            .await?;
        anyhow::ensure!(response.status() == 201, "submit: {}", response.status());
        let job: serde_json::Value = response.json().await?;
        Ok(job["id"].as_str().context("a job id")?.to_owned())
    }
}

struct Publish {
    http: reqwest::Client,
    url: String,
}

impl Trigger for Publish {
    async fn fire(&self, round: usize) -> anyhow::Result<String> {
        let id = format!("round-{round}");
        // What a job gives each Sextant client: three frames of about the
        // same size (queued, started, succeeded).
        let job = "x".repeat(600);
        let events: Vec<_> = ["queued", "started", "succeeded"]
            .iter()
            .map(|event| json!({"event": event, "job_id": id, "job": job}))
            .collect();
        let response = self
            .http
            .post(&self.url)
            .json(&json!({ "events": events }))
            .send()
            .await?;
        anyhow::ensure!(response.status() == 200, "publish: {}", response.status());
        Ok(id)
    }
}

/// Connects `clients` sockets, runs the rounds, and collects the receipts.
async fn drive(
    target: Target,
    url: &str,
    tokens: impl Fn(usize) -> Option<String>,
    clients: usize,
    rounds: usize,
    trigger: &impl Trigger,
    server_pid: u32,
) -> anyhow::Result<Outcome> {
    let rss_base_kib = rss_kib(server_pid);
    let sockets: Vec<Socket> = futures::stream::iter((0..clients).map(|i| open(target, url, tokens(i))))
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let delivered = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = watch::channel(false);
    let receivers: Vec<_> = sockets
        .into_iter()
        .map(|socket| tokio::spawn(receive(socket, delivered.clone(), stopped.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle_kib = rss_kib(server_pid);

    let mut fired: HashMap<String, Instant> = HashMap::new();
    for round in 0..rounds {
        let before = Instant::now();
        let id = trigger.fire(round).await?;
        fired.insert(id, before);
        let deadline = Instant::now() + ROUND_TIMEOUT;
        while delivered.load(Ordering::Relaxed) < clients * (round + 1) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Let the round's other frames (started, succeeded) drain.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.send(true)?;
    let mut latencies = Vec::with_capacity(clients * rounds);
    for receiver in receivers {
        for (job, arrived) in receiver.await? {
            if let Some(before) = fired.get(&job) {
                latencies.push(arrived - *before);
            }
        }
    }
    latencies.sort();
    Ok(Outcome {
        missing: (clients * rounds).saturating_sub(latencies.len()),
        latencies,
        rss_base_kib,
        rss_idle_kib,
        clients,
    })
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(label: &str, outcome: &Outcome, extra: &str) {
    let l = &outcome.latencies;
    let per_connection = (outcome.rss_idle_kib.saturating_sub(outcome.rss_base_kib)) as f64 / outcome.clients as f64;
    println!(
        "{label:<8} clients {:>6}  p50 {:>8.1} ms  p95 {:>8.1} ms  p99 {:>8.1} ms  max {:>8.1} ms  missing {:>5}  \
         server RSS {:>7.1} -> {:>7.1} MiB ({:.1} KiB per connection){extra}",
        outcome.clients,
        percentile(l, 0.50),
        percentile(l, 0.95),
        percentile(l, 0.99),
        l.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0),
        outcome.missing,
        outcome.rss_base_kib as f64 / 1024.0,
        outcome.rss_idle_kib as f64 / 1024.0,
        per_connection,
    );
}

async fn sextant(clients: usize, rounds: usize) -> anyhow::Result<()> {
    let system = TestSystem::builder()
        .env("SEXTANT_TELEMETRY__LOG_FILTER", "info,sextant_jobs=warn")
        .gateway_env("SEXTANT_GATEWAY__WS__MAX_CONNECTIONS_PER_USER", "1")
        .start()
        .await
        .context("no servers: set SEXTANT_TEST_DATABASE_URL and SEXTANT_TEST_AMQP_URL (make bench does)")?;
    let jobs_base = rss_kib(system.jobs.pid());
    let url = system.ws_url("/api/v1/ws");
    let trigger = SubmitJob {
        system: &system,
        token: system.token("acme", "driver"),
    };
    // Each browser is its own user: the per-user connection limit stays real.
    let tokens = |i: usize| Some(system.token("acme", &format!("user-{i}")));
    let streams = "sextant_jobs_watch_streams{target=\"tenant\"}";
    let outcome = drive(
        Target::Sextant,
        &url,
        tokens,
        clients,
        rounds,
        &trigger,
        system.gateway.pid(),
    )
    .await?;
    let watch_streams = system.metric(&system.jobs, streams).await;
    let extra = format!(
        "  jobs RSS {:.1} -> {:.1} MiB, {watch_streams} watch stream(s)",
        jobs_base as f64 / 1024.0,
        rss_kib(system.jobs.pid()) as f64 / 1024.0
    );
    report("sextant", &outcome, &extra);
    Ok(())
}

/// The prototype's broadcast server, on a free port, until dropped.
struct FastApi(Child, u16);

impl Drop for FastApi {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn fastapi(python: &str, clients: usize, rounds: usize) -> anyhow::Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new(python)
        .args(["-m", "uvicorn", "fanout_fastapi:app", "--app-dir", "scripts"])
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--workers", "1", "--log-level", "warning", "--backlog", "4096"])
        .stdin(Stdio::null())
        .spawn()
        .context("starting uvicorn")?;
    let server = FastApi(child, port);
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}", server.1);
    for _ in 0..100 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let trigger = Publish {
        http,
        url: format!("{base}/publish"),
    };
    let url = format!("ws://127.0.0.1:{}/ws", server.1);
    let outcome = drive(
        Target::FastApi,
        &url,
        |_| None,
        clients,
        rounds,
        &trigger,
        server.0.id(),
    )
    .await?;
    report("fastapi", &outcome, "");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sizes: Vec<usize> = std::env::var("FANOUT_CLIENTS")
        .unwrap_or_else(|_| "1000,5000,10000".into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()
        .context("FANOUT_CLIENTS: comma-separated numbers")?;
    let rounds = std::env::var("FANOUT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let python = std::env::var("FANOUT_PYTHON").ok();
    println!("fan-out: one tenant's `jobs` topic, {rounds} rounds, submit -> `queued` frame at each client");
    for clients in sizes {
        sextant(clients, rounds).await?;
        match &python {
            Some(python) => fastapi(python, clients, rounds).await?,
            None => println!("fastapi  skipped: set FANOUT_PYTHON (make bench-fanout does)"),
        }
    }
    Ok(())
}
