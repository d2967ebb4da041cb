//! The jobs service's configuration (`[jobs]`), with its defaults.

use serde::Deserialize;
use sextant_common::amqp::AmqpConfig;
use sextant_common::app::{CommonSections, GrpcServerConfig};
use sextant_common::config::{InternalConfig, Problems, TelemetryConfig, Validate};
use sextant_common::db::DatabaseConfig;

pub const DEFAULTS: &str = r#"
[jobs.grpc]
host = "127.0.0.1"
port = 50052
shutdown_grace = "10s"
health_interval = "1s"
# Prometheus: GET /metrics on this port.
metrics_port = 9102

[jobs.database]
url = "postgres://postgres@127.0.0.1:5432/sextant_jobs"
max_connections = 16
acquire_timeout = "5s"
startup_timeout = "30s"

[jobs.queue]
# Accept the diagnostic kinds noop, sleep and fail (demos, tests, benchmarks).
diagnostic_kinds = false
default_max_attempts = 3
default_timeout = "5m"
# A queued job still unclaimed this long after its message went out is sent
# again, in case the broker lost the message (a duplicate runs nothing).
redispatch_after = "5m"
# Job events, from which watch streams resume, are kept this long. A stream
# resuming from an older point gets a fresh snapshot instead.
event_retention = "7days"
# Finished jobs (succeeded, failed, cancelled), with their attempts and
# events, are deleted this long after they finished; a batch goes with its
# children once all of them finished. Per tenant: job_retention_per_tenant,
# e.g. { acme = "30days" }.
job_retention = "7days"
job_retention_per_tenant = {}
# The RabbitMQ work queues' type: "quorum" (replicated over a cluster's nodes;
# a node's loss loses nothing) or "classic" (one node; lower latency, but a
# node's loss holds its messages back until it returns or redispatch_after).
work_queues = "quorum"

[jobs.worker]
# api: serve the API and dispatch; worker: run jobs; both.
role = "both"
concurrency = 16
lease = "10s"
heartbeat = "250ms"
retry_base = "1s"
retry_max = "5m"

[jobs.notify]
# Hosts `notify` jobs (webhook deliveries) may POST to: "host" (any port) or
# "host:port". Empty: none. Checked at submit and again at delivery.
allow_hosts = []
# How long one delivery attempt may wait for an answer.
timeout = "10s"

[jobs.analytics]
# The analytics service, which `analyze` jobs run their analyses in.
url = "http://127.0.0.1:50051"

[jobs.exports]
# The exports service, which `export` jobs render their files in.
url = "http://127.0.0.1:50053"

[jobs.amqp]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
prefix = "sextant"
reconnect_max_delay = "5s"
"#;

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub jobs: JobsConfig,
    pub internal: InternalConfig,
    pub telemetry: TelemetryConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    pub grpc: GrpcServerConfig,
    pub database: DatabaseConfig,
    pub amqp: AmqpConfig,
    pub queue: QueueConfig,
    pub worker: WorkerConfig,
    pub notify: NotifyConfig,
    pub analytics: ServiceLink,
    pub exports: ServiceLink,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceLink {
    pub url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    pub allow_hosts: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub timeout: std::time::Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Api,
    Worker,
    Both,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    pub role: Role,
    /// Jobs run at once by this replica.
    pub concurrency: usize,
    /// A running job whose lease is not renewed for this long is rescued.
    #[serde(with = "humantime_serde")]
    pub lease: std::time::Duration,
    /// How often a running job renews its lease and checks for a cancel.
    #[serde(with = "humantime_serde")]
    pub heartbeat: std::time::Duration,
    #[serde(with = "humantime_serde")]
    pub retry_base: std::time::Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: std::time::Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub diagnostic_kinds: bool,
    pub default_max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub default_timeout: std::time::Duration,
    #[serde(with = "humantime_serde")]
    pub redispatch_after: std::time::Duration,
    #[serde(with = "humantime_serde")]
    pub event_retention: std::time::Duration,
    #[serde(with = "humantime_serde")]
    pub job_retention: std::time::Duration,
    pub job_retention_per_tenant: std::collections::BTreeMap<String, humantime_serde::Serde<std::time::Duration>>,
    pub work_queues: crate::topology::QueueType,
}

impl QueueConfig {
    /// How long each tenant named in the config keeps its finished jobs.
    pub fn retention_overrides(&self) -> Vec<(String, std::time::Duration)> {
        self.job_retention_per_tenant
            .iter()
            .map(|(tenant, keep)| (tenant.clone(), **keep))
            .collect()
    }
}

