//! The analytics service's own Prometheus metrics (not the metrics it stores), served on
//! `analytics.grpc.metrics_port`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use sextant_common::metrics::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// The rejection's code, e.g. `cardinality_limit`.
    pub code: String,
}

/// Handles to the metrics; clones update the same series.
#[derive(Clone)]
pub struct Metrics {
    pub events_accepted: Counter,
    pub events_rejected: Family<RejectLabels, Counter>,
    pub batches_replayed: Counter,
    /// Open `WatchMetric` streams (a gateway shares one per distinct query).
    pub watches: Gauge,
    /// Snapshots and updates sent on watch streams.
    pub updates: Counter,
    /// Alert rule evaluations this replica recorded (one per rule and T).
    pub alert_evaluations: Counter,
    /// Alert state transitions this replica recorded.
    pub alert_transitions: Counter,
    /// Alert rules this replica holds a claim on.
    pub alert_rules_claimed: Gauge,
    /// How long after its time T each evaluation was recorded: the interval's
    /// own wait at most, unless evaluations fall behind (or catch up after
    /// every replica was down).
    pub alert_evaluation_lag: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            events_accepted: Counter::default(),
            events_rejected: Family::default(),
            batches_replayed: Counter::default(),
            watches: Gauge::default(),
            updates: Counter::default(),
            alert_evaluations: Counter::default(),
            alert_transitions: Counter::default(),
            alert_rules_claimed: Gauge::default(),
            // 10 ms to about 3 min.
            alert_evaluation_lag: Histogram::new(exponential_buckets(0.01, 2.0, 15)),
        }
    }
}

impl Metrics {
    pub fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("sextant_analytics");
        registry.register(
            "events_accepted",
            "Events stored by IngestEvents",
            self.events_accepted.clone(),
        );
        registry.register(
            "events_rejected",
            "Events refused by IngestEvents, by code",
            self.events_rejected.clone(),
        );
        registry.register(
            "batches_replayed",
            "Ingest batches answered from their idempotency key",
            self.batches_replayed.clone(),
        );
        registry.register("watch_streams", "Open WatchMetric streams", self.watches.clone());
        registry.register(
            "watch_messages",
            "Messages sent on WatchMetric streams",
            self.updates.clone(),
        );
        registry.register(
            "alert_evaluations",
            "Alert rule evaluations recorded by this replica",
            self.alert_evaluations.clone(),
        );
        registry.register(
            "alert_transitions",
            "Alert state transitions recorded by this replica",
            self.alert_transitions.clone(),
        );
        registry.register(
            "alert_rules_claimed",
            "Alert rules this replica evaluates",
            self.alert_rules_claimed.clone(),
        );
        registry.register(
            "alert_evaluation_lag_seconds",
            "Seconds from an evaluation's time T to its commit",
            self.alert_evaluation_lag.clone(),
        );
        registry
    }
}
