//! The gateway's configuration (`[gateway]`), with its defaults.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sextant_common::app::CommonSections;
use sextant_common::config::{InternalConfig, Problems, TelemetryConfig, Validate};

pub const DEFAULTS: &str = r#"
[gateway.http]
host = "127.0.0.1"
port = 8080
body_limit = 1048576
# POST /api/v1/events only: a full batch (10,000 events) needs more.
ingest_body_limit = 8388608
shutdown_grace = "10s"
workers = 0
# A request still unanswered after this is answered 504; every backend
# call's deadline (backends.request_timeout) must be shorter.
request_timeout = "30s"

[gateway.auth]
# Development default; every deployment sets SEXTANT_GATEWAY__AUTH__JWT_SECRET.
jwt_secret = "sextant-dev-jwt-secret-change-me"
issuer = "sextant"
audience = "sextant-api"
leeway = "30s"
dev_token_ttl = "12h"

[gateway.cors]
allowed_origins = ["http://localhost:3000", "http://127.0.0.1:3000", "http://localhost:5173"]
max_age = "1h"

[gateway.backends]
analytics_url = "http://127.0.0.1:50051"
jobs_url = "http://127.0.0.1:50052"
exports_url = "http://127.0.0.1:50053"
connect_timeout = "2s"
request_timeout = "10s"
readiness_timeout = "1s"
retry_attempts = 3
retry_min_delay = "50ms"
# This many unreachable calls in a row (transport error, deadline) open a
# backend's circuit breaker: its calls then fail at once with 503 until
# breaker_open_for has passed and a probe succeeds.
breaker_failures = 5
breaker_open_for = "5s"

[gateway.ws]
heartbeat_interval = "15s"
heartbeat_timeout = "45s"
idle_timeout = "5m"
max_frame_bytes = 65536
max_connections_per_user = 8
max_subscriptions = 64
outbound_buffer = 256
reconnect_min_delay = "1s"
reconnect_max_delay = "30s"
# Frames each shared topic keeps for subscribers that join or resume.
topic_history = 1024
# How long a topic's backend stream stays open after its last subscriber left.
topic_linger = "5s"
"#;

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub gateway: GatewayConfig,
    pub internal: InternalConfig,
    pub telemetry: TelemetryConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub cors: CorsConfig,
    pub backends: BackendsConfig,
    pub ws: WsConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub host: String,
    pub port: u16,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Largest accepted body of `POST /api/v1/events`, in bytes.
    pub ingest_body_limit: usize,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// A request unanswered for this long gets 504.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 key; at least 32 bytes.
    pub jwt_secret: SecretString,
    pub issuer: String,
    pub audience: String,
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    #[serde(with = "humantime_serde")]
    pub dev_token_ttl: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Exact origins, or `["*"]` for any.
    pub allowed_origins: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendsConfig {
    pub analytics_url: String,
    pub jobs_url: String,
    pub exports_url: String,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Deadline of every gRPC call unless the call sets a shorter one.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub readiness_timeout: Duration,
    /// Attempts for idempotent calls (1 = no retry).
    pub retry_attempts: usize,
    #[serde(with = "humantime_serde")]
    pub retry_min_delay: Duration,
    /// Unreachable calls in a row that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker refuses calls before letting a probe through.
    #[serde(with = "humantime_serde")]
    pub breaker_open_for: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsConfig {
    /// How often the server pings.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A connection from which nothing (not even a pong) arrives for this long is dead.
    #[serde(with = "humantime_serde")]
    pub heartbeat_timeout: Duration,
    /// A connection with no subscriptions and no client message for this long is idle.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    pub max_frame_bytes: usize,
    pub max_connections_per_user: usize,
    pub max_subscriptions: usize,
    /// Frames queued for a client before it counts as a slow consumer.
    pub outbound_buffer: usize,
    /// Advertised in `hello` and the shutdown close: the client's backoff window.
    #[serde(with = "humantime_serde")]
    pub reconnect_min_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_max_delay: Duration,
    /// Frames each shared topic keeps for subscribers that join or resume.
    pub topic_history: usize,
    /// How long a topic's backend stream outlives its last subscriber.
    #[serde(with = "humantime_serde")]
    pub topic_linger: Duration,
}

impl Validate for Config {
    fn validate(&self, p: &mut Problems) {
        let g = &self.gateway;
        p.check(
            g.http.body_limit >= 1024,
            "gateway.http.body_limit",
            "must be at least 1024 bytes",
        );
        p.check(
            g.http.ingest_body_limit >= g.http.body_limit,
            "gateway.http.ingest_body_limit",
            "must be at least gateway.http.body_limit",
        );
        p.check(
            g.http.shutdown_grace <= Duration::from_secs(300),
            "gateway.http.shutdown_grace",
            "must be at most 5m",
        );
        p.check(
            g.auth.jwt_secret.expose_secret().len() >= 32,
            "gateway.auth.jwt_secret",
            "must be at least 32 bytes",
        );
        p.check(!g.auth.issuer.is_empty(), "gateway.auth.issuer", "must not be empty");
        p.check(
            !g.auth.audience.is_empty(),
            "gateway.auth.audience",
            "must not be empty",
        );
        for origin in &g.cors.allowed_origins {
            p.check(
                origin == "*" || url::Url::parse(origin).is_ok_and(|u| u.has_host()),
                "gateway.cors.allowed_origins",
                format!("{origin:?} is not an origin such as https://app.example.com"),
            );
        }
        for (key, value) in [
            ("gateway.backends.analytics_url", &g.backends.analytics_url),
            ("gateway.backends.jobs_url", &g.backends.jobs_url),
            ("gateway.backends.exports_url", &g.backends.exports_url),
        ] {
            p.check(
                url::Url::parse(value).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host()),
                key,
                "must be an http:// or https:// URL",
            );
        }
        p.check(
            g.backends.retry_attempts >= 1,
            "gateway.backends.retry_attempts",
            "must be at least 1",
        );
        p.check(
            g.backends.breaker_failures >= 1,
            "gateway.backends.breaker_failures",
            "must be at least 1",
        );
        p.check(
            g.backends.breaker_open_for >= Duration::from_millis(100),
            "gateway.backends.breaker_open_for",
            "must be at least 100ms",
        );
        // The timeout hierarchy: what waits on something must outwait it.
        let hierarchy = [
            (
                "gateway.backends.request_timeout",
                g.backends.request_timeout,
                "gateway.http.request_timeout",
                g.http.request_timeout,
            ),
            (
                "gateway.backends.connect_timeout",
                g.backends.connect_timeout,
                "gateway.backends.request_timeout",
                g.backends.request_timeout,
            ),
            (
                "gateway.backends.readiness_timeout",
                g.backends.readiness_timeout,
                "gateway.http.request_timeout",
                g.http.request_timeout,
            ),
            (
                "gateway.ws.heartbeat_interval",
                g.ws.heartbeat_interval,
                "gateway.ws.heartbeat_timeout",
                g.ws.heartbeat_timeout,
            ),
        ];
        for (key, value, outer_key, outer) in hierarchy {
            p.check(
                value < outer,
                key,
                format!(
                    "must be shorter than {outer_key} ({} is not shorter than {})",
                    humantime::format_duration(value),
                    humantime::format_duration(outer)
                ),
            );
        }
        p.check(
            g.ws.heartbeat_interval >= Duration::from_millis(100),
            "gateway.ws.heartbeat_interval",
            "must be at least 100ms",
        );
        p.check(
            g.ws.max_frame_bytes >= 256,
            "gateway.ws.max_frame_bytes",
            "must be at least 256",
        );
        p.check(
            g.ws.max_connections_per_user >= 1,
            "gateway.ws.max_connections_per_user",
            "must be at least 1",
        );
        p.check(
            g.ws.outbound_buffer >= 1,
            "gateway.ws.outbound_buffer",
            "must be at least 1",
        );
        p.check(
            g.ws.topic_history >= 1,
            "gateway.ws.topic_history",
            "must be at least 1",
        );
        p.check(
            g.ws.reconnect_max_delay >= g.ws.reconnect_min_delay,
            "gateway.ws.reconnect_max_delay",
            "must not be shorter than gateway.ws.reconnect_min_delay",
        );
        self.internal.validate(p);
        self.telemetry.validate(p);
    }
}

