//! The analytics service: ingests metric events, answers time-bucketed
//! queries, streams live metric updates, evaluates alert rules, and produces
//! analysis reports. Owns the `sextant_analytics` database.
//!
//! - `model`: events, queries and their checks; `aggregate`: bucket state
//!   (exact count/sum/min/max, a DDSketch for percentiles);
//! - `metrics`: ingest, queries, lists and live watches, with the metric
//!   `store` (the ingest transaction, reads, partition upkeep), `live`
//!   (change hints over RabbitMQ, the `WatchMetric` streams) and `cache`
//!   (repeated queries' buckets, kept current from the change log);
//! - `alerts`: alert rules, their evaluation, their watches and conversions;
//! - `analysis`: reports over a time range (summaries, findings, charts);
//! - `dashboards`: named grids of metric panels, versioned;
//! - `convert`: protobuf ↔ domain for metrics and what features share;
//! - `api`: the gRPC service, routing each call to its feature;
//! - `telemetry`: the service's own Prometheus metrics;
//! - `versioned`: optimistic concurrency for rules and dashboards.
//!
//! This crate is a library so tests can start it on port 0; `main.rs` only
//! wires config and signals to [`Application`].

pub mod aggregate;
pub mod alerts;
pub mod analysis;
pub mod api;
pub mod config;
pub mod convert;
pub mod dashboards;
pub mod metrics;
pub mod model;
pub mod promql;
pub mod telemetry;
pub mod versioned;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sextant_common::amqp::Amqp;
use sextant_common::db;
use sextant_common::grpc::{BackendServer, Dependency};
use sextant_proto::analytics::v1::analytics_service_server::AnalyticsServiceServer;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

pub use config::Config;

use crate::alerts::Alerts;
use crate::alerts::evaluator::{Evaluator, EvaluatorSettings};
use crate::alerts::notifier::{JobsClient, Notifier};
use crate::alerts::rule::RuleLimits;
use crate::api::AnalyticsApi;
use crate::metrics::Metrics;
use crate::metrics::cache::QueryCache;
use crate::metrics::live::{Live, LiveTasks, WatchSettings};
use crate::metrics::store::SeriesCache;
use crate::metrics::store::partitions::{self, Layout, micros};
use crate::metrics::store::read::Limits;

pub const SERVICE: &str = "sextant-analytics";

/// The largest request the service reads (the gateway's ingest body limit
/// is 8 MiB of JSON, which is less as protobuf).
const MAX_MESSAGE: usize = 16 << 20;

/// Series ids kept in memory per replica.
const SERIES_CACHE: usize = 200_000;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A started (bound, migrated, partitioned) analytics service.
pub struct Application {
    server: BackendServer,
    pool: PgPool,
    amqp: Amqp,
    amqp_stop: CancellationToken,
    api: AnalyticsApi,
    live_tasks: LiveTasks,
    evaluator: Evaluator,
    notifier: Notifier,
    upkeep: Upkeep,
    metrics: telemetry::Metrics,
}

