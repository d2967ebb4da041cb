//! WebSocket subscribers of their tenant's `jobs` topic, written from
//! `docs/websocket.md` as a frontend would: each keeps the last `version`,
//! reconnects on any close with full-jitter backoff (after a `goodbye`, its
//! `reconnect_after_ms`), and resubscribes with `after_version`. Each checks
//! what it gets: every job's `job_version` must rise by exactly one per
//! event (a jump is a gap, a repeat a duplicate), the topic's `version` must
//! rise, and a resumed subscription must never fall back to a snapshot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::load::token;
use super::report::Report;
use super::{SoakOptions, Stop};
use crate::fleet::Fleet;

#[derive(Default)]
struct State {
    tenant: usize,
    /// The topic's version of the last frame.
    last: u64,
    /// Each job's last `job_version` seen.
    jobs: HashMap<String, u64>,
    /// Each job's `started` events' attempts, and its terminal events.
    started: HashMap<String, Vec<i64>>,
    terminal: HashMap<String, u32>,
    subscribed: bool,
    frames: u64,
    reconnects: u64,
    problems: Vec<String>,
}

pub(crate) struct Subscribers {
    stop: Stop,
    tasks: JoinSet<()>,
    states: Vec<Arc<Mutex<State>>>,
}

impl Subscribers {
    /// Connects `options.subscribers` sockets through the gateways' load
    /// balancer, each as a user of its own, and waits until all are subscribed.
    pub(crate) async fn start(fleet: &Fleet, options: &SoakOptions, lifetime: Duration) -> anyhow::Result<Self> {
        let stop = Stop::default();
        let mut tasks = JoinSet::new();
        let mut states = Vec::new();
        let url = fleet.ws_url("/api/v1/ws");
        for i in 0..options.subscribers {
            let tenant = i % options.tenants;
            let state = Arc::new(Mutex::new(State {
                tenant,
                ..Default::default()
            }));
            states.push(state.clone());
            let token = token(fleet, tenant, &format!("viewer-{i}"), lifetime);
            tasks.spawn(follow(url.clone(), token, state, stop.clone()));
            if i % 50 == 49 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let waiting = states.iter().filter(|s| !s.lock().unwrap().subscribed).count();
            if waiting == 0 {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{waiting} subscribers not subscribed after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Self { stop, tasks, states })
    }

    /// Waits until every subscriber holds every accepted job of its tenant
    /// at its final version (or `timeout` passes).
    pub(crate) async fn wait_complete(
        &self,
        jobs: &[(usize, String)],
        finals: &HashMap<String, u64>,
        timeout: Duration,
    ) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline && self.behind(jobs, finals) > 0 {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Subscribers still missing some job's last version.
    fn behind(&self, jobs: &[(usize, String)], finals: &HashMap<String, u64>) -> usize {
        self.states
            .iter()
            .filter(|state| {
                let state = state.lock().unwrap();
                jobs.iter().filter(|(t, _)| *t == state.tenant).any(|(_, id)| {
                    finals
                        .get(id)
                        .is_some_and(|v| state.jobs.get(id).copied().unwrap_or(0) < *v)
                })
            })
            .count()
    }

    pub(crate) async fn stop_and_check(
        &mut self,
        jobs: &[(usize, String)],
        finals: &HashMap<String, u64>,
        report: &mut Report,
    ) {
        self.stop.set();
        while self.tasks.join_next().await.is_some() {}
        report.subscribers = self.states.len();
        let mut attempts_checked = std::collections::HashSet::new();
        for (i, state) in self.states.iter().enumerate() {
            let state = state.lock().unwrap();
            report.subscriber_frames += state.frames;
            report.subscriber_reconnects += state.reconnects;
            for problem in state.problems.iter().take(5) {
                report.losses.push(format!("subscriber {i}: {problem}"));
            }
            let mut missing = 0;
            for (_, id) in jobs.iter().filter(|(t, _)| *t == state.tenant) {
                let want = finals.get(id).copied().unwrap_or(0);
                let got = state.jobs.get(id).copied().unwrap_or(0);
                if got != want {
                    missing += 1;
                    if missing <= 3 {
                        report
                            .losses
                            .push(format!("subscriber {i}: job {id} last seen at version {got} of {want}"));
                    }
                }
                // What every subscriber saw of a job's attempts is the same
                // stream; check it once per job.
                if attempts_checked.insert(id.clone()) {
                    let started = state.started.get(id).cloned().unwrap_or_default();
                    let mut distinct = started.clone();
                    distinct.sort_unstable();
                    distinct.dedup();
                    if distinct.len() != started.len() {
                        report
                            .losses
                            .push(format!("job {id}: an attempt started twice: {started:?}"));
                    }
                    let ended = state.terminal.get(id).copied().unwrap_or(0);
                    if ended != 1 {
                        report.losses.push(format!("job {id}: {ended} terminal events"));
                    }
                }
            }
            if missing > 3 {
                report
                    .losses
                    .push(format!("subscriber {i}: {} more jobs short", missing - 3));
            }
        }
    }
}

async fn follow(url: String, token: String, state: Arc<Mutex<State>>, stop: Stop) {
    let mut attempt: u32 = 0;
    let (mut min_delay, mut max_delay) = (1000u64, 30000u64);
    while !stop.is_set() {
        let mut wait_ms = None;
        let connected_at = Instant::now();
        if let Ok(mut socket) = connect(&url, &token).await {
            let after = state.lock().unwrap().last;
            let mut op = json!({"op": "subscribe", "id": 1, "topic": "jobs"});
            if after > 0 {
                op["after_version"] = json!(after);
            }
            if socket.send(Message::text(op.to_string())).await.is_ok() {
                while !stop.is_set() {
                    let message = match tokio::time::timeout(Duration::from_millis(500), socket.next()).await {
                        Err(_) => continue,
                        Ok(Some(Ok(message))) => message,
                        Ok(_) => break,
                    };
                    let text = match message {
                        Message::Text(text) => text,
                        Message::Close(_) => break,
                        _ => continue,
                    };
                    let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                        state.lock().unwrap().problems.push(format!("not JSON: {text}"));
                        continue;
                    };
                    match frame["type"].as_str() {
                        Some("hello") => {
                            min_delay = frame["reconnect"]["min_delay_ms"].as_u64().unwrap_or(min_delay);
                            max_delay = frame["reconnect"]["max_delay_ms"].as_u64().unwrap_or(max_delay);
                        }
                        Some("goodbye") => wait_ms = frame["reconnect_after_ms"].as_u64(),
                        _ => take(&mut state.lock().unwrap(), &frame, after > 0),
                    }
                }
            }
            let _ = socket.close(None).await;
        }
        if stop.is_set() {
            return;
        }
        // Reset the backoff after a connection that stayed up a while.
        if connected_at.elapsed() > Duration::from_secs(60) {
            attempt = 0;
        }
        state.lock().unwrap().reconnects += 1;
        let cap = max_delay.min(min_delay.saturating_mul(1 << attempt.min(16)));
        attempt += 1;
        let wait = wait_ms.unwrap_or_else(|| rand_below(cap));
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
}

/// One frame of the `jobs` topic.
fn take(state: &mut State, frame: &Value, resumed: bool) {
    state.frames += 1;
    match frame["type"].as_str() {
        Some("subscribed") => state.subscribed = true,
        Some("snapshot") => {
            if resumed {
                state
                    .problems
                    .push(format!("a snapshot where a resume from {} was asked", state.last));
            }
            state.last = frame["version"].as_u64().unwrap_or(0);
            for job in frame["jobs"].as_array().into_iter().flatten() {
                if let Some(id) = job["id"].as_str() {
                    state.jobs.insert(id.to_owned(), job["version"].as_u64().unwrap_or(0));
                }
            }
        }
        Some("event") => {
            let version = frame["version"].as_u64().unwrap_or(0);
            if version <= state.last {
                state
                    .problems
                    .push(format!("topic version {version} after {}", state.last));
                return;
            }
            state.last = version;
            let id = frame["job_id"].as_str().unwrap_or_default().to_owned();
            let job_version = frame["job_version"].as_u64().unwrap_or(0);
            let before = state.jobs.get(&id).copied().unwrap_or(0);
            if job_version != before + 1 {
                let what = if job_version <= before { "duplicate" } else { "gap" };
                state
                    .problems
                    .push(format!("{what}: job {id} version {job_version} after {before}"));
            }
            state.jobs.insert(id.clone(), job_version.max(before));
            match frame["event"].as_str() {
                Some("started") => state
                    .started
                    .entry(id)
                    .or_default()
                    .push(frame["job"]["attempt"].as_i64().unwrap_or(0)),
                Some("succeeded" | "failed" | "cancelled") => *state.terminal.entry(id).or_insert(0) += 1,
                _ => {}
            }
        }
        Some("error") => state.problems.push(format!("error frame: {frame}")),
        _ => {}
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str, token: &str) -> anyhow::Result<Socket> {
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&format!("sextant.v1, bearer.{token}"))?,
    );
    let (socket, _) =
        tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(request)).await??;
    Ok(socket)
}

fn rand_below(n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        (uuid::Uuid::new_v4().as_u128() % u128::from(n)) as u64
    }
}
