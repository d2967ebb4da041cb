//! The gateway: Sextant's only public edge. HTTP and WebSocket for frontends,
//! JWT auth and tenant scoping, problem+json errors, and gRPC to the three
//! backends. It holds no domain state and never speaks AMQP or SQL.
//!
//! This crate is a library so tests can start it on port 0; `main.rs` only
//! parses arguments and wires config and signals to [`Application`].

pub mod auth;
pub mod backends;
pub mod breaker;
pub mod config;
pub mod convert;
pub mod edge;
pub mod error;
pub mod metrics;
pub mod routes;
pub mod ws;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_cors::Cors;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, middleware, web};
use anyhow::Context as _;
use sextant_common::ErrorCode;
use sextant_common::internal_auth::ClientAuth;
use tokio_util::sync::CancellationToken;

pub use config::Config;

use crate::auth::Authenticator;
use crate::backends::Backends;
use crate::error::{ApiError, extractors};
use crate::metrics::Metrics;
use crate::ws::WsState;

pub const SERVICE: &str = "sextant-gateway";

/// A bound, not yet serving, gateway.
pub struct Application {
    config: Config,
    listener: TcpListener,
}

impl Application {
    pub fn build(config: Config) -> anyhow::Result<Self> {
        let http = &config.gateway.http;
        let addr = format!("{}:{}", http.host, http.port);
        let listener = TcpListener::bind(&addr).with_context(|| format!("binding {addr}"))?;
        Ok(Self { config, listener })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves until `shutdown`; then closes every WebSocket with 1001, stops
    /// accepting, and drains in-flight requests for at most the grace period.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addr = self.local_addr();
        let config = self.config;
        let gateway = &config.gateway;

        let authenticator = web::Data::new(Authenticator::new(&gateway.auth));
        let metrics = web::Data::new(Metrics::default());
        let backends = web::Data::new(Backends::new(
            &gateway.backends,
            ClientAuth::new(&config.internal.secret)?,
            &metrics,
        )?);
        let hub = Arc::new(ws::Hub::new(
            Arc::new(ws::BackendUpstream::new(backends.clone())),
            gateway.ws.topic_history,
            gateway.ws.topic_linger,
            metrics.clone().into_inner(),
        ));
        let ws = web::Data::new(WsState::new(gateway.ws.clone(), shutdown.clone(), hub));
        let cors = gateway.cors.clone();
        let body_limit = gateway.http.body_limit;
        let ingest_body_limit = gateway.http.ingest_body_limit;
        let edge = web::Data::new(edge::Edge {
            body_limit,
            ingest_body_limit,
            request_timeout: gateway.http.request_timeout,
        });

        let mut server = HttpServer::new({
            let ws = ws.clone();
            move || {
                App::new()
                    .app_data(authenticator.clone())
                    .app_data(backends.clone())
                    .app_data(metrics.clone())
                    .app_data(ws.clone())
                    .app_data(
                        web::JsonConfig::default()
                            .limit(body_limit)
                            .error_handler(extractors::json),
                    )
                    .app_data(web::PayloadConfig::new(body_limit))
                    .app_data(web::QueryConfig::default().error_handler(extractors::query))
                    .app_data(web::PathConfig::default().error_handler(extractors::path))
                    .app_data(edge.clone())
                    .wrap(cors_middleware(&cors))
                    .wrap(middleware::from_fn(edge::guard))
                    .wrap(middleware::from_fn(metrics::middleware))
                    .configure(|cfg| routes::configure(cfg, ingest_body_limit))
                    .default_service(web::to(not_found))
            }
        })
        .listen(self.listener)?
        // Live frames are small and must leave at once, not wait on Nagle
        // for the previous one's ACK.
        .tcp_nodelay(true)
        .disable_signals()
        .shutdown_timeout(gateway.http.shutdown_grace.as_secs().max(1));
        if gateway.http.workers > 0 {
            server = server.workers(gateway.http.workers);
        }
        let server = server.run();
        let handle = server.handle();
        tracing::info!(addr = %addr, "listening");

        let mut server = std::pin::pin!(server);
        tokio::select! {
            result = &mut server => return result.context("serving HTTP"),
            _ = shutdown.cancelled() => {}
        }

        // Sessions see the same token and close with 1001; give them a moment.
        let grace = gateway.http.shutdown_grace;
        if tokio::time::timeout(grace, ws.wait_all_closed()).await.is_err() {
            tracing::warn!(
                open = ws.open_connections(),
                "websockets still open after the grace period"
            );
        }
        // The server future must be polled for the stop command to be handled.
        let (_, result) = tokio::join!(handle.stop(true), server);
        result.context("draining HTTP")?;
        tracing::info!("stopped");
        Ok(())
    }
}

fn cors_middleware(config: &config::CorsConfig) -> Cors {
    // A foreign origin gets no CORS headers (so the browser refuses the
    // response) rather than an error: CORS is enforced by browsers, and a
    // same-origin or server-side caller must not be broken by an Origin header.
    let mut cors = Cors::default()
        .block_on_origin_mismatch(false)
        .allowed_methods(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
        .allowed_headers([
            actix_web::http::header::AUTHORIZATION,
            actix_web::http::header::CONTENT_TYPE,
            actix_web::http::header::HeaderName::from_static("idempotency-key"),
            actix_web::http::header::HeaderName::from_static("traceparent"),
            actix_web::http::header::IF_MATCH,
            actix_web::http::header::IF_NONE_MATCH,
            actix_web::http::header::IF_RANGE,
            actix_web::http::header::RANGE,
        ])
        .expose_headers([
            actix_web::http::header::LOCATION,
            actix_web::http::header::RETRY_AFTER,
            actix_web::http::header::CONTENT_DISPOSITION,
            actix_web::http::header::CONTENT_RANGE,
            actix_web::http::header::ACCEPT_RANGES,
            actix_web::http::header::ETAG,
            actix_web::http::header::HeaderName::from_static("ratelimit"),
            actix_web::http::header::HeaderName::from_static("ratelimit-policy"),
            actix_web::http::header::HeaderName::from_static("ratelimit-limit"),
            actix_web::http::header::HeaderName::from_static("ratelimit-remaining"),
            actix_web::http::header::HeaderName::from_static("ratelimit-reset"),
        ])
        .max_age(usize::try_from(config.max_age.as_secs()).unwrap_or(usize::MAX));
    for origin in &config.allowed_origins {
        cors = if origin == "*" {
            cors.allow_any_origin()
        } else {
            cors.allowed_origin(origin)
        };
    }
    cors
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        ErrorCode::NotFound,
        format!("no route for {} {}", req.method(), req.path()),
    ))
}
