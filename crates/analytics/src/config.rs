//! The analytics service's configuration (`[analytics]`), with its defaults.

use serde::Deserialize;
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
}

impl Validate for Config {
    fn validate(&self, problems: &mut Problems) {
        self.analytics.grpc.validate_at("analytics.grpc", problems);
        self.analytics.database.validate_at("analytics.database", problems);
        self.internal.validate(problems);
        self.telemetry.validate(problems);
    }
}

impl CommonSections for Config {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}
