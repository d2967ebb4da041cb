//! Logs and traces. Logs are JSON lines on stdout (one event per line, ready for
//! any collector). Traces go to an OTLP/gRPC endpoint only when one is
//! configured. W3C trace context crosses every hop: gRPC calls (each in a
//! client span of its own, [`TracedChannel`]; servers read it with
//! [`extract_headers`]), AMQP message headers ([`inject_amqp`],
//! [`extract_amqp`]), and rows that wait in PostgreSQL (a job, a
//! notification: [`current_traceparent`], [`from_traceparent`]).
//!
//! Spans are named and attributed as OpenTelemetry's semantic conventions
//! say: `otel.name` (`POST /api/v1/jobs`, `sextant.jobs.v1.JobService/
//! SubmitJob`, `publish sextant.jobs.work`), `otel.kind`, and `http.*`,
//! `rpc.*`, `messaging.*` attributes.

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Context, global};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, TelemetryConfig};

/// Flushes pending spans when dropped; keep it alive for the life of `main`.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("flushing traces failed: {error}");
        }
    }
}

/// Installs the global subscriber and propagator. Call once, inside a Tokio
/// runtime when an OTLP endpoint is configured (the exporter spawns on it).
pub fn init(service: &'static str, config: &TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    global::set_text_map_propagator(TraceContextPropagator::new());

    let log_filter = EnvFilter::try_new(&config.log_filter)?;
    let log_layer = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(log_filter)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().with_filter(log_filter).boxed(),
    };

    let (otel_layer, provider) = match &config.otlp_endpoint {
        None => (None, None),
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(Resource::builder().with_service_name(service).build())
                .build();
            global::set_tracer_provider(provider.clone());
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(service))
                .with_filter(EnvFilter::try_new(&config.trace_filter)?);
            (Some(layer), Some(provider))
        }
    };

    tracing_subscriber::registry()
        .with(log_layer)
        .with(otel_layer)
        .try_init()?;
    Ok(TelemetryGuard { provider })
}

/// Writes the current span's trace context into outgoing gRPC metadata.
pub fn inject_metadata(metadata: &mut tonic::metadata::MetadataMap) {
    let context = tracing::Span::current().context();
    global::get_text_map_propagator(|p| p.inject_context(&context, &mut MetadataInjector(metadata)));
}

/// Reads a trace context from incoming HTTP/2 (gRPC) headers.
pub fn extract_headers(headers: &http::HeaderMap) -> Context {
    global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

/// Writes the current span's trace context into AMQP message headers.
#[cfg(feature = "amqp")]
pub fn inject_amqp(headers: &mut lapin::types::FieldTable) {
    let context = tracing::Span::current().context();
    global::get_text_map_propagator(|p| p.inject_context(&context, &mut AmqpInjector(headers)));
}

/// Reads a trace context from AMQP message headers.
#[cfg(feature = "amqp")]
pub fn extract_amqp(headers: &lapin::types::FieldTable) -> Context {
    global::get_text_map_propagator(|p| p.extract(&AmqpExtractor(headers)))
}

/// Makes `span` a child of the remote `parent` context.
pub fn set_parent(span: &tracing::Span, parent: Context) {
    let _ = span.set_parent(parent);
}

/// Links `span` to the span of `context`, if it has one: the way to point
/// at a trace that is not the span's parent (a message's publisher).
pub fn add_link(span: &tracing::Span, context: &Context) {
    use opentelemetry::trace::TraceContextExt as _;
    let linked = context.span().span_context().clone();
    if linked.is_valid() {
        span.add_link(linked);
    }
}

/// The current span's W3C `traceparent`, to store with work that waits (a
/// job, a notification) and continue its trace when it runs; `None` when
/// nothing is traced.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    let mut carrier = std::collections::HashMap::new();
    global::get_text_map_propagator(|p| p.inject_context(&context, &mut carrier));
    carrier.remove("traceparent")
}

/// The context a stored `traceparent` names (empty if it is malformed).
pub fn from_traceparent(traceparent: &str) -> Context {
    let carrier = std::collections::HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    global::get_text_map_propagator(|p| p.extract(&carrier))
}

