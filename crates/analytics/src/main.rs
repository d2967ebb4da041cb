//! `sextant-analytics`: see the library docs.

use sextant_analytics::{Application, Config, SERVICE, config::DEFAULTS};

/// mimalloc: the services allocate many small, short-lived objects per
/// request (decoded messages, label maps), where it is much cheaper than glibc's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    sextant_common::app::run_service::<Config, _, _>(SERVICE, DEFAULTS, |config, shutdown| async move {
        Application::build(&config).await?.run_until_stopped(shutdown).await
    })
}
