//! Prometheus metrics over HTTP for the backends: `GET /metrics` on a port of
//! its own (`<service>.grpc.metrics_port`), in the OpenMetrics text format.
//! A port of its own keeps scrapes away from the internal-auth gRPC port.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
pub use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A bound, not yet serving, metrics endpoint.
pub struct MetricsServer {
    listener: TcpListener,
}

impl MetricsServer {
    pub async fn bind(addr: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics port {addr}"))?;
        Ok(Self { listener })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves `registry` until `shutdown`.
    pub async fn serve(self, registry: Registry, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr(), "metrics listening");
        let registry = Arc::new(registry);
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], encode(&registry)).into_response() }
            }),
        );
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .context("serving metrics")
    }
}

pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).expect("writing to a String cannot fail");
    out
}
