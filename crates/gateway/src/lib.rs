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
use std::time::Duration;

use actix_cors::Cors;
use actix_http::{HttpService, Request};
use actix_service::IntoServiceFactory as _;
use actix_web::dev::{AppConfig, ServiceFactory};
use actix_web::{App, HttpRequest, HttpResponse, middleware, web};
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

        let app = {
            let ws = ws.clone();
            move || {
                let app = App::new()
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
                    .configure(|cfg| routes::configure(cfg, ingest_body_limit))
                    .default_service(web::to(not_found));
                // Innermost first: the edge's limits answer inside CORS (a page
                // can read its 413 and 504); every error, CORS's own too,
                // leaves as problem+json; metrics time it all.
                app.wrap(middleware::from_fn(edge::limits))
                    .wrap(cors_middleware(&cors))
                    .wrap(middleware::from_fn(edge::problems))
                    .wrap(middleware::from_fn(metrics::middleware))
            }
        };

        // actix-web's `HttpServer`, assembled by hand for one addition: the
        // upgrade layer that takes WebSocket connections out of actix-http
        // (see `ws::upgrade`). Its settings are `HttpServer`'s defaults.
        let mut server = actix_server::Server::build();
        let graceful = server.graceful_shutdown_signal();
        server = server
            .disable_signals()
            .shutdown_timeout(gateway.http.shutdown_grace.as_secs().max(1));
        if gateway.http.workers > 0 {
            server = server.workers(gateway.http.workers);
        }
        let server = server.listen("sextant-gateway", self.listener, move || {
            let graceful = graceful.clone();
            HttpService::build()
                .graceful_shutdown_signal(move || {
                    let graceful = graceful.clone();
                    async move { graceful.notified().await }
                })
                .client_request_timeout(Duration::from_secs(5))
                .client_disconnect_timeout(Duration::from_secs(1))
                .local_addr(addr)
                // Live frames are small and must leave at once, not wait on
                // Nagle for the previous one's ACK.
                .tcp_nodelay(true)
                .upgrade(ws::Upgrade::new(with_config(app().into_factory())))
                .finish(with_config(app().into_factory()))
                .tcp()
        })?;
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

/// The app as actix-http serves it (its connection config fixed: the
/// gateway reads the host from each request's `Host` header).
fn with_config<F>(
    app: F,
) -> impl ServiceFactory<Request, Config = (), Response = F::Response, Error = F::Error, InitError = F::InitError>
where
    F: ServiceFactory<Request, Config = AppConfig>,
{
    actix_service::map_config(app, |()| AppConfig::default())
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
