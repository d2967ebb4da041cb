//! Throwaway PostgreSQL and RabbitMQ servers for tests that stop and start
//! them: the shared servers must never be touched, since other tests run
//! against them in parallel. Each runs from a temp dir on free ports, as the
//! service's own system user, and is removed on drop.
//!
//! These need the server packages installed locally (as on the project's CI
//! machines) and root, to run them as their system users.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command.stdin(Stdio::null()).output()?;
    anyhow::ensure!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

fn chown(path: &Path, user: &str) -> anyhow::Result<()> {
    run(Command::new("chown").arg("-R").arg(user).arg(path))
}

async fn wait_for_port(port: u16, up: bool, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let open = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok();
        if open == up {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "port {port} not {} after {timeout:?}",
            if up { "open" } else { "closed" }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether this machine can run the throwaway servers.
pub fn available() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    root && postgres_bin().is_some()
        && Path::new("/usr/sbin/rabbitmq-server").exists()
        && Path::new("/usr/sbin/ip").exists()
}

fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

/// A PostgreSQL cluster of its own.
pub struct LocalPostgres {
    dir: TempDir,
    bin: PathBuf,
    pub port: u16,
}

impl LocalPostgres {
    pub async fn start() -> anyhow::Result<Self> {
        let bin =
            postgres_bin().ok_or_else(|| anyhow::anyhow!("no PostgreSQL server binaries under /usr/lib/postgresql"))?;
        let dir = tempfile::Builder::new().prefix("sextant-pg-").tempdir()?;
        chown(dir.path(), "postgres")?;
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("initdb"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]))?;
        let server = LocalPostgres {
            dir,
            bin,
            port: free_port(),
        };
        server.start_again().await?;
        Ok(server)
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self) -> Command {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"));
        command
    }

    pub async fn start_again(&self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        run(self
            .pg_ctl()
            .args(["-w", "-o", &options, "-l"])
            .arg(self.dir.path().join("log"))
            .arg("start"))?;
        wait_for_port(self.port, true, Duration::from_secs(30)).await
    }

    pub async fn stop(&self) -> anyhow::Result<()> {
        run(self.pg_ctl().args(["-w", "-m", "fast", "stop"]))?;
        wait_for_port(self.port, false, Duration::from_secs(30)).await
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        let _ = self
            .pg_ctl()
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A RabbitMQ node of its own.
pub struct LocalRabbit {
    dir: TempDir,
    pub node: String,
    pub port: u16,
    dist_port: u16,
}

impl LocalRabbit {
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("sextant-rmq-").tempdir()?;
        let port = free_port();
        std::fs::write(dir.path().join("enabled_plugins"), "[].\n")?;
        std::fs::write(
            dir.path().join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{port}\n"),
        )?;
        chown(dir.path(), "rabbitmq")?;
        let server = LocalRabbit {
            node: format!("sextant-e2e-{}@localhost", uuid::Uuid::new_v4().simple()),
            port,
            dist_port: free_port(),
            dir,
        };
        server.start_again().await?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn command(&self, program: &str) -> Command {
        let d = self.dir.path();
        let mut command = Command::new(program);
        command
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"));
        command
    }

    pub async fn start_again(&self) -> anyhow::Result<()> {
        run(self.command("rabbitmq-server").arg("-detached"))?;
        wait_for_port(self.port, true, Duration::from_secs(90)).await
    }

    pub async fn stop(&self) -> anyhow::Result<()> {
        run(self.command("rabbitmqctl").args(["-n", &self.node, "stop"]))?;
        wait_for_port(self.port, false, Duration::from_secs(30)).await
    }
}

impl Drop for LocalRabbit {
    fn drop(&mut self) {
        let _ = self
            .command("rabbitmqctl")
            .args(["-n", &self.node, "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