impl Application {
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let a = &config.analytics;
        let pool = db::connect(&a.database, &MIGRATOR).await?;
        let amqp_stop = CancellationToken::new();
        let amqp = Amqp::start(a.amqp.clone(), SERVICE, amqp_stop.clone());
        let r = &a.retention;
        let raw = Layout {
            parent: "events",
            width: micros(r.raw_partition),
            retention: micros(r.raw),
        };
        let rollups = Layout {
            parent: "rollups_1m",
            width: micros(r.rollup_partition),
            retention: micros(r.rollup),
        };
        let upkeep = Upkeep {
            pool: pool.clone(),
            layouts: vec![raw, rollups, partitions::metric_rollups(rollups)],
            ahead: r.partitions_ahead,
            interval: r.check_interval,
            idempotency_ttl: a.ingest.idempotency_ttl,
            change_log: a.live.change_log,
            alert_history: a.alerts.history,
        };
        // Partitions for the present exist before the first event arrives.
        upkeep.pass().await?;
        let server = BackendServer::bind(
            sextant_proto::service_names::ANALYTICS,
            &a.grpc,
            config.internal.secret.clone(),
        )
        .await?;
        let limits = Limits {
            max_buckets: a.query.max_buckets,
            max_groups: a.query.max_groups,
            max_points: a.query.max_points,
            max_raw_events: a.query.max_raw_events,
        };
        let metrics = telemetry::Metrics::default();
        let (live, live_tasks) = Live::new(
            pool.clone(),
            &a.amqp.prefix,
            WatchSettings {
                coalesce: a.live.coalesce,
                poll: a.live.poll,
                max_window: micros(a.live.max_window),
                max_future: micros(a.ingest.max_future),
                limits,
            },
            metrics.clone(),
        );
        let cue = Arc::new(tokio::sync::Notify::new());
        let evaluator = Evaluator::new(
            pool.clone(),
            EvaluatorSettings {
                interval: micros(a.alerts.interval),
                max_catch_up: a.alerts.max_catch_up,
                limits,
            },
            live.clone(),
            cue.clone(),
        );
        let notifier = Notifier {
            pool: pool.clone(),
            jobs: jobs_client(&a.jobs.url, &config.internal.secret)?,
            attempts: a.alerts.webhook_attempts,
            cue,
        };
        let alerts = Alerts {
            pool: pool.clone(),
            live: live.clone(),
            limits: RuleLimits {
                interval: micros(a.alerts.interval),
                max_window: micros(a.alerts.max_window),
                webhook_hosts: sextant_common::outbound::AllowList::parse(&a.alerts.webhook_hosts)
                    .map_err(|e| anyhow::anyhow!("analytics.alerts.webhook_hosts: {e}"))?,
            },
        };
        let analyses = crate::analysis::Analyses {
            pool: pool.clone(),
            limits,
            anomaly_k: a.analysis.anomaly_k,
        };
        let api = AnalyticsApi {
            metrics: Metrics {
                pool: pool.clone(),
                series: Arc::new(SeriesCache::new(SERIES_CACHE)),
                cache: Arc::new(QueryCache::new(a.query.cache_buckets, rollups.retention)),
                ingest: a.ingest.clone(),
                limits,
                raw,
                rollups,
                live,
            },
            alerts,
            analyses,
            dashboards: dashboards::Dashboards {
                pool: pool.clone(),
                limits,
            },
            prom: promql::Prom {
                pool: pool.clone(),
                config: a.prometheus.clone(),
            },
            shutdown: CancellationToken::new(),
        };
        Ok(Self {
            server,
            pool,
            amqp,
            amqp_stop,
            api,
            live_tasks,
            evaluator,
            notifier,
            upkeep,
            metrics,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        // RabbitMQ is not a readiness dependency: without it ingest and
        // queries work, and watches fall back to polling the change log.
        let dependencies = vec![Dependency::postgres(self.pool.clone())];
        let tasks_stop = CancellationToken::new();
        let live = tokio::spawn(self.live_tasks.run(self.amqp.clone(), tasks_stop.clone()));
        let upkeep = tokio::spawn(self.upkeep.run(tasks_stop.clone()));
        // The evaluator stops with the server's shutdown signal and hands its
        // rules over, so another replica takes them at its next tick.
        let evaluator = tokio::spawn(self.evaluator.run(shutdown.clone()));
        let notifier = tokio::spawn(self.notifier.run(tasks_stop.clone()));
        // Watch streams end as soon as shutdown starts, so the server can drain.
        let watches = self.api.shutdown.clone();
        let stop_watches = shutdown.clone();
        tokio::spawn(async move {
            stop_watches.cancelled().await;
            watches.cancel();
        });
        // A full batch (10,000 events with long labels) is more than tonic's 4 MiB default.
        let routes = Routes::new(AnalyticsServiceServer::new(self.api).max_decoding_message_size(MAX_MESSAGE));
        let result = self
            .server
            .serve(routes, dependencies, self.metrics.registry(), shutdown)
            .await;
        tasks_stop.cancel();
        let _ = evaluator.await;
        let _ = notifier.await;
        let _ = live.await;
        let _ = upkeep.await;
        self.amqp_stop.cancel();
        self.pool.close().await;
        result
    }
}

/// Periodic upkeep: partitions ahead and past retention, expired
/// idempotency keys, old change-log rows and alert history.
/// Series without data deleted at most per upkeep pass.
const REAP_PER_PASS: i64 = 10_000;

struct Upkeep {
    pool: PgPool,
    layouts: Vec<Layout>,
    ahead: u32,
    interval: Duration,
    idempotency_ttl: Duration,
    change_log: Duration,
    alert_history: Duration,
}

impl Upkeep {
    async fn pass(&self) -> anyhow::Result<()> {
        let report = partitions::maintain(&self.pool, &self.layouts, self.ahead, model::now_micros()).await?;
        if !report.created.is_empty() || !report.dropped.is_empty() {
            tracing::info!(created = ?report.created, dropped = ?report.dropped, "partitions maintained");
        }
        let keys = sqlx::query("DELETE FROM ingest_requests WHERE created_at < now() - $1::interval")
            .bind(interval(self.idempotency_ttl))
            .execute(&self.pool)
            .await?
            .rows_affected();
        let changes = sqlx::query("DELETE FROM metric_changes WHERE created_at < now() - $1::interval")
            .bind(interval(self.change_log))
            .execute(&self.pool)
            .await?
            .rows_affected();
        let alert_tenants = alerts::store::prune_history(&self.pool, micros(self.alert_history)).await?;
        let series = metrics::store::series::reap(&self.pool, REAP_PER_PASS).await?;
        tracing::debug!(
            keys,
            changes,
            alert_tenants,
            series,
            "expired idempotency keys, change-log and alert history rows, and series without data deleted"
        );
        Ok(())
    }

    async fn run(self, shutdown: CancellationToken) {
        // The change log is swept more often than partitions need checking.
        let every = self.interval.min(self.change_log).max(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if let Err(error) = self.pass().await {
                tracing::warn!(error = %format!("{error:#}"), "analytics upkeep failed; retrying next pass");
            }
        }
    }
}

/// A duration as a PostgreSQL interval literal.
fn interval(d: Duration) -> String {
    format!("{} milliseconds", d.as_millis())
}

/// A lazy client of the jobs service, with the internal secret on every call.
fn jobs_client(url: &str, secret: &secrecy::SecretString) -> anyhow::Result<JobsClient> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    Ok(
        sextant_proto::jobs::v1::job_service_client::JobServiceClient::with_interceptor(
            sextant_common::telemetry::TracedChannel::new(channel, url),
            sextant_common::internal_auth::ClientAuth::new(secret)?,
        ),
    )
}
