//! gRPC clients to the three backends. Channels connect lazily and reconnect
//! by themselves; every call has a deadline (the channel's request timeout)
//! and passes the backend's circuit breaker ([`crate::breaker`]); only
//! idempotent calls are retried ([`retry_idempotent`]), with jittered
//! exponential backoff and only on errors that mean "not processed".

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use sextant_common::internal_auth::{Caller, ClientAuth};
use sextant_common::telemetry::TracedChannel;
use sextant_proto::analytics::v1::analytics_service_client::AnalyticsServiceClient;
use sextant_proto::exports::v1::export_service_client::ExportServiceClient;
use sextant_proto::jobs::v1::job_service_client::JobServiceClient;
use tonic::codegen::InterceptedService;
use tonic::transport::Endpoint;
use tonic::{Code, Request, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::breaker::{self, Breaker, Guarded};
use crate::config::BackendsConfig;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// A client's transport for unary calls: the breaker, then the channel.
pub type Authed = InterceptedService<Guarded<TracedChannel>, ClientAuth>;
/// A client's transport for long-lived streams (no deadline, no breaker:
/// their owners resume them with backoff).
pub type Streams = InterceptedService<TracedChannel, ClientAuth>;

/// The largest message to or from the analytics service.
const ANALYTICS_MAX_MESSAGE: usize = 64 << 20;

/// Dependencies a backend may report by name in its health service.
const DEPENDENCIES: &[&str] = &["postgres", "rabbitmq"];

pub struct Backend {
    pub name: &'static str,
    /// For health checks, which must see the backend even while its breaker is open.
    channel: TracedChannel,
    guarded: Guarded<TracedChannel>,
    pub breaker: Breaker,
}

pub struct Backends {
    pub analytics: Backend,
    /// The analytics channel without a request deadline, for `WatchMetric`.
    analytics_streams: TracedChannel,
    pub jobs: Backend,
    /// The jobs channel without a request deadline, for watch streams that
    /// live as long as a WebSocket subscription.
    jobs_streams: TracedChannel,
    pub exports: Backend,
    /// The exports channel without a request deadline, for downloads (a big
    /// file to a slow client takes as long as it takes).
    exports_streams: TracedChannel,
    auth: ClientAuth,
    readiness_timeout: Duration,
    retry: ExponentialBuilder,
}

impl Backends {
    pub fn new(config: &BackendsConfig, auth: ClientAuth, metrics: &Metrics) -> anyhow::Result<Self> {
        let endpoint = |url: &str| -> anyhow::Result<Endpoint> {
            Ok(Endpoint::from_shared(url.to_owned())?
                .connect_timeout(config.connect_timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(20))
                .keep_alive_while_idle(true))
        };
        let streams =
            |url: &str| -> anyhow::Result<TracedChannel> { Ok(TracedChannel::new(endpoint(url)?.connect_lazy(), url)) };
        let backend = |name: &'static str, url: &str| -> anyhow::Result<Backend> {
            let channel = TracedChannel::new(endpoint(url)?.timeout(config.request_timeout).connect_lazy(), url);
            let breaker = Breaker::new(name, config.breaker_failures, config.breaker_open_for, metrics);
            Ok(Backend {
                name,
                guarded: Guarded::new(channel.clone(), breaker.clone()),
                channel,
                breaker,
            })
        };
        Ok(Self {
            analytics: backend("analytics", &config.analytics_url)?,
            analytics_streams: streams(&config.analytics_url)?,
            jobs: backend("jobs", &config.jobs_url)?,
            jobs_streams: streams(&config.jobs_url)?,
            exports: backend("exports", &config.exports_url)?,
            exports_streams: streams(&config.exports_url)?,
            auth,
            readiness_timeout: config.readiness_timeout,
            retry: ExponentialBuilder::default()
                .with_min_delay(config.retry_min_delay)
                .with_max_delay(Duration::from_secs(2))
                .with_max_times(config.retry_attempts.saturating_sub(1))
                .with_jitter(),
        })
    }

    pub fn analytics(&self) -> AnalyticsServiceClient<Authed> {
        // A query answer may hold `max_points` (200,000) buckets: more than tonic's 4 MiB default.
        AnalyticsServiceClient::with_interceptor(self.analytics.guarded.clone(), self.auth.clone())
            .max_decoding_message_size(ANALYTICS_MAX_MESSAGE)
            .max_encoding_message_size(ANALYTICS_MAX_MESSAGE)
    }

    /// For `WatchMetric`: no deadline, the stream lasts as long as its subscribers.
    pub fn analytics_streams(&self) -> AnalyticsServiceClient<Streams> {
        AnalyticsServiceClient::with_interceptor(self.analytics_streams.clone(), self.auth.clone())
            .max_decoding_message_size(ANALYTICS_MAX_MESSAGE)
    }

    pub fn jobs(&self) -> JobServiceClient<Authed> {
        JobServiceClient::with_interceptor(self.jobs.guarded.clone(), self.auth.clone())
    }

    /// For `WatchJobs`: no deadline, the stream lasts as long as its subscriber.
    pub fn jobs_streams(&self) -> JobServiceClient<Streams> {
        JobServiceClient::with_interceptor(self.jobs_streams.clone(), self.auth.clone())
    }

    pub fn exports(&self) -> ExportServiceClient<Authed> {
        ExportServiceClient::with_interceptor(self.exports.guarded.clone(), self.auth.clone())
    }

    /// For `DownloadExport`: no deadline.
    pub fn exports_streams(&self) -> ExportServiceClient<Streams> {
        ExportServiceClient::with_interceptor(self.exports_streams.clone(), self.auth.clone())
    }

    pub fn all(&self) -> [&Backend; 3] {
        [&self.analytics, &self.jobs, &self.exports]
    }

    /// Retries `call` while it fails with a status that guarantees the backend
    /// did not act on it (but not while its breaker refuses). Only for
    /// idempotent calls.
    pub async fn retry_idempotent<T, F, Fut>(&self, call: F) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        call.retry(self.retry)
            .when(|status: &Status| {
                status.code() == Code::Unavailable && status.metadata().get(breaker::OPEN_BACKEND).is_none()
            })
            .notify(|status, after| tracing::debug!(code = ?status.code(), ?after, "retrying idempotent call"))
            .await
    }

    /// Checks one backend's gRPC health and, if it is not serving, which of
    /// its dependencies are down.
    pub async fn readiness(&self, backend: &Backend) -> Readiness {
        let mut client = HealthClient::with_interceptor(backend.channel.clone(), self.auth.clone());
        match self.check(&mut client, "").await {
            Ok(ServingStatus::Serving) => Readiness::Serving,
            Ok(_) => {
                let mut down = Vec::new();
                for dependency in DEPENDENCIES {
                    if let Ok(status) = self.check(&mut client, dependency).await
                        && status != ServingStatus::Serving
                    {
                        down.push((*dependency).to_owned());
                    }
                }
                Readiness::NotServing { down }
            }
            Err(status) => Readiness::Unreachable {
                error: status.message().to_owned(),
            },
        }
    }

    async fn check(&self, client: &mut HealthClient<Streams>, service: &str) -> Result<ServingStatus, Status> {
        let mut request = Request::new(HealthCheckRequest {
            service: service.to_owned(),
        });
        request.set_timeout(self.readiness_timeout);
        let response = client.check(request).await?;
        Ok(response.into_inner().status())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Serving,
    NotServing { down: Vec<String> },
    Unreachable { error: String },
}

