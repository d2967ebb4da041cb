//! `make soak`: the replica scenario of `sextant_e2e::soak` for
//! `SOAK_SECONDS` (default 600), with `SOAK_SUBSCRIBERS` WebSocket
//! subscribers (default 1,000). Prints the counts and the per-phase figures;
//! exits 1 on any loss.

use std::process::ExitCode;
use std::time::Duration;

use sextant_e2e::soak::{self, SoakOptions};

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, not {value:?}")),
        Err(_) => default,
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let admin_url = std::env::var(sextant_e2e::infra::DATABASE_URL_ENV)
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut options = SoakOptions::new(Duration::from_secs(env_number("SOAK_SECONDS", 600)), admin_url);
    options.subscribers = env_number("SOAK_SUBSCRIBERS", 1000) as usize;
    match soak::run(options).await {
        Ok(report) => {
            println!("{report}");
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("soak: could not run: {error:#}");
            ExitCode::from(2)
        }
    }
}
