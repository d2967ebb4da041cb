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
}

impl Validate for Config {
    fn validate(&self, problems: &mut Problems) {
        self.exports.grpc.validate_at("exports.grpc", problems);
        self.exports.database.validate_at("exports.database", problems);
        self.internal.validate(problems);
        self.telemetry.validate(problems);
    }
}

impl CommonSections for Config {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}
