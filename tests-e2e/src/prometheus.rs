//! A real Prometheus server (Debian's `prometheus` package) for
//! differential tests and benchmarks: started from a temp directory on a
//! free port with the configuration given, killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::local::free_port;

/// Where the binary is: `SEXTANT_PROMETHEUS`, or `prometheus` on the PATH.
pub fn binary() -> PathBuf {
    std::env::var_os("SEXTANT_PROMETHEUS").map_or_else(|| PathBuf::from("prometheus"), PathBuf::from)
}

pub struct PrometheusServer {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

impl PrometheusServer {
    /// Starts Prometheus with `config` (its YAML) and `extra` flags, and
    /// waits until it is ready.
    pub async fn start(config: &str, extra: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let port = free_port();
        let mut command = Command::new(binary());
        command
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log"))?);
        crate::process::die_with_parent(&mut command);
        let child = command.spawn().map_err(|e| {
            anyhow::anyhow!(
                "cannot start {}: {e} (install Debian's prometheus package: apt-get install prometheus)",
                binary().display()
            )
        })?;
        let mut server = Self { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        let http = reqwest::Client::new();
        loop {
            if let Ok(r) = http.get(server.url("/-/ready")).send().await
                && r.status().is_success()
            {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                anyhow::bail!("prometheus exited with {status}: {}", server.log());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "prometheus not ready in 30 s: {}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
