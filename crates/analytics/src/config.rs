//! The analytics service's configuration (`[analytics]`), with its defaults.

use std::time::Duration;

use serde::Deserialize;
use sextant_common::amqp::AmqpConfig;
use sextant_common::app::{CommonSections, GrpcServerConfig};
use sextant_common::config::{InternalConfig, Problems, TelemetryConfig, Validate};
use sextant_common::db::DatabaseConfig;

pub const DEFAULTS: &str = r#"
[analytics.grpc]
host = "127.0.0.1"
port = 50051
shutdown_grace = "10s"
health_interval = "1s"
# Prometheus: GET /metrics on this port.
metrics_port = 9101

[analytics.database]
url = "postgres://postgres@127.0.0.1:5432/sextant_analytics"
max_connections = 16
acquire_timeout = "5s"
startup_timeout = "30s"

[analytics.amqp]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
prefix = "sextant"
reconnect_max_delay = "5s"

[analytics.ingest]
# Events per IngestEvents call.
max_batch = 10000
# How far ahead of the server's clock an event may be.
max_future = "5m"
# Series (distinct label sets) per metric and tenant; a new series beyond
# this is refused with `cardinality_limit`.
max_series_per_metric = 10000
max_labels = 16
max_label_value_len = 200
# How long the answer to an Idempotency-Key is kept.
idempotency_ttl = "24h"

[analytics.query]
# Buckets one series may have (the range divided by the bucket).
max_buckets = 10000
# Groups (values of the group_by label) one query may have.
max_groups = 1000
# Buckets across all groups.
max_points = 200000
# Raw events a query with a bucket finer than the rollups may read.
max_raw_events = 2000000
# Buckets of repeated queries kept per replica, brought up to date from the
# change log instead of recomputed (about 1 KiB each with a percentile,
# 50 bytes without); 0 turns the cache off.
cache_buckets = 100000

[analytics.prometheus]
# The Prometheus query API's limits; a query over one is answered 422
# (execution) naming it.
# Series one query or selector may select.
max_series = 10000
# Raw samples one query may read.
max_samples = 5000000
# Values (series x steps) one intermediate result may hold.
max_points = 5000000
# Points per series of a range query (Prometheus' own limit).
max_steps = 11000
# How far back an instant selector looks for a sample.
lookback_delta = "5m"

[analytics.retention]
# Raw events: kept this long, in partitions this wide. Events older than
# `raw` are refused at ingest.
raw = "30days"
raw_partition = "1day"
# One-minute rollups: kept this long, in partitions this wide.
rollup = "400days"
rollup_partition = "30days"
# Partitions are created this many ahead of the present.
partitions_ahead = 2
# How often expired partitions, idempotency keys and change-log rows go.
check_interval = "10m"

[analytics.live]
# Updates for one watch are sent at most this often (a hot metric is
# coalesced into one update per interval; a change after a quiet spell goes
# out at once).
coalesce = "20ms"
# Watches also check for changes this often, in case a broker message was lost.
poll = "2s"
# Changes are kept this long; a resume from an older version gets a snapshot.
change_log = "1h"
# The longest trailing window a watch may follow.
max_window = "24h"

[analytics.alerts]
# Every rule is evaluated at each multiple of this (from the epoch); a rule's
# window must be at least this long.
interval = "15s"
# The longest window a rule may aggregate.
max_window = "24h"
# Evaluations a rule missed (every replica down) are made up in order, this
# many at most; older ones are skipped.
max_catch_up = 240
# Transitions are kept in the history this long.
history = "90days"
# Hosts a rule's webhook may point at: "host" (any port) or "host:port".
# Empty: no webhooks. The jobs service checks the same at delivery
# (jobs.notify.allow_hosts).
webhook_hosts = []
# Delivery attempts per notification (the notify job's max_attempts).
webhook_attempts = 5

[analytics.analysis]
# A bucket is an anomaly when its avg lies more than this many robust
# standard deviations (1.4826 × MAD) from the median of the range's buckets.
anomaly_k = 5.0

