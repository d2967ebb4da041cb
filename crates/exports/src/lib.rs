//! The exports service: renders analyses as SARIF, HTML, CSV, XLSX, JSON and
//! ZIP batches, and serves the files. Owns the `sextant_exports` database.
//!
//! This crate is a library so tests can start it on port 0; `main.rs` only
//! wires config and signals to [`Application`].

pub mod api;
pub mod config;
pub mod formats;
#[cfg(test)]
mod golden;
pub mod limits;
pub mod metrics;
pub mod publish;
pub mod render;
pub mod retention;
pub mod spool;
pub mod store;

use std::net::SocketAddr;

use anyhow::Context as _;

use sextant_common::db;
use sextant_common::grpc::{BackendServer, Dependency};
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
    sweeper: retention::Sweeper,
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
        std::fs::create_dir_all(&e.storage.scratch)
            .with_context(|| format!("making exports.storage.scratch {}", e.storage.scratch.display()))?;
        let store = object_store(&e.storage)?;
        let client = |url: &str| -> anyhow::Result<_> {
            let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?
                .connect_timeout(std::time::Duration::from_secs(5))
                .connect_lazy();
            Ok(tonic::service::interceptor::InterceptedService::new(
                sextant_common::telemetry::TracedChannel::new(channel, url),
                sextant_common::internal_auth::ClientAuth::new(&config.internal.secret)?,
            ))
        };
        let analytics = sextant_proto::analytics::v1::analytics_service_client::AnalyticsServiceClient::new(client(
            &e.analytics.url,
        )?)
        .max_decoding_message_size(1 << 30);
        let jobs = sextant_proto::jobs::v1::job_service_client::JobServiceClient::new(client(&e.jobs.url)?);
        let api = api::ExportsApi {
            pool: pool.clone(),
            store: store.clone(),
            analytics,
            jobs,
            metrics: metrics::Metrics::default(),
            settings: std::sync::Arc::new(api::Settings {
                job_threshold_rows: e.job_threshold_rows,
                limits: e.limits.clone(),
                scratch: e.storage.scratch.clone(),
            }),
        };
        let sweeper = retention::Sweeper {
            pool: pool.clone(),
            jobs: api.jobs.clone(),
            store,
            retention: e.retention,
            interval: e.sweep_interval,
            batch: e.sweep_batch,
        };
        Ok(Self {
            server,
            pool,
            api,
            sweeper,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let dependencies = vec![Dependency::postgres(self.pool.clone())];
        let registry = self.api.metrics.registry();
        let sweeper = tokio::spawn(self.sweeper.run(shutdown.clone()));
        let result = self
            .server
            .serve(
                Routes::new(sextant_proto::exports::v1::export_service_server::ExportServiceServer::new(self.api)),
                dependencies,
                registry,
                shutdown,
            )
            .await;
        sweeper.abort();
        self.pool.close().await;
        result
    }
}

/// The object store the config names: a local directory, or an S3 bucket.
fn object_store(storage: &config::StorageConfig) -> anyhow::Result<std::sync::Arc<dyn object_store::ObjectStore>> {
    Ok(match storage.kind {
        config::StorageKind::Local => {
            std::fs::create_dir_all(&storage.root)
                .with_context(|| format!("making exports.storage.root {}", storage.root.display()))?;
            std::sync::Arc::new(
                object_store::local::LocalFileSystem::new_with_prefix(&storage.root)
                    .context("opening exports.storage.root")?,
            )
        }
        config::StorageKind::S3 => {
            let s3 = &storage.s3;
            let mut builder = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(&s3.bucket)
                .with_region(&s3.region)
                .with_allow_http(s3.allow_http);
            if !s3.endpoint.is_empty() {
                builder = builder.with_endpoint(&s3.endpoint);
            }
            std::sync::Arc::new(builder.build().context("configuring the S3 store")?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_s3_compatible_store_is_built_from_the_config() {
        let storage = config::StorageConfig {
            kind: config::StorageKind::S3,
            root: "/unused".into(),
            scratch: "/unused".into(),
            s3: config::S3Config {
                bucket: "exports".into(),
                endpoint: "http://127.0.0.1:9000".into(),
                region: "us-east-1".into(),
                allow_http: true,
            },
        };
        let store = object_store(&storage).unwrap();
        assert!(store.to_string().contains("exports"), "{store}");
    }
}
