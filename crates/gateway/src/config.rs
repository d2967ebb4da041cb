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
shutdown_grace = "10s"
workers = 0

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
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
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
            g.ws.heartbeat_interval >= Duration::from_millis(100),
            "gateway.ws.heartbeat_interval",
            "must be at least 100ms",
        );
        p.check(
            g.ws.heartbeat_timeout > g.ws.heartbeat_interval,
            "gateway.ws.heartbeat_timeout",
            "must be longer than gateway.ws.heartbeat_interval",
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
}
