//! The soak scenario: every service twice ([`Fleet`]) on a three-node
//! RabbitMQ cluster ([`RabbitCluster`]) and the local PostgreSQL, under a
//! steady load, while each of the eight processes is restarted in turn with
//! SIGTERM, then one of each service is killed with SIGKILL, then one broker
//! node is killed (and started again), then another is cut off from the
//! network (and healed).
//!
//! The load, all through the gateways' load balancer as a frontend would:
//! jobs (no-ops, and 5-second sleeps a killed worker leaves to another as
//! attempt 2), metric events, 1,000 WebSocket subscribers of their tenant's
//! `jobs` topic (resuming with `after_version` through every reconnect), an
//! analysis and its export every few seconds, and an alert rule whose metric
//! goes above and below its threshold, notifying a webhook receiver here.
//! Every write carries an `Idempotency-Key` and is sent again with it until
//! answered, so what was accepted is known exactly.
//!
//! Counted at the end ([`Report`]): every accepted job reached `succeeded`,
//! each attempt started once; every accepted event is queryable; every
//! export answered 201/202 downloads whole (its size and SHA-256); every
//! subscriber saw every job's every version, in order, with no gap and no
//! duplicate; the alert history is one unbroken chain with one firing and
//! one resolved per high phase, each delivered to the webhook, no attempt
//! twice. The error rate and p99 latency clients saw are given per phase.

mod load;
mod report;
mod subscribers;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use report::Report;

use crate::cluster::RabbitCluster;
use crate::fleet::{Fleet, FleetOptions};
use load::Load;
use report::Stats;

pub struct SoakOptions {
    pub duration: Duration,
    pub subscribers: usize,
    pub tenants: usize,
    pub jobs_per_second: f64,
    pub event_batches_per_second: f64,
    pub events_per_batch: usize,
    pub export_every: Duration,
    /// The PostgreSQL admin URL.
    pub admin_url: String,
}

impl SoakOptions {
    pub fn new(duration: Duration, admin_url: String) -> Self {
        Self {
            duration,
            subscribers: 1000,
            tenants: 5,
            jobs_per_second: 10.0,
            event_batches_per_second: 5.0,
            events_per_batch: 200,
            export_every: Duration::from_secs(3),
            admin_url,
        }
    }
}

/// One step of the schedule.
#[derive(Debug, Clone)]
enum Disruption {
    None(&'static str),
    Signal {
        service: &'static str,
        index: usize,
        signal: i32,
    },
    KillBrokerNode(usize),
    CutBrokerNode(usize),
}

impl Disruption {
    fn name(&self) -> String {
        match self {
            Disruption::None(name) => (*name).to_owned(),
            Disruption::Signal { service, index, signal } => {
                let how = if *signal == libc::SIGKILL { "SIGKILL" } else { "SIGTERM" };
                format!("{how} {service}-{index}")
            }
            Disruption::KillBrokerNode(n) => format!("SIGKILL rabbitmq node {n}, restart"),
            Disruption::CutBrokerNode(n) => format!("cut rabbitmq node {n} off, heal"),
        }
    }
}

fn schedule() -> Vec<Disruption> {
    use Disruption::*;
    let mut steps = vec![None("steady")];
    for service in crate::fleet::SERVICES {
        for index in [1, 2] {
            steps.push(Signal {
                service,
                index,
                signal: libc::SIGTERM,
            });
        }
    }
    for (service, index) in [("gateway", 1), ("analytics", 2), ("jobs", 1), ("exports", 2)] {
        steps.push(Signal {
            service,
            index,
            signal: libc::SIGKILL,
        });
    }
    steps.push(KillBrokerNode(1));
    steps.push(CutBrokerNode(2));
    steps.push(None("after"));
    steps
}

/// Runs the scenario; the report says what was lost, if anything.
pub async fn run(options: SoakOptions) -> anyhow::Result<Report> {
    let cluster = RabbitCluster::start(3).await?;
    eprintln!("soak: rabbitmq cluster up: {}", cluster.urls().join(", "));
    let mut fleet = Fleet::start(FleetOptions {
        admin_url: options.admin_url.clone(),
        amqp_url: cluster.urls_env(),
        env: vec![
            ("analytics", "SEXTANT_ANALYTICS__ALERTS__INTERVAL".into(), "1s".into()),
            // A worker killed mid-job is noticed in 2 s, not 10.
            ("jobs", "SEXTANT_JOBS__WORKER__LEASE".into(), "2s".into()),
        ],
    })
    .await?;
    eprintln!("soak: 8 replicas up behind haproxy; gateway at {}", fleet.url(""));
    let stats = Arc::new(Stats::default());
    let load = Load::start(&fleet, &options, stats.clone()).await?;
    eprintln!("soak: load running: {} subscribers", options.subscribers);

    // The processes' steps share 60 % of the time, the broker's 30 %; each
    // step has a floor long enough for what it does.
    let steps = schedule();
    let process_steps = steps.iter().filter(|s| matches!(s, Disruption::Signal { .. })).count() as u32;
    let process_step = (options.duration.mul_f64(0.6) / process_steps).max(Duration::from_secs(5));
    let broker_step = options.duration.mul_f64(0.15).max(Duration::from_secs(30));
    let quiet_step = options.duration.mul_f64(0.05).max(Duration::from_secs(5));
    let started = Instant::now();
    for step in &steps {
        let name = step.name();
        stats.begin(&name);
        let began = Instant::now();
        eprintln!("soak: {:>5.0} s  {name}", started.elapsed().as_secs_f64());
        let length = match step {
            Disruption::None(_) => quiet_step,
            Disruption::Signal { service, index, signal } => {
                let drained = fleet.restart(service, *index, *signal).await?;
                stats.note(format!("exited in {} ms", drained.as_millis()));
                process_step
            }
            Disruption::KillBrokerNode(n) => {
                cluster.kill(*n).await?;
                tokio::time::sleep(broker_step / 3).await;
                cluster.start_node(*n).await?;
                cluster.wait_running(3, Duration::from_secs(90)).await?;
                broker_step
            }
            Disruption::CutBrokerNode(n) => {
                cluster.cut(*n).await?;
                let deadline = Instant::now() + Duration::from_secs(60);
                while cluster.is_running(*n).await {
                    anyhow::ensure!(Instant::now() < deadline, "node {n} never paused when cut off");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                stats.note(format!("node paused {} ms after the cut", began.elapsed().as_millis()));
                tokio::time::sleep(broker_step / 3).await;
                cluster.heal(*n).await?;
                cluster.wait_running(3, Duration::from_secs(120)).await?;
                stats.note(format!("rejoined {} ms after the cut", began.elapsed().as_millis()));
                broker_step
            }
        };
        if let Some(rest) = length.checked_sub(began.elapsed()) {
            tokio::time::sleep(rest).await;
        }
        fleet.wait_ready(Duration::from_secs(60)).await?;
    }
    stats.begin("drain");
    eprintln!(
        "soak: {:>5.0} s  load stopped; counting",
        started.elapsed().as_secs_f64()
    );
    let mut report = load.finish(stats.clone(), started.elapsed()).await;
    report.usage = fleet.replicas.iter().map(|r| (r.name(), r.usage())).collect();
    drop(fleet);
    drop(cluster);
    Ok(report)
}

/// Set once the load should stop; every task checks it between requests.
#[derive(Clone, Default)]
pub(crate) struct Stop(Arc<AtomicBool>);

impl Stop {
    pub(crate) fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
