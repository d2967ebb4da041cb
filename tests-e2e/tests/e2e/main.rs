//! End-to-end tests: real binaries, real PostgreSQL and RabbitMQ, driven
//! through the gateway (and, for internal auth, a backend's gRPC port).

mod alerts;
mod alerts_faults;
mod alerts_webhooks;
mod analyses;
mod auth;
mod breaker;
mod broker_cluster;
mod config;
mod console;
mod contract;
mod dashboards;
mod deploy;
mod edge;
mod exports;
mod exports_jobs;
mod fanout;
mod faults;
mod grafana;
mod internal_auth;
mod jobs;
mod jobs_faults;
mod jobs_live;
mod jobs_retention;
mod joins;
mod lifecycle;
mod metrics;
mod metrics_faults;
mod metrics_live;
mod openapi_fuzz;
mod otlp;
mod prometheus_api;
mod prometheus_diff;
mod readiness;
mod remote_write;
mod soak;
mod tracing;
mod websocket;

/// Starts the default system, or returns from the test when it is skipped.
#[macro_export]
macro_rules! system {
    () => {
        match sextant_e2e::TestSystem::start_default().await {
            Some(system) => system,
            None => return,
        }
    };
    ($builder:expr) => {
        match $builder.start().await {
            Some(system) => system,
            None => return,
        }
    };
}
