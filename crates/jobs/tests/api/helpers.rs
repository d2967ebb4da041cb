//! `spawn_app()`: the jobs service on port 0 with a database of its own, on
//! the PostgreSQL and RabbitMQ named by `SEXTANT_TEST_DATABASE_URL` and
//! `SEXTANT_TEST_AMQP_URL` (`make test` sets both).

use std::net::SocketAddr;
use std::time::Duration;

use sextant_common::config::{COMMON_DEFAULTS, ConfigSource, load};
use sextant_jobs::{Application, Config, config::DEFAULTS};
use sextant_proto::jobs::v1::job_service_client::JobServiceClient;
use tokio_util::sync::CancellationToken;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const SECRET: &str = "jobs-api-test-internal-secret";

pub struct TestApp {
    pub addr: SocketAddr,
    admin_url: String,
    database: String,
    amqp_url: String,
    prefix: String,
    shutdown: CancellationToken,
}

pub type Client = JobServiceClient<InterceptedService<Channel, AsTenant>>;

#[derive(Clone)]
pub struct AsTenant(String);

impl Interceptor for AsTenant {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let metadata = request.metadata_mut();
        metadata.insert("x-sextant-internal-secret", SECRET.parse().unwrap());
        metadata.insert("x-sextant-tenant", self.0.parse().unwrap());
        metadata.insert("x-sextant-user", "tester".parse().unwrap());
        Ok(request)
    }
}

/// The running service, or `None` when the test is skipped (never under CI).
pub async fn spawn_app() -> Option<TestApp> {
    spawn_app_with(&[]).await
}

/// As [`spawn_app`], with extra `SEXTANT_*` settings.
pub async fn spawn_app_with(extra: &[(&str, &str)]) -> Option<TestApp> {
    let (Ok(admin_url), Ok(amqp_url)) = (
        std::env::var("SEXTANT_TEST_DATABASE_URL"),
        std::env::var("SEXTANT_TEST_AMQP_URL"),
    ) else {
        let message = "set SEXTANT_TEST_DATABASE_URL and SEXTANT_TEST_AMQP_URL (make test does)";
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "{message}");
        eprintln!("SKIPPED: {message}");
        return None;
    };
    let id = uuid::Uuid::new_v4().simple().to_string();
    let database = format!("jobs_test_{}", &id[..12]);
    let prefix = format!("jobs-test-{}", &id[..12]);
    let mut url = url::Url::parse(&admin_url).unwrap();
    url.set_path(&format!("/{database}"));

    let mut env = vec![
        ("SEXTANT_INTERNAL__SECRET", SECRET.to_owned()),
        ("SEXTANT_JOBS__GRPC__PORT", "0".to_owned()),
        ("SEXTANT_JOBS__GRPC__METRICS_PORT", "0".to_owned()),
        ("SEXTANT_JOBS__DATABASE__URL", url.to_string()),
        ("SEXTANT_JOBS__AMQP__URL", amqp_url.clone()),
        ("SEXTANT_JOBS__AMQP__PREFIX", prefix.clone()),
        ("SEXTANT_JOBS__QUEUE__DIAGNOSTIC_KINDS", "true".to_owned()),
        ("SEXTANT_JOBS__WORKER__RETRY_BASE", "200ms".to_owned()),
        // Classic on the broker every test shares: the churn of quorum queues
        // across a run wedged RabbitMQ 3.10's single node (see the e2e
        // harness, `system.rs`).
        ("SEXTANT_JOBS__QUEUE__WORK_QUEUES", "classic".to_owned()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    if std::env::var_os("TEST_LOG").is_some() {
        let telemetry = sextant_common::config::TelemetryConfig {
            log_filter: "debug,h2=info,tower=info,hyper=info,sqlx=warn,lapin=info,amq_protocol=info".into(),
            log_format: sextant_common::config::LogFormat::Pretty,
            otlp_endpoint: None,
            trace_filter: "info".into(),
        };
        std::mem::forget(sextant_common::telemetry::init("sextant-jobs-test", &telemetry));
    }
    let config: Config = load(&format!("{COMMON_DEFAULTS}\n{DEFAULTS}"), &ConfigSource::from_env(env)).unwrap();
    let app = Application::build(&config).await.expect("the jobs service starts");
    let addr = app.local_addr();
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    Some(TestApp {
        addr,
        admin_url,
        database,
        amqp_url,
        prefix,
        shutdown,
    })
}

impl TestApp {
    /// Polls the job until `done` holds, for at most `timeout`.
    pub async fn wait_for(
        &self,
        client: &mut Client,
        id: &str,
        timeout: Duration,
        done: impl Fn(&sextant_proto::jobs::v1::Job) -> bool,
    ) -> sextant_proto::jobs::v1::Job {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let job = client
                .get_job(sextant_proto::jobs::v1::GetJobRequest { id: id.to_owned() })
                .await
                .unwrap()
                .into_inner();
            if done(&job) {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job never reached the state; last: {job:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A connection to the service's own database, to look behind the API.
    pub async fn database(&self) -> sqlx::PgConnection {
        use sqlx::Connection;
        let mut url = url::Url::parse(&self.admin_url).unwrap();
        url.set_path(&format!("/{}", self.database));
        sqlx::PgConnection::connect(url.as_str()).await.unwrap()
    }

    /// A client calling as `tenant`.
    pub async fn client(&self, tenant: &str) -> Client {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        JobServiceClient::with_interceptor(channel, AsTenant(tenant.to_owned()))
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let (admin_url, database) = (self.admin_url.clone(), self.database.clone());
        let (amqp_url, prefix) = (self.amqp_url.clone(), self.prefix.clone());
        // The test's runtime is blocked while this thread runs, so the service
        // cannot declare its queues again behind our back.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let deleted = tokio::time::timeout(
                    Duration::from_secs(10),
                    sextant_jobs::topology::delete_at(&amqp_url, &prefix),
                )
                .await;
                if !matches!(deleted, Ok(Ok(()))) {
                    eprintln!("deleting the test's RabbitMQ topology {prefix} failed: {deleted:?}");
                }
                use sqlx::Connection;
                if let Ok(Ok(mut conn)) =
                    tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&admin_url)).await
                {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}
