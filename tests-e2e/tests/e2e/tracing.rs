//! One trace follows a request from the gateway into the backends: the
//! caller's `traceparent` becomes the parent of the gateway's span, and the
//! gateway's gRPC calls carry it on, so every service exports spans of the
//! same trace to the configured OTLP endpoint.

use std::collections::BTreeSet;
use std::time::Duration;

use sextant_e2e::TestSystem;
use sextant_e2e::collector::Collector;

use crate::system;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[tokio::test]
async fn a_request_trace_spans_the_gateway_and_every_backend() {
    let collector = Collector::start();
    let mut system = system!(TestSystem::builder().env("SEXTANT_TELEMETRY__OTLP_ENDPOINT", &collector.endpoint()));

    let response = system
        .http
        .get(system.url("/readyz"))
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Stopping flushes each exporter.
    for process in [
        &mut system.gateway,
        &mut system.analytics,
        &mut system.jobs,
        &mut system.exports,
    ] {
        process.terminate();
        assert!(process.wait_exit(Duration::from_secs(10)).is_some_and(|s| s.success()));
    }

    let spans: Vec<_> = collector
        .spans()
        .into_iter()
        .filter(|s| s.trace_id == TRACE_ID)
        .collect();
    let services: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(
        services,
        BTreeSet::from([
            "sextant-analytics",
            "sextant-exports",
            "sextant-gateway",
            "sextant-jobs"
        ]),
        "{spans:#?}"
    );
    let gateway = spans
        .iter()
        .find(|s| s.service == "sextant-gateway" && s.name == "http")
        .unwrap();
    assert_eq!(
        gateway.parent_span_id, "00f067aa0ba902b7",
        "the caller's span is the parent"
    );
}