[analytics.jobs]
# The jobs service, which delivers webhook notifications as `notify` jobs.
url = "http://127.0.0.1:50052"
"#;

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub analytics: AnalyticsConfig,
    pub internal: InternalConfig,
    pub telemetry: TelemetryConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsConfig {
    pub grpc: GrpcServerConfig,
    pub database: DatabaseConfig,
    pub amqp: AmqpConfig,
    pub ingest: IngestConfig,
    pub query: QueryConfig,
    pub prometheus: PrometheusConfig,
    pub retention: RetentionConfig,
    pub live: LiveConfig,
    pub alerts: AlertsConfig,
    pub analysis: AnalysisConfig,
    pub jobs: JobsLink,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisConfig {
    pub anomaly_k: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsLink {
    pub url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    pub max_batch: usize,
    #[serde(with = "humantime_serde")]
    pub max_future: Duration,
    pub max_series_per_metric: u32,
    pub max_labels: usize,
    pub max_label_value_len: usize,
    #[serde(with = "humantime_serde")]
    pub idempotency_ttl: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    pub max_buckets: u64,
    pub max_groups: usize,
    pub max_points: u64,
    pub max_raw_events: u64,
    pub cache_buckets: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    pub max_series: usize,
    pub max_samples: usize,
    pub max_points: usize,
    pub max_steps: usize,
    #[serde(with = "humantime_serde")]
    pub lookback_delta: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    #[serde(with = "humantime_serde")]
    pub raw: Duration,
    #[serde(with = "humantime_serde")]
    pub raw_partition: Duration,
    #[serde(with = "humantime_serde")]
    pub rollup: Duration,
    #[serde(with = "humantime_serde")]
    pub rollup_partition: Duration,
    pub partitions_ahead: u32,
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveConfig {
    #[serde(with = "humantime_serde")]
    pub coalesce: Duration,
    #[serde(with = "humantime_serde")]
    pub poll: Duration,
    #[serde(with = "humantime_serde")]
    pub change_log: Duration,
    #[serde(with = "humantime_serde")]
    pub max_window: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub max_window: Duration,
    pub max_catch_up: u32,
    #[serde(with = "humantime_serde")]
    pub history: Duration,
    pub webhook_hosts: Vec<String>,
    pub webhook_attempts: u32,
}

const MINUTE: Duration = Duration::from_secs(60);

impl Validate for Config {
    fn validate(&self, problems: &mut Problems) {
        let a = &self.analytics;
        a.grpc.validate_at("analytics.grpc", problems);
        a.database.validate_at("analytics.database", problems);
        a.amqp.validate_at("analytics.amqp", problems);
        problems.check(
            (1..=100_000).contains(&a.ingest.max_batch),
            "analytics.ingest.max_batch",
            "must be between 1 and 100000",
        );
        problems.check(
            a.ingest.max_future <= Duration::from_secs(24 * 3600),
            "analytics.ingest.max_future",
            "must be at most 24h",
        );
        let p = &a.prometheus;
        for (ok, key) in [
            (p.max_series >= 1, "analytics.prometheus.max_series"),
            (p.max_samples >= 1, "analytics.prometheus.max_samples"),
            (p.max_points >= 1, "analytics.prometheus.max_points"),
            (p.max_steps >= 1, "analytics.prometheus.max_steps"),
        ] {
            problems.check(ok, key, "must be at least 1");
        }
        problems.check(
            p.lookback_delta >= Duration::from_secs(1),
            "analytics.prometheus.lookback_delta",
            "must be at least 1s",
        );
        problems.check(
            a.ingest.max_series_per_metric >= 1,
            "analytics.ingest.max_series_per_metric",
            "must be at least 1",
        );
        problems.check(
            (1..=64).contains(&a.ingest.max_labels),
            "analytics.ingest.max_labels",
            "must be between 1 and 64",
        );
        problems.check(
            (1..=4096).contains(&a.ingest.max_label_value_len),
            "analytics.ingest.max_label_value_len",
            "must be between 1 and 4096",
        );
        problems.check(
            a.ingest.idempotency_ttl >= Duration::from_secs(60),
            "analytics.ingest.idempotency_ttl",
            "must be at least 1m",
        );
        for (value, key) in [
            (a.query.max_buckets, "analytics.query.max_buckets"),
            (a.query.max_points, "analytics.query.max_points"),
            (a.query.max_raw_events, "analytics.query.max_raw_events"),
        ] {
            problems.check(value >= 1, key, "must be at least 1");
        }
        problems.check(
            a.query.max_groups >= 1,
            "analytics.query.max_groups",
            "must be at least 1",
        );
        let r = &a.retention;
        for (value, key) in [
            (r.raw_partition, "analytics.retention.raw_partition"),
            (r.rollup_partition, "analytics.retention.rollup_partition"),
        ] {
            problems.check(
                value >= MINUTE && value.as_secs() % 60 == 0 && value.subsec_nanos() == 0,
                key,
                "must be a whole number of minutes, at least 1m",
            );
        }
        problems.check(
            r.raw >= r.raw_partition,
            "analytics.retention.raw",
            "must be at least analytics.retention.raw_partition",
        );
        problems.check(
            r.rollup >= r.raw,
            "analytics.retention.rollup",
            "must be at least analytics.retention.raw",
        );
        problems.check(
            (1..=100).contains(&r.partitions_ahead),
            "analytics.retention.partitions_ahead",
            "must be between 1 and 100",
        );
        problems.check(
            r.check_interval >= Duration::from_secs(1) && r.check_interval <= r.raw_partition,
            "analytics.retention.check_interval",
            "must be between 1s and analytics.retention.raw_partition",
        );
        problems.check(
            a.ingest.max_future < r.raw_partition * r.partitions_ahead,
            "analytics.ingest.max_future",
            "must be shorter than the partitions made ahead (raw_partition × partitions_ahead)",
        );
        let l = &a.live;
        problems.check(
            l.coalesce <= Duration::from_secs(10),
            "analytics.live.coalesce",
            "must be at most 10s",
        );
        problems.check(
            l.poll >= Duration::from_millis(100),
            "analytics.live.poll",
            "must be at least 100ms",
        );
        problems.check(
            l.change_log >= Duration::from_secs(1),
            "analytics.live.change_log",
            "must be at least 1s",
        );
        problems.check(
            l.max_window >= MINUTE,
            "analytics.live.max_window",
            "must be at least 1m",
        );
        let al = &a.alerts;
        problems.check(
            al.interval >= Duration::from_millis(100) && al.interval <= Duration::from_secs(3600),
            "analytics.alerts.interval",
            "must be between 100ms and 1h",
        );
        problems.check(
            al.max_window >= al.interval && al.max_window <= Duration::from_secs(366 * 24 * 3600),
            "analytics.alerts.max_window",
            "must be between analytics.alerts.interval and 366 days",
        );
        problems.check(
            (1..=100_000).contains(&al.max_catch_up),
            "analytics.alerts.max_catch_up",
            "must be between 1 and 100000",
        );
        problems.check(
            al.history >= Duration::from_secs(3600),
            "analytics.alerts.history",
            "must be at least 1h",
        );
        if let Err(e) = sextant_common::outbound::AllowList::parse(&al.webhook_hosts) {
            problems.add("analytics.alerts.webhook_hosts", e);
        }
        problems.check(
            (1..=20).contains(&al.webhook_attempts),
            "analytics.alerts.webhook_attempts",
            "must be between 1 and 20",
        );
        problems.check(
            a.analysis.anomaly_k.is_finite() && (1.0..=100.0).contains(&a.analysis.anomaly_k),
            "analytics.analysis.anomaly_k",
            "must be between 1 and 100",
        );
        problems.check(
            url::Url::parse(&a.jobs.url).is_ok_and(|u| matches!(u.scheme(), "http" | "https")),
            "analytics.jobs.url",
            "must be an http:// or https:// URL",
        );
        self.internal.validate(problems);
        self.telemetry.validate(problems);
    }
}

impl CommonSections for Config {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}

#[cfg(test)]
mod tests {
    use sextant_common::config::{COMMON_DEFAULTS, ConfigSource, load};

    use super::*;

    fn load_with(env: &[(&str, &str)]) -> Result<Config, sextant_common::config::ConfigError> {
        load(
            &format!("{COMMON_DEFAULTS}\n{DEFAULTS}"),
            &ConfigSource::from_env(env.iter().copied()),
        )
    }

    #[test]
    fn the_example_config_file_loads_and_matches_the_defaults() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/sextant.example.toml");
        let source = ConfigSource {
            file: Some(example.into()),
            env: Vec::new(),
        };
        let from_file: Config = load(&format!("{COMMON_DEFAULTS}\n{DEFAULTS}"), &source).unwrap();
        let defaults = load_with(&[]).unwrap();
        assert_eq!(
            format!("{:?}", from_file.analytics),
            format!("{:?}", defaults.analytics)
        );
    }

    #[test]
    fn partitions_must_reach_past_the_future_an_event_may_have() {
        let err = load_with(&[
            ("SEXTANT_ANALYTICS__RETENTION__RAW_PARTITION", "1h"),
            ("SEXTANT_ANALYTICS__RETENTION__CHECK_INTERVAL", "1m"),
            ("SEXTANT_ANALYTICS__RETENTION__PARTITIONS_AHEAD", "1"),
            ("SEXTANT_ANALYTICS__INGEST__MAX_FUTURE", "2h"),
        ])
        .unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert!(err.to_string().contains("analytics.ingest.max_future"), "{err}");
        let err = load_with(&[("SEXTANT_ANALYTICS__RETENTION__RAW_PARTITION", "90s")]).unwrap_err();
        assert!(err.to_string().contains("whole number of minutes"), "{err}");
    }
}
