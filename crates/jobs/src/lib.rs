//! The jobs service: a durable job queue. PostgreSQL (the `sextant_jobs`
//! database) is the record of truth; RabbitMQ carries work and events.
//!
//! This crate is a library so tests can start it on port 0; `main.rs` only
//! wires config and signals to [`Application`].

pub mod api;
pub mod batcher;
pub mod bus;
pub mod config;
pub mod context;
pub mod convert;
pub mod dispatcher;
pub mod events;
pub mod kinds;
pub mod metrics;
pub mod store;
pub mod topology;
pub mod watch;
pub mod worker;

use std::net::SocketAddr;

use std::sync::Arc;

use sextant_common::amqp::Amqp;
use sextant_common::db;
use sextant_common::grpc::{BackendServer, Dependency};
use sextant_proto::jobs::v1::job_service_server::JobServiceServer;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

pub use config::Config;

use tokio::sync::Notify;

use crate::api::{Defaults, JobsApi};
use crate::config::Role;
use crate::dispatcher::Dispatcher;
use crate::events::{Hub, Relay};
use crate::kinds::Kinds;
use crate::topology::Names;
use crate::worker::Worker;

pub const SERVICE: &str = "sextant-jobs";

/// Nudges between the parts of one replica, so work and events move without
/// waiting for a poll. (Other replicas poll, and react to their own changes.)
#[derive(Debug, Default)]
pub struct Signals {
    dispatch: Notify,
    events: Notify,
}

impl Signals {
    /// A job changed: its event is waiting to be published.
    pub fn changed(&self) {
        self.events.notify_one();
    }

    /// A job became due to dispatch (and changed).
    pub fn new_work(&self) {
        self.dispatch.notify_one();
        self.events.notify_one();
    }
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A started (bound and migrated) jobs service. RabbitMQ need not be up yet:
/// the connection supervisor keeps trying, and readiness says so meanwhile.
pub struct Application {
    server: BackendServer,
    pool: PgPool,
    amqp: Amqp,
    amqp_stop: CancellationToken,
    api: JobsApi,
    dispatcher: Dispatcher,
    relay: Relay,
    hub: Hub,
    names: Arc<Names>,
    worker: Option<Worker>,
    /// Ends watch streams (cancelled as soon as shutdown starts).
    watch_stop: CancellationToken,
    metrics: metrics::Metrics,
    grace: std::time::Duration,
}

impl Application {
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let pool = db::connect(&config.jobs.database, &MIGRATOR).await?;
        let amqp_stop = CancellationToken::new();
        let amqp = Amqp::start(config.jobs.amqp.clone(), SERVICE, amqp_stop.clone());
        let server = BackendServer::bind(
            sextant_proto::service_names::JOBS,
            &config.jobs.grpc,
            config.internal.secret.clone(),
        )
        .await?;
        let queue = &config.jobs.queue;
        let notify = &config.jobs.notify;
        let allow = sextant_common::outbound::AllowList::parse(&notify.allow_hosts)
            .map_err(|e| anyhow::anyhow!("jobs.notify.allow_hosts: {e}"))?;
        let kinds = Arc::new(Kinds::with(
            queue.diagnostic_kinds,
            vec![
                Box::new(kinds::notify::Notify::new(allow, notify.timeout)?),
                Box::new(kinds::analyze::Analyze::new(
                    &config.jobs.analytics.url,
                    &config.internal.secret,
                )?),
                Box::new(kinds::export::Export::new(
                    &config.jobs.exports.url,
                    &config.internal.secret,
                )?),
            ],
        ));
        let names = Arc::new(Names::new(&config.jobs.amqp.prefix, queue.work_queues));
        let signals = Arc::new(Signals::default());
        let hub = Hub::default();
        let watch_stop = CancellationToken::new();
        let metrics = metrics::Metrics::default();
        let (direct, handed) = dispatcher::Direct::new();
        let api = JobsApi::new(
            pool.clone(),
            kinds.clone(),
            Defaults {
                max_attempts: queue.default_max_attempts,
                timeout: queue.default_timeout,
            },
            signals.clone(),
            hub.clone(),
            watch_stop.clone(),
            metrics.clone(),
        )
        .with_direct(direct.clone());
        let dispatcher = Dispatcher {
            pool: pool.clone(),
            amqp: amqp.clone(),
            names: names.clone(),
            signals: signals.clone(),
            redispatch_after: queue.redispatch_after,
            event_retention: queue.event_retention,
            job_retention: queue.job_retention,
            job_retention_overrides: queue.retention_overrides(),
            direct,
            handed,
        };
        let relay = Relay {
            pool: pool.clone(),
            amqp: amqp.clone(),
            names: names.clone(),
            signals: signals.clone(),
        };
        let worker = (config.jobs.worker.role != Role::Api).then(|| Worker {
            pool: pool.clone(),
            amqp: amqp.clone(),
            names: names.clone(),
            kinds,
            config: config.jobs.worker.clone(),
            id: format!(
                "{}-{}",
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            signals,
            metrics: metrics.clone(),
        });
        Ok(Self {
            server,
            pool,
            amqp,
            amqp_stop,
            api,
            dispatcher,
            relay,
            hub,
            names,
            worker,
            watch_stop,
            metrics,
            grace: config.jobs.grpc.shutdown_grace,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let dependencies = vec![
            Dependency::postgres(self.pool.clone()),
            Dependency::rabbitmq(self.amqp.clone()),
        ];
        let dispatcher = tokio::spawn(self.dispatcher.run(shutdown.clone()));
        let backlog = {
            let (metrics, pool, shutdown) = (self.metrics.clone(), self.pool.clone(), shutdown.clone());
            tokio::spawn(async move { metrics.sample_backlog(pool, shutdown).await })
        };
        let worker = self.worker.map(|w| tokio::spawn(w.run(shutdown.clone(), self.grace)));
        // Events flow until the work has stopped, so its last changes go out.
        let events_stop = CancellationToken::new();
        let relay = tokio::spawn(self.relay.run(events_stop.clone()));
        let hub = tokio::spawn(self.hub.run(self.amqp.clone(), self.names, events_stop.clone()));
        let watch_stop = self.watch_stop;
        let stop_watches = shutdown.clone();
        tokio::spawn(async move {
            stop_watches.cancelled().await;
            watch_stop.cancel();
        });
        let routes = Routes::new(JobServiceServer::new(self.api));
        let result = self
            .server
            .serve(routes, dependencies, self.metrics.registry(), shutdown)
            .await;
        // In-flight jobs finish (or are handed back) before the connections close.
        if let Some(worker) = worker {
            let _ = worker.await;
        }
        let _ = dispatcher.await;
        let _ = backlog.await;
        events_stop.cancel();
        let _ = relay.await;
        let _ = hub.await;
        // The broker connection outlives the server so in-flight work can still publish.
        self.amqp_stop.cancel();
        self.pool.close().await;
        result
    }
}