impl Validate for Config {
    fn validate(&self, problems: &mut Problems) {
        self.jobs.grpc.validate_at("jobs.grpc", problems);
        self.jobs.database.validate_at("jobs.database", problems);
        self.jobs.amqp.validate_at("jobs.amqp", problems);
        problems.check(
            self.jobs.queue.redispatch_after >= std::time::Duration::from_secs(1),
            "jobs.queue.redispatch_after",
            "must be at least 1s",
        );
        problems.check(
            self.jobs.queue.job_retention >= std::time::Duration::from_secs(1),
            "jobs.queue.job_retention",
            "must be at least 1s",
        );
        for (tenant, keep) in self.jobs.queue.retention_overrides() {
            problems.check(
                keep >= std::time::Duration::from_secs(1),
                &format!("jobs.queue.job_retention_per_tenant.{tenant}"),
                "must be at least 1s",
            );
        }
        problems.check(
            self.jobs.queue.event_retention >= std::time::Duration::from_secs(1),
            "jobs.queue.event_retention",
            "must be at least 1s",
        );
        if let Err(e) = sextant_common::outbound::AllowList::parse(&self.jobs.notify.allow_hosts) {
            problems.add("jobs.notify.allow_hosts", e);
        }
        problems.check(
            self.jobs.notify.timeout >= std::time::Duration::from_millis(100)
                && self.jobs.notify.timeout <= std::time::Duration::from_secs(300),
            "jobs.notify.timeout",
            "must be between 100ms and 5m",
        );
        for (url, key) in [
            (&self.jobs.analytics.url, "jobs.analytics.url"),
            (&self.jobs.exports.url, "jobs.exports.url"),
        ] {
            problems.check(
                url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https")),
                key,
                "must be an http:// or https:// URL",
            );
        }
        let worker = &self.jobs.worker;
        problems.check(
            (1..=1024).contains(&worker.concurrency),
            "jobs.worker.concurrency",
            "must be between 1 and 1024",
        );
        problems.check(
            worker.heartbeat * 3 <= worker.lease,
            "jobs.worker.heartbeat",
            "must be at most a third of jobs.worker.lease",
        );
        problems.check(
            worker.retry_base <= worker.retry_max,
            "jobs.worker.retry_base",
            "must not exceed jobs.worker.retry_max",
        );
        problems.check(
            (1..=100).contains(&self.jobs.queue.default_max_attempts),
            "jobs.queue.default_max_attempts",
            "must be between 1 and 100",
        );
        problems.check(
            (1..=86_400).contains(&self.jobs.queue.default_timeout.as_secs()),
            "jobs.queue.default_timeout",
            "must be between 1s and 24h",
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

    #[test]
    fn the_example_config_file_loads_and_matches_the_defaults() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/sextant.example.toml");
        let defaults = format!("{COMMON_DEFAULTS}\n{DEFAULTS}");
        let source = ConfigSource {
            file: Some(example.into()),
            env: Vec::new(),
        };
        let from_file: Config = load(&defaults, &source).unwrap();
        let built_in: Config = load(&defaults, &ConfigSource::default()).unwrap();
        // Every key is spelled as the binary reads it, with the default value.
        assert_eq!(format!("{:?}", from_file.jobs), format!("{:?}", built_in.jobs));
    }

    #[test]
    fn a_cluster_is_a_list_of_broker_urls_and_the_work_queues_type_is_checked() {
        let cluster = [(
            "SEXTANT_JOBS__AMQP__URL",
            r#"["amqp://a:5672/%2f", "amqp://b:5672/%2f", "amqp://c:5672/%2f"]"#,
        )];
        let config: Config = load(
            &format!("{COMMON_DEFAULTS}\n{DEFAULTS}"),
            &ConfigSource::from_env(cluster),
        )
        .unwrap();
        assert_eq!(config.jobs.amqp.url.len(), 3);
        assert_eq!(config.jobs.queue.work_queues, crate::topology::QueueType::Quorum);

        let error = load::<Config>(
            &format!("{COMMON_DEFAULTS}\n{DEFAULTS}"),
            &ConfigSource::from_env([("SEXTANT_JOBS__QUEUE__WORK_QUEUES", "mirrored")]),
        )
        .unwrap_err();
        assert_eq!(error.problems.len(), 1, "{error}");
        assert_eq!(error.problems[0].key, "jobs.queue.work_queues");
        assert!(error.problems[0].message.contains("quorum"), "{error}");
    }
}
