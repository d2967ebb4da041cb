//! `make bench-fanout`: live fan-out to many browsers, Sextant beside the
//! prototype's FastAPI broadcast and beside the hardware's floor, all driven
//! by the same probe in the same run.
//!
//! The probe: N WebSocket clients (tokio-tungstenite) on this machine's two
//! cores, with the servers. Each event a server fans out is what one no-op
//! job gives a Sextant client of its `jobs` topic: three frames (queued,
//! started, succeeded); the time measured is from just before the event is
//! caused (the job submitted over HTTP; the FastAPI `POST /publish`; the
//! floor told on its stdin) to the `queued` frame at each client, on the
//! client's clock. Three scenarios (`FANOUT_SCENARIOS`, default all):
//!
//! - `rounds`: N clients on one topic (`FANOUT_CLIENTS`, default
//!   `1000,5000,10000`), one event per round (`FANOUT_ROUNDS`, default 20),
//!   each round after the last was delivered. Also: the server's RSS before
//!   and with the N clients connected, subscribed and idle.
//! - `sustained`: 10,000 clients (`FANOUT_MANY`) on one topic while `FANOUT_RATE` frames per
//!   second per client (default 20: a job every 150 ms) go out for
//!   `FANOUT_SECONDS` (default 30): frames delivered per second, latency,
//!   missing frames, and connections the server closed (4008: slow consumer).
//! - `topics`: 10,000 clients (`FANOUT_MANY`) over 100 topics, one event per topic
//!   per round, the 100 caused at once: many dashboards at once.
//!
//! The servers (see `servers.rs`): Sextant (a fresh system from the release
//! binaries; each client its own user; topic k is tenant `t<k>`'s `jobs`);
//! FastAPI (`scripts/fanout_fastapi.py`, one uvicorn worker, with the Python
//! named by `FANOUT_PYTHON`; skipped when unset); the floor (this binary with
//! `--floor-server`: two threads writing one pre-encoded frame to each of
//! their sockets, no protocol: what loopback TCP here allows).
//! `FANOUT_HELLO_ONLY=1` connects Sextant clients without subscribing, to
//! tell what a connection costs from what its subscription adds.

mod floor;
mod servers;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use sextant_e2e::ws::Socket;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use servers::{Server, Target};

const CONNECT_CONCURRENCY: usize = 200;
const ROUND_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the sustained run waits for the last frames after the last event.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Each client's read buffer: a few frames' worth. tungstenite zeroes the
/// free part of it before every read; at the default 128 KiB that memset
/// was a quarter of the probe's CPU.
const READ_BUFFER: usize = 4096;
/// Frames one event gives each client (queued, started, succeeded).
const FRAMES_PER_EVENT: usize = 3;

/// What one client saw.
#[derive(Default)]
struct Receipts {
    /// (job id, arrival) of each `queued` frame.
    queued: Vec<(String, Instant)>,
    /// Every text frame after the subscription's snapshot.
    frames: usize,
    last_arrival: Option<Instant>,
    /// The close code, when the server closed the connection.
    closed_with: Option<u16>,
}

/// Counters every client adds to as frames arrive.
#[derive(Default)]
struct Counters {
    queued: AtomicUsize,
    frames: AtomicUsize,
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
/// (the probe must not be the bottleneck at 10,000 sockets).
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
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let (socket, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), false).await?;
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
async fn open(target: Target, url: String, token: Option<String>) -> anyhow::Result<Socket> {
    let mut socket = connect(&url, token.as_deref()).await?;
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

/// Reads until stopped or closed, noting each frame.
async fn receive(mut socket: Socket, counters: Arc<Counters>, mut stop: watch::Receiver<bool>) -> Receipts {
    let mut receipts = Receipts::default();
    loop {
        tokio::select! {
            message = socket.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let arrived = Instant::now();
                    receipts.frames += 1;
                    receipts.last_arrival = Some(arrived);
                    counters.frames.fetch_add(1, Ordering::Relaxed);
                    if let Some(job) = queued_job(&text) {
                        receipts.queued.push((job, arrived));
                        counters.queued.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    receipts.closed_with = Some(frame.map_or(1005, |f| u16::from(f.code)));
                    break;
                }
                Some(Ok(_)) => {}
                _ => {
                    receipts.closed_with.get_or_insert(1006);
                    break;
                }
            },
            _ = stop.changed() => break,
        }
    }
    let _ = socket.close(None).await;
    receipts
}