/// A request to a backend on behalf of `caller`.
pub fn request<T>(caller: &Caller, message: T) -> Result<Request<T>, ApiError> {
    let mut request = Request::new(message);
    caller.apply(request.metadata_mut())?;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use secrecy::SecretString;

    use super::*;

    fn backends(attempts: usize) -> Backends {
        let config = BackendsConfig {
            analytics_url: "http://127.0.0.1:1".into(),
            jobs_url: "http://127.0.0.1:1".into(),
            exports_url: "http://127.0.0.1:1".into(),
            connect_timeout: Duration::from_millis(100),
            request_timeout: Duration::from_millis(100),
            readiness_timeout: Duration::from_millis(100),
            retry_attempts: attempts,
            retry_min_delay: Duration::from_millis(1),
            breaker_failures: 5,
            breaker_open_for: Duration::from_secs(5),
        };
        let auth = ClientAuth::new(&SecretString::from("0123456789abcdef")).unwrap();
        Backends::new(&config, auth, &Metrics::default()).unwrap()
    }

    async fn count_calls(backends: &Backends, fail_first: usize, code: Code) -> (Result<(), Status>, usize) {
        let calls = AtomicUsize::new(0);
        let result = backends
            .retry_idempotent(|| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                std::future::ready(if n < fail_first {
                    Err(Status::new(code, "x"))
                } else {
                    Ok(())
                })
            })
            .await;
        (result, calls.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn unavailable_is_retried_up_to_the_configured_attempts() {
        let backends = backends(3);
        let (result, calls) = count_calls(&backends, 2, Code::Unavailable).await;
        assert!(result.is_ok());
        assert_eq!(calls, 3);

        let (result, calls) = count_calls(&backends, usize::MAX, Code::Unavailable).await;
        assert_eq!(result.unwrap_err().code(), Code::Unavailable);
        assert_eq!(calls, 3);
    }

    #[tokio::test]
    async fn errors_that_may_have_acted_are_not_retried() {
        let backends = backends(3);
        for code in [Code::DeadlineExceeded, Code::InvalidArgument, Code::Internal] {
            let (result, calls) = count_calls(&backends, usize::MAX, code).await;
            assert_eq!(result.unwrap_err().code(), code);
            assert_eq!(calls, 1, "{code:?}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_backend_reads_as_unreachable() {
        let backends = backends(1);
        let readiness = backends.readiness(&backends.jobs).await;
        assert!(matches!(readiness, Readiness::Unreachable { .. }), "{readiness:?}");
    }
}
