//! The shape every binary's `main` shares: parse `--config`, load and validate
//! the configuration (exit 64 on any problem, before a runtime exists), start
//! telemetry, run until SIGTERM/SIGINT, exit 1 with the error chain on failure.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::config::{self, ConfigSource, Problems, TelemetryConfig, Validate};

/// Sections every binary has.
pub trait CommonSections {
    fn telemetry(&self) -> &TelemetryConfig;
}

/// How a backend's gRPC server listens and stops.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcServerConfig {
    pub host: String,
    pub port: u16,
    /// How long in-flight calls may take to finish after SIGTERM.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// How often dependencies are checked for the health service.
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
    /// Port of the Prometheus endpoint (`GET /metrics`) on the same host.
    pub metrics_port: u16,
}

impl GrpcServerConfig {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub fn metrics_addr(&self) -> String {
        format!("{}:{}", self.host, self.metrics_port)
    }

    pub fn validate_at(&self, key: &str, problems: &mut Problems) {
        problems.check(
            self.shutdown_grace <= Duration::from_secs(300),
            &format!("{key}.shutdown_grace"),
            "must be at most 5m",
        );
        problems.check(
            self.health_interval >= Duration::from_millis(50),
            &format!("{key}.health_interval"),
            "must be at least 50ms",
        );
    }
}

/// `--config FILE` for binaries with no other arguments.
#[derive(Debug, clap::Parser)]
pub struct ConfigArgs {
    /// TOML config file (also SEXTANT_CONFIG); environment variables override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Loads the config from the process environment, or exits 64 listing every problem.
pub fn load_or_exit<C: DeserializeOwned + Validate>(defaults: &str, file: Option<PathBuf>) -> C {
    let defaults = format!("{}\n{defaults}", config::COMMON_DEFAULTS);
    config::load(&defaults, &ConfigSource::from_process(file)).unwrap_or_else(|e| e.exit())
}

/// Runs a binary whose only argument is `--config`: see [`run`].
pub fn run_service<C, F, Fut>(service: &'static str, defaults: &str, body: F) -> !
where
    C: DeserializeOwned + Validate + CommonSections,
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let args: ConfigArgs = clap::Parser::parse();
    run(service, load_or_exit(defaults, args.config), body)
}

/// Starts the runtime and telemetry, then runs `body` until SIGTERM/SIGINT
/// cancels its token; exits 0, or 1 with the error chain.
pub fn run<C, F, Fut>(service: &'static str, config: C, body: F) -> !
where
    C: CommonSections,
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
    let code = runtime.block_on(async {
        let _telemetry = match crate::telemetry::init(service, config.telemetry()) {
            Ok(guard) => guard,
            Err(error) => {
                eprintln!("{service}: starting telemetry failed: {error:#}");
                return 1;
            }
        };
        let shutdown = crate::shutdown::on_signal();
        match body(config, shutdown).await {
            Ok(()) => 0,
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "exiting");
                eprintln!("{service}: {error:#}");
                1
            }
        }
    });
    // Do not wait for stray blocking tasks: the grace period already bounded draining.
    runtime.shutdown_timeout(Duration::from_millis(250));
    std::process::exit(code)
}
