//! What every Sextant binary needs and nothing more: layered config, telemetry,
//! shutdown, PostgreSQL and RabbitMQ connections, internal service auth, the
//! error code table, and the scaffolding that serves a backend's gRPC.
//!
//! Domain code never lives here: if only one service needs it, it belongs to
//! that service. PostgreSQL and RabbitMQ come with the features `db` and
//! `amqp`, which the backends enable and the gateway does not: it links
//! neither driver.

#[cfg(feature = "amqp")]
pub mod amqp;
pub mod app;
pub mod config;
#[cfg(feature = "db")]
pub mod db;
pub mod error;
pub mod grpc;
pub mod idempotency;
pub mod internal_auth;
pub mod metrics;
pub mod outbound;
pub mod shutdown;
pub mod telemetry;

pub use error::ErrorCode;
