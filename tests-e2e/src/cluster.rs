//! A real three-node RabbitMQ cluster on this machine, for tests that kill a
//! node or cut one off. Each node runs in a network namespace of its own
//! (its own address, epmd and ports), joined to a bridge in the test's
//! namespace by a veth pair, and clustered with `rabbitmqctl join_cluster`;
//! cutting a node's veth is a real network partition, for its peers and its
//! clients alike. The cluster runs `pause_minority` with a 10 s
//! `net_ticktime`, as `docs/deploy.md` recommends: a node cut off from the
//! majority pauses (and drops its clients) within about 20 s, and resumes
//! once healed.
//!
//! Needs root, iproute2 and the RabbitMQ server package (see
//! [`crate::local::available`]); everything is removed on drop.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::process::Command;

use crate::process::send_signal;

const AMQP_PORT: u16 = 5672;
const DIST_PORT: u16 = 25672;

pub struct Node {
    pub index: usize,
    /// `sx<i>@<address>`: long names, since the nodes are told apart by address.
    pub name: String,
    pub address: String,
    namespace: String,
    /// The bridge's end of the node's veth pair: down is cut off.
    veth: String,
    dir: PathBuf,
}

impl Node {
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@{}:{AMQP_PORT}/%2f", self.address)
    }

    /// A RabbitMQ command run in the node's namespace with its environment.
    fn command(&self, program: &str) -> Command {
        let d = &self.dir;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace, program])
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_USE_LONGNAME", "true")
            .env("RABBITMQ_NODE_PORT", AMQP_PORT.to_string())
            .env("RABBITMQ_DIST_PORT", DIST_PORT.to_string())
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_PID_FILE", d.join("pid"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", d.join("advanced.config"))
            // Not the machine's rabbitmq-env.conf, which pins epmd and
            // distribution to 127.0.0.1.
            .env("RABBITMQ_CONF_ENV_FILE", d.join("rabbitmq-env.conf"))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    async fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut command = self.command("rabbitmqctl");
        command.args(["-n", &self.name]).args(args);
        run(&mut command, Duration::from_secs(60)).await
    }
}

pub struct RabbitCluster {
    pub nodes: Vec<Node>,
    bridge: String,
    _dir: TempDir,
}

