//! Prometheus metrics for `/metrics`, and the middleware that records every
//! HTTP request (labelled by route pattern, never by raw path, so ids do not
//! explode the series count) inside a span joined to the caller's trace.

use std::sync::Mutex;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::Instrument;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloseLabels {
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    /// The topic's kind (`job`, `jobs`), never its full name.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    pub kind: &'static str,
    /// `shared`: a topic's one stream; `catch_up`: a subscriber's own, until
    /// the shared history covers it.
    pub role: &'static str,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<HttpLabels, Histogram>,
    /// Open WebSocket connections.
    pub ws_connections: Gauge,
    pub ws_opened: Counter,
    /// Connections the server closed, by close code (4008: slow consumers).
    pub ws_closed: Family<CloseLabels, Counter>,
    /// Subscriptions, by topic kind.
    pub ws_subscribers: Family<TopicLabels, Gauge>,
    /// Backend streams open behind the topics.
    pub ws_upstreams: Family<StreamLabels, Gauge>,
    /// Frames queued for subscribers by the shared streams.
    pub ws_frames_fanned_out: Family<TopicLabels, Counter>,
    /// Each backend's circuit breaker: 0 closed, 1 half-open, 2 open.
    pub breaker_state: Family<BackendLabels, Gauge>,
    /// Calls a breaker refused without calling the backend.
    pub breaker_rejected: Family<BackendLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sextant_gateway");
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_duration = Family::<HttpLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let ws_connections = Gauge::default();
        let ws_opened = Counter::default();
        let ws_closed = Family::<CloseLabels, Counter>::default();
        let ws_subscribers = Family::<TopicLabels, Gauge>::default();
        let ws_upstreams = Family::<StreamLabels, Gauge>::default();
        let ws_frames_fanned_out = Family::<TopicLabels, Counter>::default();
        let breaker_state = Family::<BackendLabels, Gauge>::default();
        let breaker_rejected = Family::<BackendLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered", http_requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            http_duration.clone(),
        );
        registry.register("ws_connections", "Open WebSocket connections", ws_connections.clone());
        registry.register(
            "ws_connections_opened",
            "WebSocket connections accepted",
            ws_opened.clone(),
        );
        registry.register(
            "ws_connections_closed",
            "WebSocket connections closed by the server, by close code",
            ws_closed.clone(),
        );
        registry.register(
            "ws_subscribers",
            "WebSocket subscriptions, by topic kind",
            ws_subscribers.clone(),
        );
        registry.register(
            "ws_upstream_streams",
            "Backend streams open behind WebSocket topics",
            ws_upstreams.clone(),
        );
        registry.register(
            "ws_frames_fanned_out",
            "Frames queued for WebSocket subscribers by shared topic streams",
            ws_frames_fanned_out.clone(),
        );
        registry.register(
            "backend_breaker_state",
            "Circuit breaker per backend: 0 closed, 1 half-open, 2 open",
            breaker_state.clone(),
        );
        registry.register(
            "backend_breaker_rejected",
            "Calls refused by a backend's open circuit breaker",
            breaker_rejected.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            http_requests,
            http_duration,
            ws_connections,
            ws_opened,
            ws_closed,
            ws_subscribers,
            ws_upstreams,
            ws_frames_fanned_out,
            breaker_state,
            breaker_rejected,
        }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().expect("metrics registry lock");
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }
}

/// Records the request's latency and outcome, inside a span whose parent is
/// the caller's `traceparent` when one was sent.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().to_string();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".to_owned());
    let span = tracing::info_span!(
        "http",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        url.path = %req.path(),
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let parent = opentelemetry_context(req.headers());
    sextant_common::telemetry::set_parent(&span, parent);
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();

    let response = next.call(req).instrument(span.clone()).await?;

    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    if let Some(metrics) = metrics {
        let labels = HttpLabels { method, route, status };
        metrics.http_requests.get_or_create(&labels).inc();
        metrics
            .http_duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
    }
    Ok(response)
}

fn opentelemetry_context(headers: &actix_web::http::header::HeaderMap) -> opentelemetry::Context {
    // actix uses http 0.2; copy the one header that matters into an http 1 map.
    let mut map = http::HeaderMap::new();
    for name in ["traceparent", "tracestate"] {
        if let Some(value) = headers
            .get(name)
            .and_then(|v| http::HeaderValue::from_bytes(v.as_bytes()).ok())
        {
            map.insert(name, value);
        }
    }
    sextant_common::telemetry::extract_headers(&map)
}
