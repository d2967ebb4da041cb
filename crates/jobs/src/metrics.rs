//! The jobs service's Prometheus metrics, served on `jobs.grpc.metrics_port`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use sextant_common::metrics::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    /// `job` (one job) or `tenant` (every job of a tenant).
    pub target: &'static str,
}

/// Handles to the metrics; clones update the same series.
#[derive(Clone, Default)]
pub struct Metrics {
    /// Open `WatchJobs` streams. A gateway shares one per topic among all its
    /// subscribers, so this counts topics per gateway, not browsers.
    pub watch_streams: Family<WatchLabels, Gauge>,
    pub watch_streams_opened: Family<WatchLabels, Counter>,
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
        registry
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
