//! `sextant-jobs`: see the library docs.

use sextant_jobs::{Application, Config, SERVICE, config::DEFAULTS};

fn main() {
    sextant_common::app::run_service::<Config, _, _>(SERVICE, DEFAULTS, |config, shutdown| async move {
        Application::build(&config).await?.run_until_stopped(shutdown).await
    })
}