impl RabbitCluster {
    /// Starts `size` nodes and clusters them; about 15 s.
    pub async fn start(size: usize) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("sextant-rmq-cluster-").tempdir()?;
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..6];
        let subnet = free_subnet().await?;
        let bridge = format!("sxb{tag}");
        let mut cluster = RabbitCluster {
            nodes: Vec::new(),
            bridge: bridge.clone(),
            _dir: dir,
        };
        ip(&["link", "add", &bridge, "type", "bridge"]).await?;
        ip(&["addr", "add", &format!("{subnet}.1/24"), "dev", &bridge]).await?;
        ip(&["link", "set", &bridge, "up"]).await?;
        for index in 1..=size {
            let address = format!("{subnet}.{}", index + 1);
            let node = Node {
                index,
                name: format!("sx{index}@{address}"),
                namespace: format!("sextant-{tag}-{index}"),
                veth: format!("sxv{tag}{index}"),
                dir: cluster._dir.path().join(format!("node{index}")),
                address,
            };
            ip(&["netns", "add", &node.namespace]).await?;
            cluster.nodes.push(node);
            let node = cluster.nodes.last().expect("just pushed");
            ip(&[
                "link",
                "add",
                &node.veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &node.namespace,
            ])
            .await?;
            ip(&["link", "set", &node.veth, "master", &bridge, "up"]).await?;
            let ns = node.namespace.as_str();
            ip(&["-n", ns, "addr", "add", &format!("{}/24", node.address), "dev", "eth0"]).await?;
            ip(&["-n", ns, "link", "set", "eth0", "up"]).await?;
            ip(&["-n", ns, "link", "set", "lo", "up"]).await?;
            write_config(&node.dir)?;
        }
        for node in &cluster.nodes {
            cluster.start_node(node.index).await?;
        }
        let first = cluster.nodes[0].name.clone();
        for node in &cluster.nodes[1..] {
            node.ctl(&["stop_app"]).await?;
            node.ctl(&["join_cluster", &first]).await?;
            node.ctl(&["start_app"]).await?;
        }
        cluster.wait_running(size, Duration::from_secs(60)).await?;
        Ok(cluster)
    }

    pub fn node(&self, index: usize) -> &Node {
        &self.nodes[index - 1]
    }

    /// Every node's URL, as the services' `amqp.url` list takes them.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// The list as an environment value: `["amqp://…", …]`.
    pub fn urls_env(&self) -> String {
        serde_json::to_string(&self.urls()).expect("strings serialise")
    }

    /// Starts a node (again) and waits until it serves.
    pub async fn start_node(&self, index: usize) -> anyhow::Result<()> {
        let node = self.node(index);
        run(
            node.command("rabbitmq-server").arg("-detached"),
            Duration::from_secs(30),
        )
        .await?;
        // Until the node has registered with its epmd, the CLI cannot reach it.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            match node.ctl(&["await_startup", "--timeout", "90"]).await {
                Ok(_) => return Ok(()),
                Err(error) if Instant::now() > deadline => return Err(error),
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// SIGKILL: the node vanishes without closing a connection.
    pub async fn kill(&self, index: usize) -> anyhow::Result<()> {
        let node = self.node(index);
        let pid = std::fs::read_to_string(node.dir.join("pid"))?;
        let pid: u32 = pid.trim().parse()?;
        anyhow::ensure!(
            send_signal(pid, libc::SIGKILL),
            "kill {pid}: {}",
            std::io::Error::last_os_error()
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() {
            anyhow::ensure!(Instant::now() < deadline, "node {} outlived SIGKILL", node.name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Cuts the node's link: its peers and its clients lose it at once, and
    /// it loses them.
    pub async fn cut(&self, index: usize) -> anyhow::Result<()> {
        ip(&["link", "set", &self.node(index).veth, "down"]).await
    }

    pub async fn heal(&self, index: usize) -> anyhow::Result<()> {
        ip(&["link", "set", &self.node(index).veth, "up"]).await
    }

    /// Waits until `count` nodes are running the broker in one cluster, as
    /// seen from any node that answers.
    pub async fn wait_running(&self, count: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            for node in &self.nodes {
                match node.ctl(&["eval", "length(rabbit_nodes:all_running())."]).await {
                    Ok(out) if out.trim() == count.to_string() => return Ok(()),
                    Ok(out) => last = format!("{} sees {} running", node.name, out.trim()),
                    Err(error) => last = format!("{error:#}"),
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{count} running nodes not seen in {timeout:?}: {last}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Whether the broker runs on the node (false while it is paused as a
    /// minority, or down).
    pub async fn is_running(&self, index: usize) -> bool {
        self.node(index)
            .ctl(&["eval", "rabbit:is_running()."])
            .await
            .is_ok_and(|out| out.trim() == "true")
    }
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        // Every process in a namespace (the node and its epmd) dies with it;
        // the namespaces and the bridge go, and the veths with them.
        for node in &self.nodes {
            let pids = std::process::Command::new("ip")
                .args(["netns", "pids", &node.namespace])
                .output();
            if let Ok(output) = pids {
                for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<u32>() {
                        send_signal(pid, libc::SIGKILL);
                    }
                }
            }
            // A namespace lingers while its sockets time out; its veth
            // pair would linger with it.
            let _ = std::process::Command::new("ip")
                .args(["link", "del", &node.veth])
                .status();
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &node.namespace])
                .status();
        }
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

fn write_config(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("enabled_plugins"), "[].\n")?;
    std::fs::write(
        dir.join("rabbitmq.conf"),
        format!(
            "listeners.tcp.default = {AMQP_PORT}\n\
             # guest from the test's namespace, which is not loopback to the node\n\
             loopback_users = none\n\
             cluster_partition_handling = pause_minority\n"
        ),
    )?;
    std::fs::write(dir.join("advanced.config"), "[{kernel, [{net_ticktime, 10}]}].\n")?;
    std::fs::write(dir.join("rabbitmq-env.conf"), "")?;
    let status = std::process::Command::new("chown")
        .args(["-R", "rabbitmq"])
        .arg(dir)
        .status()?;
    anyhow::ensure!(status.success(), "chown {} failed", dir.display());
    Ok(())
}

/// A /24 in 10.200.0.0–10.249.255.0 that no interface here uses.
async fn free_subnet() -> anyhow::Result<String> {
    let used = run(Command::new("ip").args(["-4", "-o", "addr"]), Duration::from_secs(10)).await?;
    for _ in 0..100 {
        let subnet = format!("10.{}.{}", rand_below(50) + 200, rand_below(256));
        if !used.contains(&format!(" {subnet}.")) {
            return Ok(subnet);
        }
    }
    anyhow::bail!("no free 10.x /24 subnet found")
}

fn rand_below(n: u128) -> u128 {
    uuid::Uuid::new_v4().as_u128() % n
}

async fn ip(args: &[&str]) -> anyhow::Result<()> {
    run(Command::new("ip").args(args), Duration::from_secs(10))
        .await
        .map(drop)
}

async fn run(command: &mut Command, timeout: Duration) -> anyhow::Result<String> {
    let output = tokio::time::timeout(timeout, command.stdin(Stdio::null()).kill_on_drop(true).output())
        .await
        .map_err(|_| anyhow::anyhow!("{command:?} took over {timeout:?}"))??;
    anyhow::ensure!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
