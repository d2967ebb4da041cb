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

[jobs.database]
url = "postgres://postgres@127.0.0.1:5432/sextant_jobs"
max_connections = 16
acquire_timeout = "5s"
startup_timeout = "30s"

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
}

impl Validate for Config {
    fn validate(&self, problems: &mut Problems) {
        self.jobs.grpc.validate_at("jobs.grpc", problems);
        self.jobs.database.validate_at("jobs.database", problems);
        self.jobs.amqp.validate_at("jobs.amqp", problems);
        self.internal.validate(problems);
        self.telemetry.validate(problems);
    }
}

impl CommonSections for Config {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}
