//! The exports service's configuration (`[exports]`), with its defaults.

use serde::Deserialize;
use sextant_common::app::{CommonSections, GrpcServerConfig};
use sextant_common::config::{InternalConfig, Problems, TelemetryConfig, Validate};
use sextant_common::db::DatabaseConfig;

pub const DEFAULTS: &str = r#"
[exports]
# Exports of more rows than this (summary fields, metrics, findings and
# series buckets, summed over a batch's files) render as `export` jobs, with
# progress; smaller ones render at once.
job_threshold_rows = 200000
# Files and their records are deleted this long after they were created.
retention = "7days"
# How often expired exports are looked for, and how many go per statement.
sweep_interval = "1m"
sweep_batch = 500

[exports.grpc]
host = "127.0.0.1"
port = 50053
shutdown_grace = "10s"
health_interval = "1s"
# Prometheus: GET /metrics on this port.
metrics_port = 9103

[exports.database]
url = "postgres://postgres@127.0.0.1:5432/sextant_exports"
max_connections = 16
acquire_timeout = "5s"
startup_timeout = "30s"

[exports.storage]
# "local": rendered files go to the directory `root` (made at start-up if
# missing). "s3": to `s3.bucket` on any S3-compatible store; credentials and
# anything not set here come from the standard AWS_* environment variables.
kind = "local"
root = "/tmp/sextant-exports"
# Files are rendered here first, then published to the store whole.
scratch = "/tmp/sextant-exports-scratch"

[exports.storage.s3]
bucket = ""
# Empty: AWS itself; else an S3-compatible endpoint, e.g. http://127.0.0.1:9000.
endpoint = ""
region = "us-east-1"
allow_http = false

[exports.limits]
# Per user, counted across every replica (in PostgreSQL).
exports_per_minute = 10
batch_exports_per_minute = 5

[exports.jobs]
# The jobs service, which runs large exports as `export` jobs.
url = "http://127.0.0.1:50052"

[exports.analytics]
# The analytics service, which the analyses to export come from.
url = "http://127.0.0.1:50051"
"#;

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub exports: ExportsConfig,
    pub internal: InternalConfig,
    pub telemetry: TelemetryConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportsConfig {
    pub grpc: GrpcServerConfig,
    pub database: DatabaseConfig,
    pub storage: StorageConfig,
    pub analytics: ServiceLink,
    pub jobs: ServiceLink,
    pub limits: LimitsConfig,
    pub job_threshold_rows: u64,
    #[serde(with = "humantime_serde")]
    pub retention: std::time::Duration,
    #[serde(with = "humantime_serde")]
    pub sweep_interval: std::time::Duration,
    pub sweep_batch: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub exports_per_minute: u32,
    pub batch_exports_per_minute: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    Local,
    S3,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    pub endpoint: String,
    pub region: String,
    pub allow_http: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub kind: StorageKind,
    pub root: std::path::PathBuf,
    pub scratch: std::path::PathBuf,
    pub s3: S3Config,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
/// A link to another service.
pub struct ServiceLink {
    pub url: String,
}

impl Validate for Config {
    fn validate(&self, problems: &mut Problems) {
        self.exports.grpc.validate_at("exports.grpc", problems);
        self.exports.database.validate_at("exports.database", problems);
        problems.check(
            self.exports.storage.root.is_absolute(),
            "exports.storage.root",
            "must be an absolute path",
        );
        problems.check(
            self.exports.storage.scratch.is_absolute(),
            "exports.storage.scratch",
            "must be an absolute path",
        );
        problems.check(
            self.exports.storage.kind != StorageKind::S3 || !self.exports.storage.s3.bucket.is_empty(),
            "exports.storage.s3.bucket",
            "must be set when exports.storage.kind is s3",
        );
        for (url, key) in [
            (&self.exports.analytics.url, "exports.analytics.url"),
            (&self.exports.jobs.url, "exports.jobs.url"),
        ] {
            problems.check(
                url.starts_with("http://") || url.starts_with("https://"),
                key,
                "must be an http:// or https:// URL",
            );
        }
        let limits = &self.exports.limits;
        for (value, key) in [
            (limits.exports_per_minute, "exports.limits.exports_per_minute"),
            (
                limits.batch_exports_per_minute,
                "exports.limits.batch_exports_per_minute",
            ),
        ] {
            problems.check((1..=10_000).contains(&value), key, "must be between 1 and 10000");
        }
        problems.check(
            self.exports.retention >= std::time::Duration::from_secs(1),
            "exports.retention",
            "must be at least 1s",
        );
        problems.check(
            self.exports.sweep_interval >= std::time::Duration::from_millis(100),
            "exports.sweep_interval",
            "must be at least 100ms",
        );
        problems.check(
            (1..=10_000).contains(&self.exports.sweep_batch),
            "exports.sweep_batch",
            "must be between 1 and 10000",
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
        assert_eq!(format!("{:?}", from_file.exports), format!("{:?}", defaults.exports));
    }

    #[test]
    fn an_s3_store_needs_a_bucket_and_limits_must_be_positive() {
        let err = load_with(&[
            ("SEXTANT_EXPORTS__STORAGE__KIND", "s3"),
            ("SEXTANT_EXPORTS__LIMITS__EXPORTS_PER_MINUTE", "0"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("exports.storage.s3.bucket: must be set"), "{err}");
        assert!(
            err.contains("exports.limits.exports_per_minute: must be between 1 and 10000"),
            "{err}"
        );
        let config = load_with(&[
            ("SEXTANT_EXPORTS__STORAGE__KIND", "s3"),
            ("SEXTANT_EXPORTS__STORAGE__S3__BUCKET", "exports"),
            ("SEXTANT_EXPORTS__STORAGE__S3__ENDPOINT", "http://127.0.0.1:9000"),
        ])
        .unwrap();
        assert_eq!(config.exports.storage.kind, StorageKind::S3);
    }
}
