//! The exports service's Prometheus metrics, served on
//! `exports.grpc.metrics_port`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use sextant_common::metrics::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RenderLabels {
    /// `csv:series`, `xlsx`, … or `zip` for a batch.
    pub format: String,
    /// `ready`, `failed`, or `stopped` (the caller or its job went away).
    pub outcome: &'static str,
}

type Histograms = Family<RenderLabels, Histogram, fn() -> Histogram>;

/// Handles to the metrics; clones update the same series.
#[derive(Clone)]
pub struct Metrics {
    /// Render and store, from the first row read to the file published.
    pub render_duration: Histograms,
    /// Bytes of the files published.
    pub bytes_published: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        // 5 ms to about 80 s.
        fn buckets() -> Histogram {
            Histogram::new(exponential_buckets(0.005, 2.0, 15))
        }
        Self {
            render_duration: Family::new_with_constructor(buckets),
            bytes_published: Counter::default(),
        }
    }
}

impl Metrics {
    pub fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("sextant_exports");
        registry.register(
            "render_duration_seconds",
            "Seconds to render and store an export, by format and outcome",
            self.render_duration.clone(),
        );
        registry.register(
            "bytes_published",
            "Bytes of export files published",
            self.bytes_published.clone(),
        );
        registry
    }
}
