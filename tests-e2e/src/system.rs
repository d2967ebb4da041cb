//! The whole system under test: three backends and the gateway, each a real
//! binary on a free port, with fresh databases and a unique AMQP prefix.

use std::time::{Duration, Instant};

use serde_json::Value;

use tonic::metadata::AsciiMetadataValue;

use crate::infra::{self, Infra};
use crate::process::ServiceProcess;
use crate::tokens;

#[derive(Default)]
pub struct TestSystemBuilder {
    gateway_env: Vec<(String, String)>,
    jobs_env: Vec<(String, String)>,
    analytics_env: Vec<(String, String)>,
    exports_env: Vec<(String, String)>,
    common_env: Vec<(String, String)>,
    database_url: Option<String>,
    amqp_url: Option<String>,
}

impl TestSystemBuilder {
    /// Extra gateway setting, e.g. `("SEXTANT_GATEWAY__WS__IDLE_TIMEOUT", "1s")`.
    pub fn gateway_env(mut self, key: &str, value: &str) -> Self {
        self.gateway_env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Extra jobs-service setting, e.g. `("SEXTANT_JOBS__WORKER__ROLE", "api")`.
    pub fn jobs_env(mut self, key: &str, value: &str) -> Self {
        self.jobs_env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Extra analytics-service setting, e.g. `("SEXTANT_ANALYTICS__LIVE__POLL", "1s")`.
    pub fn analytics_env(mut self, key: &str, value: &str) -> Self {
        self.analytics_env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Extra exports-service setting, e.g. `("SEXTANT_EXPORTS__JOB_THRESHOLD_ROWS", "100")`.
    pub fn exports_env(mut self, key: &str, value: &str) -> Self {
        self.exports_env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// A setting for all four services, e.g. `SEXTANT_TELEMETRY__OTLP_ENDPOINT`.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.common_env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Use this PostgreSQL (admin URL) instead of the shared one.
    pub fn database(mut self, admin_url: String) -> Self {
        self.database_url = Some(admin_url);
        self
    }

    /// Use this RabbitMQ instead of the shared one.
    pub fn amqp(mut self, url: String) -> Self {
        self.amqp_url = Some(url);
        self
    }

    /// Starts everything and waits for readiness; `None` when the test is skipped.
    pub async fn start(self) -> Option<TestSystem> {
        let infra = match (&self.database_url, &self.amqp_url) {
            (Some(_), Some(_)) => None,
            _ => Some(Infra::get().await?),
        };
        let database_url = self
            .database_url
            .clone()
            .or_else(|| infra.as_ref().map(|i| i.database_url.clone()))
            .expect("a database");
        let amqp_url = self
            .amqp_url
            .clone()
            .or_else(|| infra.as_ref().map(|i| i.amqp_url.clone()))
            .expect("a broker");
        let mut builder = self;
        if builder.amqp_url.is_none() {
            // On the broker every test shares, classic work queues: a run
            // declares and deletes hundreds of queues, and that churn of
            // quorum queues (a Raft group each) wedged RabbitMQ 3.10's single
            // node (no handshake answered, even after a restart). Tests on a
            // broker of their own (fault tests, the cluster) keep the default,
            // quorum.
            builder
                .jobs_env
                .insert(0, ("SEXTANT_JOBS__QUEUE__WORK_QUEUES".to_owned(), "classic".to_owned()));
        }
        Some(TestSystem::start(builder, infra, database_url, amqp_url).await)
    }
}

pub struct TestSystem {
    pub id: String,
    pub jwt_secret: String,
    pub internal_secret: String,
    pub admin_url: String,
    pub amqp_url: String,
    pub gateway: ServiceProcess,
    pub analytics: ServiceProcess,
    pub jobs: ServiceProcess,
    pub exports: ServiceProcess,
    pub http: reqwest::Client,
    /// The jobs service's environment, for starting more replicas of it.
    jobs_env: Vec<(String, String)>,
    /// The analytics service's environment, likewise.
    analytics_env: Vec<(String, String)>,
    /// The gateway's environment, likewise.
    gateway_env: Vec<(String, String)>,
    /// The exports service's environment, with its port: to start it again
    /// where the jobs service expects it.
    exports_env: Vec<(String, String)>,
    databases: Vec<String>,
    /// The exports service's storage directory, removed with the system.
    exports_root: std::path::PathBuf,
    _infra: Option<Infra>,
}

impl TestSystem {
    pub fn builder() -> TestSystemBuilder {
        TestSystemBuilder::default()
    }

    /// The default system; `None` when the test is skipped.
    pub async fn start_default() -> Option<TestSystem> {
        Self::builder().start().await
    }

    async fn start(
        builder: TestSystemBuilder,
        infra: Option<Infra>,
        admin_url: String,
        amqp_url: String,
    ) -> TestSystem {
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let jwt_secret = format!("e2e-jwt-{}", uuid::Uuid::new_v4().simple());
        let internal_secret = format!("e2e-internal-{}", uuid::Uuid::new_v4().simple());

        let mut common = vec![
            ("SEXTANT_INTERNAL__SECRET".to_owned(), internal_secret.clone()),
            ("SEXTANT_TELEMETRY__LOG_FILTER".to_owned(), "info".to_owned()),
        ];
        common.extend(builder.common_env.iter().cloned());
        let mut databases = Vec::new();
        let mut backend = |service: &str, extra: Vec<(String, String)>| {
            let upper = service.to_uppercase();
            let database = format!("e2e_{id}_{service}");
            if !databases.contains(&database) {
                databases.push(database.clone());
            }
            let mut env = common.clone();
            env.extend([
                (format!("SEXTANT_{upper}__GRPC__PORT"), "0".to_owned()),
                (format!("SEXTANT_{upper}__GRPC__METRICS_PORT"), "0".to_owned()),
                (format!("SEXTANT_{upper}__GRPC__HEALTH_INTERVAL"), "200ms".to_owned()),
                (
                    format!("SEXTANT_{upper}__DATABASE__URL"),
                    infra::database_url(&admin_url, &database),
                ),
                (format!("SEXTANT_{upper}__DATABASE__STARTUP_TIMEOUT"), "20s".to_owned()),
            ]);
            env.extend(extra);
            let process = ServiceProcess::spawn(service, &format!("sextant-{service}"), &env)
                .map_err(|e| format!("starting {service}: {e:#}"))?;
            Ok::<_, String>((process, env))
        };
        // Jobs, analytics and exports call each other (analyze jobs run in
        // analytics, export jobs in exports; analytics queues webhook
        // deliveries and exports queues large renders as jobs), so analytics
        // and exports get ports picked up front and jobs is told them. Should
        // another process take one first, the service cannot bind it: all
        // three start again.
        let exports_root = std::env::temp_dir().join(format!("sextant-e2e-{id}-exports"));
        let mut tries = 0;
        let ((jobs, jobs_env), (analytics, analytics_env), (exports, exports_env)) = loop {
            tries += 1;
            let analytics_port = crate::local::free_port();
            let exports_port = crate::local::free_port();
            let mut jobs_extra = vec![
                ("SEXTANT_JOBS__AMQP__URL".to_owned(), amqp_url.clone()),
                ("SEXTANT_JOBS__AMQP__PREFIX".to_owned(), format!("e2e-{id}")),
                ("SEXTANT_JOBS__AMQP__RECONNECT_MAX_DELAY".to_owned(), "500ms".to_owned()),
                ("SEXTANT_JOBS__QUEUE__DIAGNOSTIC_KINDS".to_owned(), "true".to_owned()),
                // Webhook receivers in tests listen on loopback.
                (
                    "SEXTANT_JOBS__NOTIFY__ALLOW_HOSTS".to_owned(),
                    r#"["127.0.0.1"]"#.to_owned(),
                ),
                (
                    "SEXTANT_JOBS__ANALYTICS__URL".to_owned(),
                    format!("http://127.0.0.1:{analytics_port}"),
                ),
                (
                    "SEXTANT_JOBS__EXPORTS__URL".to_owned(),
                    format!("http://127.0.0.1:{exports_port}"),
                ),
            ];
            jobs_extra.extend(builder.jobs_env.iter().cloned());
            let jobs = backend("jobs", jobs_extra).unwrap_or_else(|e| panic!("{e}"));
            let mut analytics_extra = vec![
                ("SEXTANT_ANALYTICS__GRPC__PORT".to_owned(), analytics_port.to_string()),
                ("SEXTANT_ANALYTICS__AMQP__URL".to_owned(), amqp_url.clone()),
                ("SEXTANT_ANALYTICS__AMQP__PREFIX".to_owned(), format!("e2e-{id}")),
                (
                    "SEXTANT_ANALYTICS__AMQP__RECONNECT_MAX_DELAY".to_owned(),
                    "500ms".to_owned(),
                ),
                (
                    "SEXTANT_ANALYTICS__JOBS__URL".to_owned(),
                    format!("http://{}", jobs.0.addr),
                ),
                (
                    "SEXTANT_ANALYTICS__ALERTS__WEBHOOK_HOSTS".to_owned(),
                    r#"["127.0.0.1"]"#.to_owned(),
                ),
            ];
            analytics_extra.extend(builder.analytics_env.iter().cloned());
            let analytics = match backend("analytics", analytics_extra) {
                Ok(analytics) => analytics,
                Err(error) if tries < 5 => {
                    eprintln!("{error}; starting jobs and analytics again");
                    continue;
                }
                Err(error) => panic!("{error}"),
            };
            let mut exports_extra = vec![
                ("SEXTANT_EXPORTS__GRPC__PORT".to_owned(), exports_port.to_string()),
                (
                    "SEXTANT_EXPORTS__STORAGE__ROOT".to_owned(),
                    exports_root.join("files").display().to_string(),
                ),
                (
                    "SEXTANT_EXPORTS__STORAGE__SCRATCH".to_owned(),
                    exports_root.join("scratch").display().to_string(),
                ),
                (
                    "SEXTANT_EXPORTS__ANALYTICS__URL".to_owned(),
                    format!("http://{}", analytics.0.addr),
                ),
                (
                    "SEXTANT_EXPORTS__JOBS__URL".to_owned(),
                    format!("http://{}", jobs.0.addr),
                ),
            ];
            exports_extra.extend(builder.exports_env.iter().cloned());
            match backend("exports", exports_extra) {
                Ok(exports) => break (jobs, analytics, exports),
                Err(error) if tries < 5 => eprintln!("{error}; starting jobs, analytics and exports again"),
                Err(error) => panic!("{error}"),
            }
        };
        // Replicas started later listen on ports of their own.
        let analytics_env: Vec<(String, String)> = analytics_env
            .into_iter()
            .map(|(k, v)| {
                if k == "SEXTANT_ANALYTICS__GRPC__PORT" {
                    (k, "0".to_owned())
                } else {
                    (k, v)
                }
            })
            .collect();

        let mut env = common.clone();
        env.extend([
            ("SEXTANT_GATEWAY__HTTP__PORT".to_owned(), "0".to_owned()),
            ("SEXTANT_GATEWAY__HTTP__WORKERS".to_owned(), "2".to_owned()),
            ("SEXTANT_GATEWAY__HTTP__SHUTDOWN_GRACE".to_owned(), "5s".to_owned()),
            ("SEXTANT_GATEWAY__AUTH__JWT_SECRET".to_owned(), jwt_secret.clone()),
            (
                "SEXTANT_GATEWAY__BACKENDS__ANALYTICS_URL".to_owned(),
                format!("http://{}", analytics.addr),
            ),
            (
                "SEXTANT_GATEWAY__BACKENDS__JOBS_URL".to_owned(),
                format!("http://{}", jobs.addr),
            ),
            (
                "SEXTANT_GATEWAY__BACKENDS__EXPORTS_URL".to_owned(),
                format!("http://{}", exports.addr),
            ),
        ]);
        env.extend(builder.gateway_env);
        let gateway_env = env.clone();
        let gateway = ServiceProcess::spawn("gateway", "sextant-gateway", &env)
            .unwrap_or_else(|e| panic!("starting the gateway: {e:#}"));

        let system = TestSystem {
            id,
            jwt_secret,
            internal_secret,
            admin_url,
            amqp_url,
            gateway,
            analytics,
            jobs,
            exports,
            jobs_env,
            analytics_env,
            gateway_env,
            exports_env,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                // Below the gateway's keep-alive (5 s): a connection left idle
                // while a test blocked its thread is never reused after the
                // gateway closed it.
                .pool_idle_timeout(Duration::from_secs(3))
                .build()
                .expect("an HTTP client"),
            databases,
            exports_root,
            _infra: infra,
        };
        system
            .wait_until(Duration::from_secs(60), |status, _| status == 200)
            .await
            .unwrap_or_else(|body| panic!("the system never became ready: {body}\n{}", system.all_logs()));
        system
    }

    /// The exports service's directories: `files` (the object store) and `scratch`.
    pub fn exports_dir(&self) -> &std::path::Path {
        &self.exports_root
    }

    /// The exports service started again on its port (after a kill).
    pub fn respawn_exports(&self, name: &str) -> ServiceProcess {
        ServiceProcess::spawn(name, "sextant-exports", &self.exports_env)
            .unwrap_or_else(|e| panic!("starting {name}: {e:#}"))
    }

    /// Another replica of the jobs service on the same database and broker,
    /// with `extra` settings on top (e.g. a worker-only role).
    pub fn spawn_jobs(&self, name: &str, extra: &[(&str, &str)]) -> ServiceProcess {
        let mut env = self.jobs_env.clone();
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        ServiceProcess::spawn(name, "sextant-jobs", &env).unwrap_or_else(|e| panic!("starting {name}: {e:#}"))
    }

    /// Another analytics replica on the same database and broker.
    pub fn spawn_analytics(&self, name: &str, extra: &[(&str, &str)]) -> ServiceProcess {
        let mut env = self.analytics_env.clone();
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        ServiceProcess::spawn(name, "sextant-analytics", &env).unwrap_or_else(|e| panic!("starting {name}: {e:#}"))
    }

    /// Another gateway with the same secrets, in front of the analytics
    /// service at `analytics` (and the same jobs and exports services).
    pub fn spawn_gateway(&self, name: &str, analytics: &ServiceProcess) -> ServiceProcess {
        let mut env = self.gateway_env.clone();
        env.push((
            "SEXTANT_GATEWAY__BACKENDS__ANALYTICS_URL".to_owned(),
            format!("http://{}", analytics.addr),
        ));
        ServiceProcess::spawn(name, "sextant-gateway", &env).unwrap_or_else(|e| panic!("starting {name}: {e:#}"))
    }

    /// A gRPC client straight to the jobs service, calling as `tenant`.
    pub async fn jobs_client(&self, tenant: &str) -> JobsClient {
        let (channel, call_as) = self.channel_as(&self.jobs, tenant).await;
        sextant_proto::jobs::v1::job_service_client::JobServiceClient::with_interceptor(channel, call_as)
    }

    /// A channel to `service` and the metadata to call it as `tenant`.
    async fn channel_as(&self, service: &ServiceProcess, tenant: &str) -> (tonic::transport::Channel, CallAs) {
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", service.addr))
            .unwrap()
            .tcp_nodelay(true)
            .connect()
            .await
            .unwrap();
        let metadata = [
            ("x-sextant-internal-secret", self.internal_secret.clone()),
            ("x-sextant-tenant", tenant.to_owned()),
            ("x-sextant-user", "e2e".to_owned()),
        ];
        (channel, CallAs(metadata.map(|(k, v)| (k, v.parse().unwrap())).to_vec()))
    }

    /// A gRPC client straight to the analytics service, calling as `tenant`.
    pub async fn analytics_client(&self, tenant: &str) -> AnalyticsClient {
        self.analytics_client_at(&self.analytics, tenant).await
    }

    /// A gRPC client straight to the exports service, calling as `tenant`.
    pub async fn exports_client(&self, tenant: &str) -> ExportsClient {
        let (channel, call_as) = self.channel_as(&self.exports, tenant).await;
        sextant_proto::exports::v1::export_service_client::ExportServiceClient::with_interceptor(channel, call_as)
            .max_decoding_message_size(64 << 20)
    }

    /// A gRPC client straight to this analytics replica, calling as `tenant`.
    pub async fn analytics_client_at(&self, replica: &ServiceProcess, tenant: &str) -> AnalyticsClient {
        let (channel, call_as) = self.channel_as(replica, tenant).await;
        sextant_proto::analytics::v1::analytics_service_client::AnalyticsServiceClient::with_interceptor(
            channel, call_as,
        )
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
    }

    /// One sample from a service's Prometheus text: the value of the line
    /// that starts with `series` (name and labels), or 0 when there is none.
    pub async fn metric(&self, service: &ServiceProcess, series: &str) -> f64 {
        let url = if std::ptr::eq(service, &self.gateway) {
            self.url("/metrics")
        } else {
            format!("http://{}/metrics", service.metrics_addr())
        };
        let text = self.http.get(url).send().await.unwrap().text().await.unwrap();
        sample(&text, series)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway.addr)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.gateway.addr)
    }

    /// A valid token for `tenant`/`user`.
    pub fn token(&self, tenant: &str, user: &str) -> String {
        tokens::sign(&self.jwt_secret, &tokens::claims(tenant, user))
    }

    pub async fn readyz(&self) -> (u16, Value) {
        match self.http.get(self.url("/readyz")).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.json().await.unwrap_or(Value::Null))
            }
            Err(error) => (0, Value::String(error.to_string())),
        }
    }

    /// Polls `/readyz` until `done(status, body)` holds; the last body on timeout.
    pub async fn wait_until(&self, timeout: Duration, done: impl Fn(u16, &Value) -> bool) -> Result<Value, Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, body) = self.readyz().await;
            if done(status, &body) {
                return Ok(body);
            }
            if Instant::now() > deadline {
                return Err(body);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn all_logs(&self) -> String {
        [&self.analytics, &self.jobs, &self.exports, &self.gateway]
            .iter()
            .map(|p| format!("--- {} ---\n{}", p.name, p.logs()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for TestSystem {
    fn drop(&mut self) {
        // Processes are killed by their own Drop; first make sure none holds a
        // connection, then drop the databases from a thread of our own (we may
        // be inside a runtime here).
        for process in [
            &mut self.gateway,
            &mut self.analytics,
            &mut self.jobs,
            &mut self.exports,
        ] {
            if process.is_running() {
                process.signal(libc::SIGKILL);
                process.wait_exit(Duration::from_secs(5));
            }
        }
        let _ = std::fs::remove_dir_all(&self.exports_root);
        let (amqp_url, prefix) = (self.amqp_url.clone(), format!("e2e-{}", self.id));
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            // A throwaway broker may already be gone; that is fine.
            runtime.block_on(tokio::time::timeout(
                Duration::from_secs(10),
                sextant_jobs::topology::delete_at(&amqp_url, &prefix),
            ))
        })
        .join();
        infra::drop_databases(self.admin_url.clone(), std::mem::take(&mut self.databases));
    }
}

/// Adds fixed metadata (internal secret, tenant, user) to every call.
#[derive(Clone)]
pub struct CallAs(Vec<(&'static str, AsciiMetadataValue)>);

impl tonic::service::Interceptor for CallAs {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        for (key, value) in &self.0 {
            request.metadata_mut().insert(*key, value.clone());
        }
        Ok(request)
    }
}

pub type AnalyticsClient = sextant_proto::analytics::v1::analytics_service_client::AnalyticsServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, CallAs>,
>;

pub type ExportsClient = sextant_proto::exports::v1::export_service_client::ExportServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, CallAs>,
>;

pub type JobsClient = sextant_proto::jobs::v1::job_service_client::JobServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, CallAs>,
>;

/// The value of the sample `series` (a metric name with its labels, as
/// printed) in Prometheus text, or 0 when it is absent.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().expect("a numeric sample"))
}