/// Clients connected to a server, receiving.
struct Crowd {
    receivers: Vec<tokio::task::JoinHandle<Receipts>>,
    counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    rss_base_kib: u64,
    rss_idle_kib: u64,
}

impl Crowd {
    /// Connects `clients` sockets, client `i` to topic `i % topics`.
    async fn gather(server: &Server, clients: usize, topics: usize) -> anyhow::Result<Self> {
        let rss_base_kib = rss_kib(server.pid());
        let sockets: Vec<Socket> = futures::stream::iter((0..clients).map(|i| {
            let (url, token) = server.client(i, i % topics);
            open(server.target(), url, token)
        }))
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
        let counters = Arc::new(Counters::default());
        let (stop, stopped) = watch::channel(false);
        let receivers = sockets
            .into_iter()
            .map(|socket| tokio::spawn(receive(socket, counters.clone(), stopped.clone())))
            .collect();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_idle_kib = rss_kib(server.pid());
        Ok(Self {
            receivers,
            counters,
            stop,
            rss_base_kib,
            rss_idle_kib,
        })
    }

    /// Waits until `count` returns at least `want`, or `timeout` passes.
    async fn until(&self, count: impl Fn(&Counters) -> usize, want: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while count(&self.counters) < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn disperse(self) -> anyhow::Result<Vec<Receipts>> {
        self.stop.send(true)?;
        let mut all = Vec::with_capacity(self.receivers.len());
        for receiver in self.receivers {
            all.push(receiver.await?);
        }
        Ok(all)
    }
}

/// Latencies of the `queued` frames of the events in `fired`.
fn latencies(receipts: &[Receipts], fired: &HashMap<String, Instant>) -> Vec<Duration> {
    let mut latencies: Vec<Duration> = receipts
        .iter()
        .flat_map(|r| r.queued.iter())
        .filter_map(|(job, arrived)| fired.get(job).map(|before| *arrived - *before))
        .collect();
    latencies.sort();
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn distribution(l: &[Duration]) -> String {
    format!(
        "p50 {:>7.1} ms  p95 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
        percentile(l, 0.50),
        percentile(l, 0.95),
        percentile(l, 0.99),
        l.last().map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0),
    )
}

fn memory(crowd: &Crowd, clients: usize) -> String {
    let per_connection = crowd.rss_idle_kib.saturating_sub(crowd.rss_base_kib) as f64 / clients as f64;
    format!(
        "server RSS {:.1} -> {:.1} MiB ({per_connection:.1} KiB per connection)",
        crowd.rss_base_kib as f64 / 1024.0,
        crowd.rss_idle_kib as f64 / 1024.0,
    )
}

/// Connections the server closed, by code (none expected).
fn closes(receipts: &[Receipts]) -> String {
    let mut codes: std::collections::BTreeMap<u16, usize> = std::collections::BTreeMap::new();
    for code in receipts.iter().filter_map(|r| r.closed_with) {
        *codes.entry(code).or_default() += 1;
    }
    if codes.is_empty() {
        return "closed 0".into();
    }
    let codes: Vec<String> = codes.iter().map(|(code, n)| format!("{n} with {code}")).collect();
    format!("closed {}", codes.join(", "))
}

/// `rounds` events, one per topic per round, each round once the last was delivered.
async fn rounds(server: &Server, clients: usize, topics: usize, rounds: usize) -> anyhow::Result<()> {
    let crowd = Crowd::gather(server, clients, topics).await?;
    let mut fired: HashMap<String, Instant> = HashMap::new();
    for round in 0..rounds {
        let before = Instant::now();
        let ids = futures::future::try_join_all((0..topics).map(|topic| server.fire(topic))).await?;
        fired.extend(ids.into_iter().map(|id| (id, before)));
        crowd
            .until(
                |c| c.queued.load(Ordering::Relaxed),
                clients * (round + 1),
                ROUND_TIMEOUT,
            )
            .await;
        // Let the round's other frames (started, succeeded) drain.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let memory = memory(&crowd, clients);
    let receipts = crowd.disperse().await?;
    let latencies = latencies(&receipts, &fired);
    let missing = (clients * rounds).saturating_sub(latencies.len());
    let extra = server.describe().await;
    println!(
        "{:<8} clients {clients:>6} topics {topics:>4}  {}  missing {missing:>5}  {}  {memory}{extra}",
        server.label(),
        distribution(&latencies),
        closes(&receipts),
    );
    Ok(())
}

/// Events at a steady rate for a while: what the server sustains.
async fn sustained(server: &Arc<Server>, clients: usize, frames_per_second: f64, seconds: u64) -> anyhow::Result<()> {
    let crowd = Crowd::gather(server, clients, 1).await?;
    let every = Duration::from_secs_f64(FRAMES_PER_EVENT as f64 / frames_per_second);
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let mut firing = tokio::task::JoinSet::new();
    let mut fired: HashMap<String, Instant> = HashMap::new();
    // Events are caused on schedule, whether or not the last has been
    // delivered (or even acknowledged by the server).
    while started.elapsed() < Duration::from_secs(seconds) {
        ticker.tick().await;
        let server = server.clone();
        firing.spawn(async move {
            let before = Instant::now();
            server.fire(0).await.map(|id| (id, before))
        });
    }
    while let Some(result) = firing.join_next().await {
        let (id, before) = result??;
        fired.insert(id, before);
    }
    let events = fired.len();
    crowd
        .until(
            |c| c.frames.load(Ordering::Relaxed),
            clients * events * FRAMES_PER_EVENT,
            DRAIN_TIMEOUT,
        )
        .await;
    let receipts = crowd.disperse().await?;
    let latencies = latencies(&receipts, &fired);
    let frames: usize = receipts.iter().map(|r| r.frames).sum();
    let last = receipts.iter().filter_map(|r| r.last_arrival).max().unwrap_or(started);
    let per_second = frames as f64 / (last - started).as_secs_f64();
    let missing = (clients * events * FRAMES_PER_EVENT).saturating_sub(frames);
    let extra = server.describe().await;
    println!(
        "{:<8} clients {clients:>6} for {seconds} s at {frames_per_second} frames/s each: {events} events, \
         {frames} frames delivered ({per_second:.0}/s)  {}  missing {missing} frames  {}{extra}",
        server.label(),
        distribution(&latencies),
        closes(&receipts),
    );
    Ok(())
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(value) => value.trim().parse().ok().with_context(|| format!("{name}: {value:?}")),
        Err(_) => Ok(default),
    }
}

/// The servers of one measurement, in the order they run.
fn targets(python: Option<&str>) -> Vec<Target> {
    let mut targets = vec![Target::Floor, Target::Sextant];
    if python.is_some() {
        targets.push(Target::FastApi);
    }
    targets
}

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("--floor-server") {
        return floor::serve();
    }
    run()
}

