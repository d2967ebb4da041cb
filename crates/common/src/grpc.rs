//! Serving a backend's gRPC: internal auth on every call, the gRPC health
//! service (overall, per service, and per dependency such as `postgres` or
//! `rabbitmq`, so the gateway's readiness can name what is down), reflection,
//! a span per call joined to the caller's trace, and graceful shutdown bounded
//! by a grace period.

use std::net::SocketAddr;
use std::time::Duration;
use tokio_stream::StreamExt as _;

use anyhow::Context as _;
use futures::future::BoxFuture;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::app::GrpcServerConfig;
use crate::internal_auth::ServerAuthLayer;
use crate::metrics::MetricsServer;

/// Something a backend needs in order to serve, checked periodically.
pub struct Dependency {
    /// Reported as a gRPC health service name, e.g. `postgres`.
    pub name: &'static str,
    pub check: Box<dyn Fn() -> BoxFuture<'static, bool> + Send + Sync>,
}

impl Dependency {
    /// PostgreSQL answers a trivial query within a second.
    #[cfg(feature = "db")]
    pub fn postgres(pool: sqlx::PgPool) -> Self {
        Self::new("postgres", move || {
            let pool = pool.clone();
            async move { crate::db::ping(&pool, Duration::from_secs(1)).await }
        })
    }

    /// The supervised RabbitMQ connection is up.
    #[cfg(feature = "amqp")]
    pub fn rabbitmq(amqp: crate::amqp::Amqp) -> Self {
        Self::new("rabbitmq", move || std::future::ready(amqp.is_connected()))
    }

    pub fn new<F, Fut>(name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        Self {
            name,
            check: Box::new(move || Box::pin(check())),
        }
    }
}

/// A bound, not yet serving, backend gRPC server.
pub struct BackendServer {
    listener: TcpListener,
    metrics: MetricsServer,
    /// Fully qualified name of the backend's service, e.g. `sextant.jobs.v1.JobService`.
    service_name: &'static str,
    secret: SecretString,
    grace: Duration,
    health_interval: Duration,
}

impl BackendServer {
    pub async fn bind(
        service_name: &'static str,
        config: &GrpcServerConfig,
        secret: SecretString,
    ) -> anyhow::Result<Self> {
        let addr = config.addr();
        let listener = TcpListener::bind(&addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let metrics = MetricsServer::bind(&config.metrics_addr()).await?;
        Ok(Self {
            listener,
            metrics,
            service_name,
            secret,
            grace: config.shutdown_grace,
            health_interval: config.health_interval,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics.local_addr()
    }

    /// Serves `routes` (and `metrics` on the metrics port) until `shutdown`,
    /// then drains for at most the grace period.
    pub async fn serve(
        self,
        routes: Routes,
        dependencies: Vec<Dependency>,
        metrics: prometheus_client::registry::Registry,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let metrics = tokio::spawn(self.metrics.serve(metrics, shutdown.clone()));
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(sextant_proto::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("building the reflection service")?;

        let addr = self.listener.local_addr().context("the bound gRPC address")?;
        tracing::info!(addr = %addr, service = self.service_name, "listening");

        let checker = tokio::spawn(watch_dependencies(
            reporter.clone(),
            self.service_name,
            dependencies,
            self.health_interval,
            shutdown.clone(),
        ));

        let server = Server::builder()
            .trace_fn(|request| {
                let (service, method) = crate::telemetry::rpc_names(request.uri().path());
                let span = tracing::info_span!(
                    "grpc",
                    otel.name = %format!("{service}/{method}"),
                    otel.kind = "server",
                    rpc.system = "grpc",
                    rpc.service = %service,
                    rpc.method = %method,
                );
                crate::telemetry::set_parent(&span, crate::telemetry::extract_headers(request.headers()));
                span
            })
            .layer(ServerAuthLayer::new(&self.secret))
            .add_routes(routes)
            .add_service(health_service)
            .add_service(reflection)
            .serve_with_incoming_shutdown(
                // Answers are small and must leave at once: without TCP_NODELAY a
                // reply written in two pieces waits ~40 ms for the client's delayed ACK.
                tokio_stream::wrappers::TcpListenerStream::new(self.listener).map(|socket| {
                    socket.inspect(|s| {
                        let _ = s.set_nodelay(true);
                    })
                }),
                shutdown.clone().cancelled_owned(),
            );

        let grace = self.grace;
        let result = tokio::select! {
            r = server => r.context("serving gRPC"),
            _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "grace period over; dropping in-flight calls");
                Ok(())
            }
        };
        checker.abort();
        metrics.abort();
        tracing::info!("stopped");
        result
    }
}

/// Keeps the health service in step with the dependencies: each dependency by
/// name, and the overall status ("" and the service name) serving only when
/// all of them are.
async fn watch_dependencies(
    reporter: HealthReporter,
    service_name: &'static str,
    dependencies: Vec<Dependency>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    let mut last: Option<Vec<bool>> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                // Tell load balancers and the gateway to stop sending work.
                reporter.set_service_status("", ServingStatus::NotServing).await;
                reporter.set_service_status(service_name, ServingStatus::NotServing).await;
                return;
            }
            _ = ticker.tick() => {}
        }
        let results = futures::future::join_all(dependencies.iter().map(|d| (d.check)())).await;
        if last.as_ref() == Some(&results) {
            continue;
        }
        for (dependency, ok) in dependencies.iter().zip(&results) {
            if !ok {
                tracing::warn!(dependency = dependency.name, "dependency down");
            }
            reporter.set_service_status(dependency.name, status(*ok)).await;
        }
        let all = results.iter().all(|ok| *ok);
        reporter.set_service_status("", status(all)).await;
        reporter.set_service_status(service_name, status(all)).await;
        if last.is_some() && all {
            tracing::info!("all dependencies up");
        }
        last = Some(results);
    }
}

fn status(ok: bool) -> ServingStatus {
    if ok {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}
