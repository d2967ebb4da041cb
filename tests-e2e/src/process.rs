//! One real service binary under test: spawned with its environment, its JSON
//! log lines captured (and echoed when `TEST_LOG` is set), its bound address
//! read from its `listening` line, and killed if the test process dies.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Where the built binaries are: `SEXTANT_BIN_DIR`, or the target directory
/// this test binary was built into.
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("SEXTANT_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current exe");
    // Tests run from target/<profile>/deps/, binaries such as the benchmark
    // from target/<profile>/: the services are in target/<profile>/ either way.
    let dir = exe.parent().expect("exe dir");
    let dir = if dir.ends_with("deps") {
        dir.parent().expect("profile dir")
    } else {
        dir
    };
    dir.to_path_buf()
}

pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first with `cargo build --bins` (`make test` does)",
        path.display()
    );
    path
}

pub struct ServiceProcess {
    pub name: String,
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    pub addr: SocketAddr,
    /// The Prometheus endpoint's address, once the service has logged it.
    metrics: Arc<Mutex<Option<SocketAddr>>>,
}

impl ServiceProcess {
    /// Starts `binary` and waits until it logs the address it listens on.
    pub fn spawn(name: &str, binary_name: &str, env: &[(String, String)]) -> anyhow::Result<Self> {
        let mut command = Command::new(binary(binary_name));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        die_with_parent(&mut command);
        let mut child = command.spawn()?;

        let logs = Arc::new(Mutex::new(Vec::new()));
        let metrics = Arc::new(Mutex::new(None));
        let (addr_tx, addr_rx) = mpsc::channel();
        let echo = std::env::var_os("TEST_LOG").is_some();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        for (stream, addr_tx) in [
            (Box::new(stdout) as Box<dyn std::io::Read + Send>, Some(addr_tx)),
            (Box::new(stderr), None),
        ] {
            let logs = logs.clone();
            let metrics = metrics.clone();
            let label = name.to_owned();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if echo {
                        eprintln!("[{label}] {line}");
                    }
                    match listening_addr(&line) {
                        Some(("listening", addr)) => {
                            if let Some(tx) = &addr_tx {
                                let _ = tx.send(addr);
                            }
                        }
                        Some(("metrics listening", addr)) => *metrics.lock().unwrap() = Some(addr),
                        _ => {}
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }

        let mut process = ServiceProcess {
            name: name.to_owned(),
            child,
            logs,
            addr: "0.0.0.0:0".parse().unwrap(),
            metrics,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match addr_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(addr) => {
                    process.addr = addr;
                    return Ok(process);
                }
                Err(_) if Instant::now() > deadline => {
                    anyhow::bail!("{name} did not start within 60 s; logs:\n{}", process.logs())
                }
                Err(_) => {
                    if let Some(status) = process.child.try_wait()? {
                        std::thread::sleep(Duration::from_millis(100));
                        anyhow::bail!(
                            "{name} exited with {status} before listening; logs:\n{}",
                            process.logs()
                        );
                    }
                }
            }
        }
    }

    /// The Prometheus endpoint's address (backends log it as they start).
    pub fn metrics_addr(&self) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(addr) = *self.metrics.lock().unwrap() {
                return addr;
            }
            assert!(Instant::now() < deadline, "{} logged no metrics address", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub fn signal(&self, signal: i32) {
        send_signal(self.pid(), signal);
    }

    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `("listening" | "metrics listening", addr)` from a JSON log line.
fn listening_addr(line: &str) -> Option<(&'static str, SocketAddr)> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let what = match value.get("message")?.as_str()? {
        "listening" => "listening",
        "metrics listening" => "metrics listening",
        _ => return None,
    };
    Some((what, value.get("addr")?.as_str()?.parse().ok()?))
}

/// kill(2); whether the signal was sent.
#[allow(unsafe_code)]
pub(crate) fn send_signal(pid: u32, signal: i32) -> bool {
    let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// Children die with the test process even when it is killed (no Drop runs then).
#[allow(unsafe_code)]
pub(crate) fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the child's own state.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}
