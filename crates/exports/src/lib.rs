//! The exports service: renders analyses as SARIF, HTML, CSV, XLSX, JSON and
//! ZIP batches, and serves the files. Owns the `sextant_exports` database.
//!
//! This crate is a library so tests can start it on port 0; `main.rs` only
//! wires config and signals to [`Application`].

pub mod api;
pub mod config;
pub mod formats;
pub mod render;
pub mod store;

use std::net::SocketAddr;

use anyhow::Context as _;

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
    api: api::ExportsApi,
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
        let e = &config.exports;
        std::fs::create_dir_all(&e.storage.root)
            .with_context(|| format!("making exports.storage.root {}", e.storage.root.display()))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(&e.storage.root)
            .context("opening exports.storage.root")?;
        let channel = tonic::transport::Endpoint::from_shared(e.analytics.url.clone())?
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect_lazy();
        let analytics =
            sextant_proto::analytics::v1::analytics_service_client::AnalyticsServiceClient::with_interceptor(
                channel,
                sextant_common::internal_auth::ClientAuth::new(&config.internal.secret)?,
            )
            .max_decoding_message_size(256 << 20);
        let api = api::ExportsApi {
            pool: pool.clone(),
            store: std::sync::Arc::new(store),
            analytics,
        };
        Ok(Self { server, pool, api })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let dependencies = vec![Dependency::postgres(self.pool.clone())];
        let result = self
            .server
            .serve(
                Routes::new(sextant_proto::exports::v1::export_service_server::ExportServiceServer::new(self.api)),
                dependencies,
                Registry::with_prefix("sextant_exports"),
                shutdown,
            )
            .await;
        self.pool.close().await;
        result
    }
}
