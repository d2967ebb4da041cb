//! Where PostgreSQL and RabbitMQ come from for a test.

use std::time::Duration;

use testcontainers_modules::postgres::Postgres;
use testcontainers_modules::rabbitmq::RabbitMq;
use testcontainers_modules::testcontainers::ContainerAsync;
use testcontainers_modules::testcontainers::runners::AsyncRunner;

pub const DATABASE_URL_ENV: &str = "SEXTANT_TEST_DATABASE_URL";
pub const AMQP_URL_ENV: &str = "SEXTANT_TEST_AMQP_URL";

/// Servers for one test. Containers, when used, live as long as this value.
pub struct Infra {
    /// Admin URL: a superuser, database `postgres`.
    pub database_url: String,
    pub amqp_url: String,
    _containers: Option<(ContainerAsync<Postgres>, ContainerAsync<RabbitMq>)>,
}

impl Infra {
    /// Finds servers, or returns `None` when the test should be skipped
    /// (never under `CI=true`: there it panics with what to set).
    pub async fn get() -> Option<Infra> {
        if let (Ok(database_url), Ok(amqp_url)) = (std::env::var(DATABASE_URL_ENV), std::env::var(AMQP_URL_ENV)) {
            return Some(Infra {
                database_url,
                amqp_url,
                _containers: None,
            });
        }
        if docker_available().await {
            return Some(Self::containers().await);
        }
        let message = format!(
            "no PostgreSQL/RabbitMQ for e2e tests: set {DATABASE_URL_ENV} (e.g. postgres://postgres@127.0.0.1:5432/postgres) \
             and {AMQP_URL_ENV} (e.g. amqp://guest:guest@127.0.0.1:5672/%2f), or start a Docker engine"
        );
        if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
            panic!("{message}");
        }
        eprintln!("SKIPPED: {message}");
        None
    }

    async fn containers() -> Infra {
        let pg = Postgres::default()
            .start()
            .await
            .expect("starting a PostgreSQL container");
        let rabbit = RabbitMq::default()
            .start()
            .await
            .expect("starting a RabbitMQ container");
        let pg_port = pg.get_host_port_ipv4(5432).await.expect("postgres port");
        let amqp_port = rabbit.get_host_port_ipv4(5672).await.expect("rabbitmq port");
        Infra {
            database_url: format!("postgres://postgres:postgres@127.0.0.1:{pg_port}/postgres"),
            amqp_url: format!("amqp://guest:guest@127.0.0.1:{amqp_port}/%2f"),
            _containers: Some((pg, rabbit)),
        }
    }
}

async fn docker_available() -> bool {
    if let Ok(host) = std::env::var("DOCKER_HOST") {
        return !host.is_empty();
    }
    let Ok(mut child) = tokio::process::Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
    else {
        return false;
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), child.wait()).await,
        Ok(Ok(status)) if status.success()
    )
}

/// Drops `databases` (and their connections) on `admin_url`'s server, from a
/// thread of its own: callers are `Drop`s, maybe inside a runtime.
pub fn drop_databases(admin_url: String, databases: Vec<String>) {
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            use sqlx::Connection;
            let Ok(Ok(mut conn)) =
                tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&admin_url)).await
            else {
                return;
            };
            for database in databases {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
        });
    })
    .join();
}

/// Same server as `admin_url`, database `name`.
pub fn database_url(admin_url: &str, name: &str) -> String {
    let mut url = url::Url::parse(admin_url).expect("a valid database URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}
