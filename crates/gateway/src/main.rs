//! `sextant-gateway`: serve (the default), or print a development token.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sextant_gateway::auth::Authenticator;
use sextant_gateway::{Application, Config, SERVICE, config::DEFAULTS};

/// mimalloc: the services allocate many small, short-lived objects per
/// request (decoded messages, label maps), where it is much cheaper than glibc's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "Sextant's public HTTP and WebSocket edge")]
struct Cli {
    /// TOML config file (also SEXTANT_CONFIG); environment variables override it.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP and WebSocket (the default).
    Serve,
    /// Print a token signed with the configured secret, for development.
    Token {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        user: String,
        /// Repeat for several scopes.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Lifetime, e.g. 30m or 12h; defaults to gateway.auth.dev_token_ttl.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
    },
}

fn main() {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let config: Config = sextant_common::app::load_or_exit(DEFAULTS, cli.config);
            sextant_common::app::run(SERVICE, config, |config, shutdown| async move {
                Application::build(config)?.run_until_stopped(shutdown).await
            })
        }
        Command::Token {
            tenant,
            user,
            scopes,
            ttl,
        } => {
            let config: Config = sextant_common::app::load_or_exit(DEFAULTS, cli.config);
            let auth = Authenticator::new(&config.gateway.auth);
            match auth.issue(
                &tenant,
                &user,
                &scopes,
                ttl.unwrap_or(config.gateway.auth.dev_token_ttl),
            ) {
                Ok(token) => println!("{token}"),
                Err(error) => {
                    eprintln!("token: {error:#}");
                    std::process::exit(sextant_common::config::EXIT_CONFIG);
                }
            }
        }
    }
}
