//! The exports service's configuration (`[exports]`), with its defaults.

use serde::Deserialize;
use sextant_common::app::{CommonSections, GrpcServerConfig};
use sextant_common::config::{InternalConfig, Problems, TelemetryConfig, Validate};
use sextant_common::db::DatabaseConfig;

pub const DEFAULTS: &str = r#"
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
# Rendered files go to this local directory (made at start-up if missing),
# through the object_store crate.
root = "/tmp/sextant-exports"

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
    pub analytics: AnalyticsLink,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub root: std::path::PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsLink {
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
            self.exports.analytics.url.starts_with("http://") || self.exports.analytics.url.starts_with("https://"),
            "exports.analytics.url",
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
