//! The jobs service: a durable job queue. PostgreSQL (the `sextant_jobs`
//! database) is the record of truth; RabbitMQ carries work and events.
//!
//! This crate is a library so tests can start it on port 0; `main.rs` only
//! wires config and signals to [`Application`].

pub mod api;
pub mod config;
pub mod kinds;
pub mod store;

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

use crate::api::{Defaults, JobsApi};
use crate::kinds::Kinds;

pub const SERVICE: &str = "sextant-jobs";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A started (bound and migrated) jobs service. RabbitMQ need not be up yet:
/// the connection supervisor keeps trying, and readiness says so meanwhile.
pub struct Application {
    server: BackendServer,
    pool: PgPool,
    amqp: Amqp,
    amqp_stop: CancellationToken,
    api: JobsApi,
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
        let api = JobsApi::new(
            pool.clone(),
            Arc::new(Kinds::new(queue.diagnostic_kinds)),
            Defaults {
                max_attempts: queue.default_max_attempts,
                timeout: queue.default_timeout,
            },
        );
        Ok(Self {
            server,
            pool,
            amqp,
            amqp_stop,
            api,
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
        let routes = Routes::new(JobServiceServer::new(self.api));
        let result = self.server.serve(routes, dependencies, shutdown).await;
        // The broker connection outlives the server so in-flight work can still publish.
        self.amqp_stop.cancel();
        self.pool.close().await;
        result
    }
}
