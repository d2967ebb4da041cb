//! Logs and traces. Logs are JSON lines on stdout (one event per line, ready for
//! any collector). Traces go to an OTLP/gRPC endpoint only when one is
//! configured. W3C trace context crosses every hop: gRPC metadata (see
//! [`inject_metadata`], [`extract_headers`]) and AMQP message headers (see
//! [`inject_amqp`], [`extract_amqp`]).

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
