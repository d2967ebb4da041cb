//! The end-to-end harness: starts the whole system from the real binaries
//! against real PostgreSQL and RabbitMQ, and drives it only through the
//! gateway, as a frontend would.
//!
//! Where the servers come from, in order:
//! 1. `SEXTANT_TEST_DATABASE_URL` (an admin URL) and `SEXTANT_TEST_AMQP_URL`;
//! 2. testcontainers, when a Docker engine answers;
//! 3. nowhere: under `CI=true` the test fails saying what to set; on a
//!    laptop it is skipped, saying so.
//!
//! Each [`TestSystem`] gets fresh databases and a unique queue/exchange prefix,
//! so tests run in parallel; everything is torn down on drop, even after a panic.

pub mod bench;
pub mod cluster;
pub mod collector;
pub mod fleet;
pub mod infra;
pub mod local;
pub mod process;
pub mod prometheus;
pub mod soak;
pub mod system;
pub mod tokens;
pub mod ws;

pub use infra::Infra;
pub use system::{TestSystem, TestSystemBuilder};