/// `(rpc.service, rpc.method)` of a gRPC request path
/// (`/sextant.jobs.v1.JobService/SubmitJob`).
pub fn rpc_names(path: &str) -> (&str, &str) {
    let path = path.trim_start_matches('/');
    path.split_once('/').unwrap_or((path, ""))
}

/// A gRPC client transport whose every call runs in a client span of its
/// own (`{rpc.service}/{rpc.method}`, kind client, `rpc.*` and `server.*`
/// attributes), which the call's `traceparent` names as its parent.
pub type TracedChannel = Traced<tonic::transport::Channel>;

/// See [`TracedChannel`].
#[derive(Clone, Debug)]
pub struct Traced<S> {
    inner: S,
    /// `server.address` and `server.port`.
    server: (String, u16),
}

impl<S> Traced<S> {
    /// `url` names the server in the spans.
    pub fn new(inner: S, url: &str) -> Self {
        let server = url::Url::parse(url)
            .ok()
            .map(|u| {
                (
                    u.host_str().unwrap_or_default().to_owned(),
                    u.port_or_known_default().unwrap_or(0),
                )
            })
            .unwrap_or_default();
        Self { inner, server }
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for Traced<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        use tracing::Instrument as _;
        let (service, method) = rpc_names(request.uri().path());
        let span = tracing::info_span!(
            "grpc client",
            otel.name = %format!("{service}/{method}"),
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            server.address = %self.server.0,
            server.port = self.server.1,
            rpc.grpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let context = span.context();
        global::get_text_map_propagator(|p| p.inject_context(&context, &mut HeaderInjector(request.headers_mut())));
        let call = self.inner.call(request);
        Box::pin(
            async move {
                let result = call.await;
                let span = tracing::Span::current();
                match &result {
                    // A trailers-only answer (an error before any message)
                    // carries its status here; a streamed one, in trailers.
                    Ok(response) => {
                        let code = response
                            .headers()
                            .get("grpc-status")
                            .and_then(|v| v.to_str().ok()?.parse::<i64>().ok())
                            .unwrap_or(0);
                        span.record("rpc.grpc.status_code", code);
                        if code != 0 {
                            span.record("otel.status_code", "ERROR");
                        }
                    }
                    Err(_) => {
                        span.record("rpc.grpc.status_code", 14);
                        span.record("otel.status_code", "ERROR");
                    }
                }
                result
            }
            .instrument(span),
        )
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

#[cfg(feature = "amqp")]
struct AmqpInjector<'a>(&'a mut lapin::types::FieldTable);

#[cfg(feature = "amqp")]
impl Injector for AmqpInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0
            .insert(key.into(), lapin::types::AMQPValue::LongString(value.into()));
    }
}

#[cfg(feature = "amqp")]
struct AmqpExtractor<'a>(&'a lapin::types::FieldTable);

#[cfg(feature = "amqp")]
impl Extractor for AmqpExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.inner().get(key)? {
            lapin::types::AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(|k| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

    fn remote_context() -> Context {
        let span = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        Context::new().with_remote_span_context(span)
    }

    #[test]
    #[cfg(feature = "amqp")]
    fn trace_context_round_trips_through_amqp_headers() {
        let propagator = TraceContextPropagator::new();
        let mut headers = lapin::types::FieldTable::default();
        opentelemetry::propagation::TextMapPropagator::inject_context(
            &propagator,
            &remote_context(),
            &mut AmqpInjector(&mut headers),
        );
        let back = opentelemetry::propagation::TextMapPropagator::extract(&propagator, &AmqpExtractor(&headers));
        assert_eq!(
            back.span().span_context().trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
    }

    #[test]
    fn trace_context_round_trips_through_grpc_metadata() {
        let propagator = TraceContextPropagator::new();
        let mut metadata = tonic::metadata::MetadataMap::new();
        opentelemetry::propagation::TextMapPropagator::inject_context(
            &propagator,
            &remote_context(),
            &mut MetadataInjector(&mut metadata),
        );
        let headers = metadata.into_headers();
        assert!(headers.get("traceparent").is_some());
        let back = opentelemetry::propagation::TextMapPropagator::extract(&propagator, &HeaderExtractor(&headers));
        assert_eq!(
            back.span().span_context().span_id(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap()
        );
    }
}
