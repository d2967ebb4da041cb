//! Every service twice, behind a load balancer: two gateways, two analytics,
//! two jobs and two exports replicas on one broker (a cluster's node list)
//! and the given PostgreSQL, each pair behind an HAProxy frontend, as a
//! Kubernetes Service or a cloud load balancer would put them. Services
//! reach each other only through those frontends, so a replica that stops
//! is routed around (HAProxy checks each server every 300 ms and sends a
//! refused connection to the other), and a replica restarted on its port is
//! taken back.
//!
//! Each replica keeps its port across restarts; [`Fleet::restart`] stops one
//! with a signal and starts it again with the same settings.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::infra;
use crate::local::free_port;
use crate::process::ServiceProcess;
use crate::tokens;

pub const SERVICES: [&str; 4] = ["gateway", "analytics", "jobs", "exports"];

pub struct Replica {
    pub service: &'static str,
    /// 1 or 2.
    pub index: usize,
    pub port: u16,
    env: Vec<(String, String)>,
    pub process: ServiceProcess,
    /// What its earlier processes (before restarts) used.
    used: Usage,
}

impl Replica {
    pub fn name(&self) -> String {
        format!("{}-{}", self.service, self.index)
    }

    /// What this replica's processes used so far: the largest peak RSS,
    /// and the CPU time summed over restarts.
    pub fn usage(&self) -> Usage {
        let now = Usage::of(self.process.pid());
        Usage {
            peak_rss_kib: self.used.peak_rss_kib.max(now.peak_rss_kib),
            cpu_seconds: self.used.cpu_seconds + now.cpu_seconds,
        }
    }
}

/// A process's peak resident memory and CPU time, from /proc.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub peak_rss_kib: u64,
    pub cpu_seconds: f64,
}

impl Usage {
    fn of(pid: u32) -> Self {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let peak_rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        // utime and stime, fields 14 and 15, after the parenthesised name.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks: u64 = fields
            .get(11..13)
            .map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
        let per_second = clock_ticks();
        Self {
            peak_rss_kib,
            cpu_seconds: ticks as f64 / per_second,
        }
    }
}

