//! The service's own PostgreSQL database: created if missing, migrated with the
//! service's embedded migrations, then served from a pool that recovers by
//! itself when the server restarts.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};

use crate::config::{Problems, Validate};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://user@host:port/database`; the database is created if missing.
    pub url: SecretString,
    pub max_connections: u32,
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// How long start-up waits for PostgreSQL before giving up.
    #[serde(with = "humantime_serde")]
    pub startup_timeout: Duration,
}

impl DatabaseConfig {
    pub fn validate_at(&self, key: &str, problems: &mut Problems) {
        match PgConnectOptions::from_str(self.url.expose_secret()) {
            Ok(opts) => problems.check(
                opts.get_database().is_some_and(|d| !d.is_empty()),
                &format!("{key}.url"),
                "must name a database",
            ),
            Err(e) => problems.add(&format!("{key}.url"), format!("is not a PostgreSQL URL: {e}")),
        }
        problems.check(
            self.max_connections > 0,
            &format!("{key}.max_connections"),
            "must be at least 1",
        );
    }
}

impl Validate for DatabaseConfig {
    fn validate(&self, problems: &mut Problems) {
        self.validate_at("database", problems);
    }
}

/// Creates the database if needed, runs `migrator`, and returns a pool.
/// Waits (with backoff) up to `startup_timeout` for PostgreSQL to answer.
pub async fn connect(config: &DatabaseConfig, migrator: &Migrator) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(config.url.expose_secret()).context("parsing database url")?;

    let deadline = tokio::time::Instant::now() + config.startup_timeout;
    let mut delay = Duration::from_millis(100);
    loop {
        match ensure_database(&options).await {
            Ok(()) => break,
            Err(error) if tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!(error = %format!("{error:#}"), retry_in = ?delay, "postgres not ready");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(error) => {
                return Err(error.context(format!(
                    "postgres at {}:{} did not answer within {:?}",
                    options.get_host(),
                    options.get_port(),
                    config.startup_timeout
                )));
            }
        }
    }

    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout)
        .connect_with(options)
        .await
        .context("connecting the pool")?;
    migrator.run(&pool).await.context("running migrations")?;
    Ok(pool)
}

/// Checks the database answers a trivial query within `timeout`.
pub async fn ping(pool: &PgPool, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(pool)).await,
        Ok(Ok(_))
    )
}

async fn ensure_database(options: &PgConnectOptions) -> anyhow::Result<()> {
    let name = options
        .get_database()
        .context("database url names no database")?
        .to_owned();
    if options.connect().await.is_ok() {
        return Ok(());
    }
    let mut admin = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .context("connecting to the postgres maintenance database")?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&name)
        .fetch_one(&mut admin)
        .await?;
    if !exists {
        let create = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&create).execute(&mut admin).await {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another replica won the race: fine.
            Err(sqlx::Error::Database(e)) if matches!(e.code().as_deref(), Some("42P04" | "23505")) => {}
            Err(e) => return Err(e).context(format!("creating database {name}")),
        }
    }
    admin.close().await.ok();
    Ok(())
}

/// A database failure as a caller of `store` sees it (`store` names it for
/// them: "the alert store"): `unavailable`, which a retry may fix. The cause
/// goes to the log, never to the caller.
///
/// `.map_err(db::unavailable("the job store"))`
pub fn unavailable(store: &'static str) -> impl Fn(sqlx::Error) -> tonic::Status + Copy {
    move |error| {
        tracing::error!(%error, store, "database error");
        crate::ErrorCode::Unavailable.status(format!("{store} is unavailable"))
    }
}