impl CommonSections for Config {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sextant_common::config::{COMMON_DEFAULTS, ConfigSource, load};

    fn load_with(env: &[(&str, &str)]) -> Result<Config, sextant_common::config::ConfigError> {
        load(
            &format!("{COMMON_DEFAULTS}\n{DEFAULTS}"),
            &ConfigSource::from_env(env.iter().copied()),
        )
    }

    #[test]
    fn defaults_are_valid() {
        let config = load_with(&[]).unwrap();
        assert_eq!(config.gateway.http.port, 8080);
    }

    #[test]
    fn a_non_numeric_port_names_the_key_and_variable() {
        let err = load_with(&[("SEXTANT_GATEWAY__HTTP__PORT", "abc")]).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        let line = err.to_string();
        assert!(line.contains("gateway.http.port"), "{line}");
        assert!(line.contains("SEXTANT_GATEWAY__HTTP__PORT"), "{line}");
    }

    #[test]
    fn a_short_jwt_secret_is_refused() {
        let err = load_with(&[("SEXTANT_GATEWAY__AUTH__JWT_SECRET", "short")]).unwrap_err();
        assert!(
            err.to_string()
                .contains("gateway.auth.jwt_secret: must be at least 32 bytes"),
            "{err}"
        );
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
        // Every key is spelled as the binary reads it, with the default value.
        assert_eq!(format!("{:?}", from_file.gateway), format!("{:?}", defaults.gateway));
    }

    #[test]
    fn a_backend_deadline_not_shorter_than_the_request_timeout_names_both_keys() {
        let err = load_with(&[
            ("SEXTANT_GATEWAY__HTTP__REQUEST_TIMEOUT", "5s"),
            ("SEXTANT_GATEWAY__BACKENDS__REQUEST_TIMEOUT", "10s"),
        ])
        .unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert_eq!(
            err.to_string(),
            "config error: gateway.backends.request_timeout: must be shorter than \
             gateway.http.request_timeout (10s is not shorter than 5s) \
             (set by SEXTANT_GATEWAY__BACKENDS__REQUEST_TIMEOUT)"
        );
    }

    #[test]
    fn every_broken_rung_of_the_hierarchy_is_its_own_line() {
        let err = load_with(&[
            ("SEXTANT_GATEWAY__BACKENDS__CONNECT_TIMEOUT", "20s"),
            ("SEXTANT_GATEWAY__WS__HEARTBEAT_TIMEOUT", "10s"),
        ])
        .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.problems.len(), 2, "{text}");
        assert!(
            text.contains("gateway.backends.connect_timeout: must be shorter than gateway.backends.request_timeout"),
            "{text}"
        );
        assert!(
            text.contains("gateway.ws.heartbeat_interval: must be shorter than gateway.ws.heartbeat_timeout"),
            "{text}"
        );
    }
}
