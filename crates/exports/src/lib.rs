//! The exports service: renders analyses as SARIF, HTML, CSV, XLSX, JSON and
//! ZIP batches, and serves the files. Owns the `sextant_exports` database.
//!
//! This crate is a library so tests can start it on port 0; `main.rs` only
//! wires config and signals to [`Application`].

pub mod config;
pub mod render;

use std::net::SocketAddr;

use sextant_common::db;
use sextant_common::grpc::{BackendServer, Dependency};
use sextant_common::metrics::Registry;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

pub use config::Config;

pub const SERVICE: &str = "sextant-exports";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A started (bound and migrated) exports service.
pub struct Application {
    server: BackendServer,
    pool: PgPool,
}

impl Application {
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let pool = db::connect(&config.exports.database, &MIGRATOR).await?;
        let server = BackendServer::bind(
            sextant_proto::service_names::EXPORTS,
            &config.exports.grpc,
            config.internal.secret.clone(),
        )
        .await?;
        Ok(Self { server, pool })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let dependencies = vec![Dependency::postgres(self.pool.clone())];
        let result = self
            .server
            .serve(
                Routes::default(),
                dependencies,
                Registry::with_prefix("sextant_exports"),
                shutdown,
            )
            .await;
        self.pool.close().await;
        result
    }
}
