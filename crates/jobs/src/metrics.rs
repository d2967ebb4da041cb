//! The jobs service's Prometheus metrics, served on `jobs.grpc.metrics_port`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use sextant_common::metrics::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    /// `job` (one job) or `tenant` (every job of a tenant).
    pub target: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub kind: String,
    /// `succeeded`, `retried` (failed, another attempt follows), `failed`
    /// (the last attempt) or `cancelled`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// `queued` (due, waiting for a worker), `scheduled` (not yet due) or `running`.
    pub status: &'static str,
}

type Histograms = Family<AttemptLabels, Histogram, fn() -> Histogram>;

/// Handles to the metrics; clones update the same series.
#[derive(Clone)]
pub struct Metrics {
    /// Open `WatchJobs` streams. A gateway shares one per topic among all its
    /// subscribers, so this counts topics per gateway, not browsers.
    pub watch_streams: Family<WatchLabels, Gauge>,
    pub watch_streams_opened: Family<WatchLabels, Counter>,
    /// Attempts this replica's worker finished, by kind and outcome.
    pub attempts: Family<AttemptLabels, Counter>,
    /// Their run time, from claim to outcome.
    pub attempt_duration: Histograms,
    /// The backlog of the whole deployment (every replica reports the same,
    /// read from PostgreSQL every few seconds: take the max, not the sum).
    pub jobs: Family<StatusLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        // 1 ms to about 9 min.
        fn buckets() -> Histogram {
            Histogram::new(exponential_buckets(0.001, 2.0, 20))
        }
        Self {
            watch_streams: Family::default(),
            watch_streams_opened: Family::default(),
            attempts: Family::default(),
            attempt_duration: Family::new_with_constructor(buckets),
            jobs: Family::default(),
        }
    }
}

impl Metrics {
    pub fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("sextant_jobs");
        registry.register("watch_streams", "Open WatchJobs streams", self.watch_streams.clone());
        registry.register(
            "watch_streams_opened",
            "WatchJobs streams opened",
            self.watch_streams_opened.clone(),
        );
        registry.register(
            "attempts_finished",
            "Attempts this replica's worker finished, by kind and outcome",
            self.attempts.clone(),
        );
        registry.register(
            "attempt_duration_seconds",
            "Seconds an attempt ran, from claim to outcome",
            self.attempt_duration.clone(),
        );
        registry.register(
            "jobs",
            "Jobs waiting or running in the whole deployment, by status",
            self.jobs.clone(),
        );
        registry
    }

    /// Counts one finished attempt.
    pub fn attempt_finished(&self, kind: &str, outcome: &'static str, took: std::time::Duration) {
        let labels = AttemptLabels {
            kind: kind.to_owned(),
            outcome,
        };
        self.attempts.get_or_create(&labels).inc();
        self.attempt_duration.get_or_create(&labels).observe(took.as_secs_f64());
    }

    /// Samples the backlog until `shutdown`.
    pub async fn sample_backlog(&self, pool: sqlx::PgPool, shutdown: tokio_util::sync::CancellationToken) {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            match crate::store::backlog(&pool).await {
                Ok(counts) => {
                    for (status, n) in counts {
                        self.jobs.get_or_create(&StatusLabels { status }).set(n);
                    }
                }
                Err(error) => tracing::debug!(%error, "sampling the backlog failed"),
            }
        }
    }

    /// Counts a stream as open until the guard drops.
    pub fn watch_opened(&self, target: &'static str) -> WatchGuard {
        let labels = WatchLabels { target };
        self.watch_streams_opened.get_or_create(&labels).inc();
        let gauge = self.watch_streams.get_or_create(&labels).clone();
        gauge.inc();
        WatchGuard(gauge)
    }
}

/// An open watch stream, counted in [`Metrics::watch_streams`].
pub struct WatchGuard(Gauge);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