#[allow(unsafe_code)]
fn clock_ticks() -> f64 {
    // SAFETY: sysconf(3) has no memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

pub struct Fleet {
    pub id: String,
    pub jwt_secret: String,
    pub replicas: Vec<Replica>,
    /// The HAProxy frontend of each service.
    pub frontends: BTreeMap<&'static str, u16>,
    haproxy: std::process::Child,
    admin_url: String,
    databases: Vec<String>,
    /// Held for its lifetime: HAProxy's config and the exports store.
    _dir: TempDir,
}

pub struct FleetOptions {
    pub admin_url: String,
    /// `amqp.url`: one URL or a JSON list.
    pub amqp_url: String,
    /// Settings for every replica of a service: `(service, key, value)`.
    pub env: Vec<(&'static str, String, String)>,
}

impl Fleet {
    pub async fn start(options: FleetOptions) -> anyhow::Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let jwt_secret = format!("fleet-jwt-{}", uuid::Uuid::new_v4().simple());
        let internal_secret = format!("fleet-internal-{}", uuid::Uuid::new_v4().simple());
        let dir = tempfile::Builder::new().prefix("sextant-fleet-").tempdir()?;
        let frontends: BTreeMap<&'static str, u16> = SERVICES.iter().map(|s| (*s, free_port())).collect();
        let ports: BTreeMap<(&'static str, usize), u16> = SERVICES
            .iter()
            .flat_map(|s| [(*s, 1), (*s, 2)])
            .map(|k| (k, free_port()))
            .collect();
        let via = |service: &str| format!("http://127.0.0.1:{}", frontends[service]);

        let haproxy = start_haproxy(dir.path(), &frontends, &ports).await?;
        let mut databases = Vec::new();
        let mut replicas = Vec::new();
        for service in SERVICES {
            let upper = service.to_uppercase();
            let mut env: Vec<(String, String)> = vec![
                ("SEXTANT_INTERNAL__SECRET".into(), internal_secret.clone()),
                ("SEXTANT_TELEMETRY__LOG_FILTER".into(), "info".into()),
            ];
            let mut set = |key: &str, value: String| env.push((format!("SEXTANT_{upper}__{key}"), value));
            if service == "gateway" {
                set("HTTP__WORKERS", "2".into());
                set("HTTP__SHUTDOWN_GRACE", "5s".into());
                set("AUTH__JWT_SECRET", jwt_secret.clone());
                set("BACKENDS__ANALYTICS_URL", via("analytics"));
                set("BACKENDS__JOBS_URL", via("jobs"));
                set("BACKENDS__EXPORTS_URL", via("exports"));
            } else {
                let database = format!("e2e_{id}_{service}");
                databases.push(database.clone());
                set("GRPC__METRICS_PORT", "0".into());
                set("GRPC__HEALTH_INTERVAL", "200ms".into());
                set("DATABASE__URL", infra::database_url(&options.admin_url, &database));
                set("DATABASE__STARTUP_TIMEOUT", "20s".into());
            }
            match service {
                "analytics" => {
                    set("AMQP__URL", options.amqp_url.clone());
                    set("AMQP__PREFIX", format!("e2e-{id}"));
                    set("AMQP__RECONNECT_MAX_DELAY", "1s".into());
                    set("JOBS__URL", via("jobs"));
                    set("ALERTS__WEBHOOK_HOSTS", r#"["127.0.0.1"]"#.into());
                }
                "jobs" => {
                    set("AMQP__URL", options.amqp_url.clone());
                    set("AMQP__PREFIX", format!("e2e-{id}"));
                    set("AMQP__RECONNECT_MAX_DELAY", "1s".into());
                    set("QUEUE__DIAGNOSTIC_KINDS", "true".into());
                    set("NOTIFY__ALLOW_HOSTS", r#"["127.0.0.1"]"#.into());
                    set("ANALYTICS__URL", via("analytics"));
                    set("EXPORTS__URL", via("exports"));
                }
                "exports" => {
                    // Both replicas share one store, as pods share a volume.
                    set("STORAGE__ROOT", dir.path().join("files").display().to_string());
                    set("STORAGE__SCRATCH", dir.path().join("scratch").display().to_string());
                    set("ANALYTICS__URL", via("analytics"));
                    set("JOBS__URL", via("jobs"));
                }
                _ => {}
            }
            for (s, key, value) in &options.env {
                if *s == service {
                    env.push((key.clone(), value.clone()));
                }
            }
            for index in [1, 2] {
                let port = ports[&(service, index)];
                let mut env = env.clone();
                let port_key = if service == "gateway" {
                    "SEXTANT_GATEWAY__HTTP__PORT".to_owned()
                } else {
                    format!("SEXTANT_{upper}__GRPC__PORT")
                };
                env.push((port_key, port.to_string()));
                let name = format!("{service}-{index}");
                let process = ServiceProcess::spawn(&name, &format!("sextant-{service}"), &env)?;
                replicas.push(Replica {
                    service,
                    index,
                    port,
                    env,
                    process,
                    used: Usage::default(),
                });
            }
        }
        let fleet = Fleet {
            id,
            jwt_secret,
            replicas,
            frontends,
            haproxy,
            admin_url: options.admin_url,
            databases,
            _dir: dir,
        };
        fleet.wait_ready(Duration::from_secs(60)).await?;
        Ok(fleet)
    }

    /// The gateway frontend's base URL (HTTP; `ws://` for WebSockets).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.frontends["gateway"])
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.frontends["gateway"])
    }

    pub fn token(&self, tenant: &str, user: &str) -> String {
        tokens::sign(&self.jwt_secret, &tokens::claims(tenant, user))
    }

    pub fn replica(&self, service: &str, index: usize) -> &Replica {
        self.replicas
            .iter()
            .find(|r| r.service == service && r.index == index)
            .expect("a replica of the fleet")
    }

    fn replica_mut(&mut self, service: &str, index: usize) -> &mut Replica {
        self.replicas
            .iter_mut()
            .find(|r| r.service == service && r.index == index)
            .expect("a replica of the fleet")
    }

    /// Stops a replica with `signal` (SIGTERM: it drains; SIGKILL: it just
    /// dies), waits for it to exit, and starts it again on its port. Returns
    /// how long it took to exit.
    pub async fn restart(&mut self, service: &str, index: usize, signal: i32) -> anyhow::Result<Duration> {
        let replica = self.replica_mut(service, index);
        let name = replica.name();
        // What it used until now (read while it still runs).
        replica.used = replica.usage();
        replica.process.signal(signal);
        let started = Instant::now();
        let process = &mut replica.process;
        let exited = tokio::task::block_in_place(|| process.wait_exit(Duration::from_secs(30)));
        anyhow::ensure!(exited.is_some(), "{name} did not exit within 30 s of signal {signal}");
        let drained = started.elapsed();
        replica.process = ServiceProcess::spawn(&name, &format!("sextant-{}", replica.service), &replica.env)?;
        Ok(drained)
    }

    /// Waits until the gateway frontend answers `/readyz` with 200 through
    /// both gateways (every backend reachable).
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let deadline = Instant::now() + timeout;
        for index in [1, 2] {
            let url = format!("http://127.0.0.1:{}/readyz", self.replica("gateway", index).port);
            loop {
                let status = http.get(&url).send().await.map(|r| r.status().as_u16());
                if matches!(status, Ok(200)) {
                    break;
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "gateway-{index} not ready in {timeout:?} ({status:?})\n{}",
                    self.all_logs()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    pub fn all_logs(&self) -> String {
        self.replicas
            .iter()
            .map(|r| format!("--- {} ---\n{}", r.name(), r.process.logs()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.haproxy.kill();
        let _ = self.haproxy.wait();
        for replica in &mut self.replicas {
            if replica.process.is_running() {
                replica.process.signal(libc::SIGKILL);
                replica.process.wait_exit(Duration::from_secs(5));
            }
        }
        infra::drop_databases(self.admin_url.clone(), std::mem::take(&mut self.databases));
    }
}

/// HAProxy in TCP mode: gRPC's HTTP/2 connections and the gateway's HTTP
/// and WebSocket connections pass through whole, spread round-robin over the
/// servers it sees up; a connection refused by a stopped server is sent to
/// the other (`option redispatch`).
async fn start_haproxy(
    dir: &std::path::Path,
    frontends: &BTreeMap<&'static str, u16>,
    ports: &BTreeMap<(&'static str, usize), u16>,
) -> anyhow::Result<std::process::Child> {
    let mut config = String::from(
        "global\n  maxconn 8000\n\
         defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 1h\n  timeout server 1h\n  \
         timeout tunnel 1h\n  retries 3\n  option redispatch\n",
    );
    for (service, port) in frontends {
        config.push_str(&format!(
            "listen {service}\n  bind 127.0.0.1:{port}\n  balance roundrobin\n  default-server check inter 300ms fall 1 rise 1\n"
        ));
        for index in [1, 2] {
            config.push_str(&format!(
                "  server {service}-{index} 127.0.0.1:{}\n",
                ports[&(*service, index)]
            ));
        }
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config)?;
    let mut command = std::process::Command::new("haproxy");
    command
        .arg("-f")
        .arg(&path)
        .arg("-db")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("haproxy.log"))?);
    crate::process::die_with_parent(&mut command);
    let child = command.spawn().map_err(|e| anyhow::anyhow!("starting haproxy: {e}"))?;
    let port = frontends["gateway"];
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "haproxy did not listen on {port}: {}",
            std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(child)
}
