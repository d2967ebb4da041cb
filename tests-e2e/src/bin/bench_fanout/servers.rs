//! The three servers the probe drives, each behind the same face: where
//! client `i` of topic `k` connects, and how an event is caused on topic `k`.

use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;
use sextant_e2e::TestSystem;

use crate::{FRAMES_PER_EVENT, rss_kib};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Sextant,
    FastApi,
    Floor,
}

/// A child process, killed when dropped.
pub struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub enum Server {
    Sextant {
        system: Box<TestSystem>,
        /// Per topic: its tenant, and the token jobs are submitted with.
        tenants: Vec<(String, String)>,
        jobs_rss_kib: u64,
    },
    FastApi {
        process: Process,
        port: u16,
        http: reqwest::Client,
        next: AtomicUsize,
    },
    Floor {
        process: Process,
        port: u16,
        stdin: Mutex<ChildStdin>,
        next: AtomicUsize,
    },
}

/// The body of an event's frames beside Sextant's: about the same size as a
/// job's event frame.
fn event_frames(id: &str) -> Vec<serde_json::Value> {
    let job = "x".repeat(600);
    ["queued", "started", "succeeded"][..FRAMES_PER_EVENT]
        .iter()
        .map(|event| json!({"event": event, "job_id": id, "job": job}))
        .collect()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Server {
    pub async fn start(target: Target, topics: usize, python: Option<&str>) -> anyhow::Result<Self> {
        match target {
            Target::Sextant => {
                let system = TestSystem::builder()
                    .env("SEXTANT_TELEMETRY__LOG_FILTER", "info,sextant_jobs=warn")
                    .gateway_env("SEXTANT_GATEWAY__WS__MAX_CONNECTIONS_PER_USER", "1")
                    .start()
                    .await
                    .context("no servers: set SEXTANT_TEST_DATABASE_URL and SEXTANT_TEST_AMQP_URL (make bench does)")?;
                let tenants = (0..topics)
                    .map(|k| {
                        let tenant = if topics == 1 {
                            "acme".to_owned()
                        } else {
                            format!("t{k:02}")
                        };
                        let token = system.token(&tenant, "driver");
                        (tenant, token)
                    })
                    .collect();
                let jobs_rss_kib = rss_kib(system.jobs.pid());
                Ok(Server::Sextant {
                    system: Box::new(system),
                    tenants,
                    jobs_rss_kib,
                })
            }
            Target::FastApi => {
                let python = python.context("FANOUT_PYTHON")?;
                let port = free_port()?;
                let child = Command::new(python)
                    .args(["-m", "uvicorn", "fanout_fastapi:app", "--app-dir", "scripts"])
                    .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                    .args(["--workers", "1", "--log-level", "warning", "--backlog", "4096"])
                    .stdin(Stdio::null())
                    .spawn()
                    .context("starting uvicorn")?;
                let process = Process(child);
                let http = reqwest::Client::new();
                for _ in 0..100 {
                    if http
                        .get(format!("http://127.0.0.1:{port}/healthz"))
                        .send()
                        .await
                        .is_ok()
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(Server::FastApi {
                    process,
                    port,
                    http,
                    next: AtomicUsize::new(0),
                })
            }
            Target::Floor => {
                use std::io::BufRead as _;
                let mut child = Command::new(std::env::current_exe()?)
                    .arg("--floor-server")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .context("starting the floor server")?;
                let mut port = String::new();
                std::io::BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut port)?;
                let port = port.trim().parse().context("the floor server's port")?;
                let stdin = Mutex::new(child.stdin.take().context("stdin")?);
                Ok(Server::Floor {
                    process: Process(child),
                    port,
                    stdin,
                    next: AtomicUsize::new(0),
                })
            }
        }
    }

    pub fn target(&self) -> Target {
        match self {
            Server::Sextant { .. } => Target::Sextant,
            Server::FastApi { .. } => Target::FastApi,
            Server::Floor { .. } => Target::Floor,
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Server::Sextant { .. } => "sextant",
            Server::FastApi { .. } => "fastapi",
            Server::Floor { .. } => "floor",
        }
    }

    pub fn pid(&self) -> u32 {
        match self {
            Server::Sextant { system, .. } => system.gateway.pid(),
            Server::FastApi { process, .. } | Server::Floor { process, .. } => process.0.id(),
        }
    }

    /// Where client `i` of `topic` connects, and with which token. Each
    /// Sextant client is its own user: the per-user connection limit stays real.
    pub fn client(&self, i: usize, topic: usize) -> (String, Option<String>) {
        match self {
            Server::Sextant { system, tenants, .. } => (
                system.ws_url("/api/v1/ws"),
                Some(system.token(&tenants[topic].0, &format!("user-{i}"))),
            ),
            Server::FastApi { port, .. } | Server::Floor { port, .. } => {
                (format!("ws://127.0.0.1:{port}/ws?topic={topic}"), None)
            }
        }
    }

    /// Causes one event on `topic`; returns the id its frames carry.
    pub async fn fire(&self, topic: usize) -> anyhow::Result<String> {
        match self {
            Server::Sextant { system, tenants, .. } => {
                let response = system
                    .http
                    .post(system.url("/api/v1/jobs"))
                    .bearer_auth(&tenants[topic].1)
                    .json(&json!({"kind": "noop"}))
                    .send()
                    .await?;
                anyhow::ensure!(response.status() == 201, "submit: {}", response.status());
                let job: serde_json::Value = response.json().await?;
                Ok(job["id"].as_str().context("a job id")?.to_owned())
            }
            Server::FastApi { port, http, next, .. } => {
                let id = format!("event-{}", next.fetch_add(1, Ordering::Relaxed));
                let body = json!({"topic": topic.to_string(), "events": event_frames(&id)});
                let response = http
                    .post(format!("http://127.0.0.1:{port}/publish"))
                    .json(&body)
                    .send()
                    .await?;
                anyhow::ensure!(response.status() == 200, "publish: {}", response.status());
                Ok(id)
            }
            Server::Floor { stdin, next, .. } => {
                use std::io::Write as _;
                let id = format!("event-{}", next.fetch_add(1, Ordering::Relaxed));
                let line = json!({"topic": topic, "frames": event_frames(&id)});
                writeln!(stdin.lock().unwrap(), "{line}")?;
                Ok(id)
            }
        }
    }

    /// What else is worth knowing about the server after a run.
    pub async fn describe(&self) -> String {
        let Server::Sextant {
            system, jobs_rss_kib, ..
        } = self
        else {
            return String::new();
        };
        let streams = system
            .metric(&system.jobs, "sextant_jobs_watch_streams{target=\"tenant\"}")
            .await;
        let slow = system
            .metric(
                &system.gateway,
                "sextant_gateway_ws_connections_closed_total{code=\"4008\"}",
            )
            .await;
        format!(
            "  gateway 4008 closes {slow}; jobs RSS {:.1} -> {:.1} MiB, {streams} watch stream(s)",
            *jobs_rss_kib as f64 / 1024.0,
            rss_kib(system.jobs.pid()) as f64 / 1024.0
        )
    }
}