#[tokio::main]
async fn run() -> anyhow::Result<()> {
    let sizes: Vec<usize> = std::env::var("FANOUT_CLIENTS")
        .unwrap_or_else(|_| "1000,5000,10000".into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()
        .context("FANOUT_CLIENTS: comma-separated numbers")?;
    let round_count = env_or("FANOUT_ROUNDS", 20)?;
    let rate = env_or("FANOUT_RATE", 20.0)?;
    let seconds = env_or("FANOUT_SECONDS", 30)?;
    let many = env_or("FANOUT_MANY", 10_000)?;
    let scenarios = std::env::var("FANOUT_SCENARIOS").unwrap_or_else(|_| "rounds,sustained,topics".into());
    let python = std::env::var("FANOUT_PYTHON").ok();
    if python.is_none() {
        println!("fastapi  skipped: set FANOUT_PYTHON (make bench-fanout does)");
    }
    for scenario in scenarios.split(',').map(str::trim) {
        match scenario {
            "rounds" => {
                println!("rounds: one topic, {round_count} events, event -> `queued` frame at each client");
                for &clients in &sizes {
                    for target in targets(python.as_deref()) {
                        let server = Server::start(target, 1, python.as_deref()).await?;
                        rounds(&server, clients, 1, round_count).await?;
                        drop(server);
                    }
                }
            }
            "sustained" => {
                println!("sustained: one topic, {many} clients, {rate} frames/s each for {seconds} s");
                for target in targets(python.as_deref()) {
                    let server = Arc::new(Server::start(target, 1, python.as_deref()).await?);
                    sustained(&server, many, rate, seconds).await?;
                }
            }
            "topics" => {
                println!("topics: {many} clients over 100 topics, {round_count} rounds of one event per topic");
                for target in targets(python.as_deref()) {
                    let server = Server::start(target, 100, python.as_deref()).await?;
                    rounds(&server, many, 100, round_count).await?;
                }
            }
            other => bail!("FANOUT_SCENARIOS: unknown scenario {other:?} (rounds, sustained, topics)"),
        }
    }
    Ok(())
}
