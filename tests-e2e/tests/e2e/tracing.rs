//! One trace follows a request from the gateway into the backends: the
//! caller's `traceparent` becomes the parent of the gateway's span, and the
//! gateway's gRPC calls carry it on, so every service exports spans of the
//! same trace to the configured OTLP endpoint. Work that waits in a queue
//! (a job, an export rendered as a job, an alert's webhook notification)
//! continues the trace of the request (or evaluation) that made it, each
//! hop in a span named as OpenTelemetry's semantic conventions say.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use sextant_e2e::TestSystem;
use sextant_e2e::collector::{CollectedSpan, Collector};

use crate::alerts::{alerting, next_half_second, rule};
use crate::exports::plain_analysis;
use crate::metrics::Client;
use crate::system;

/// Stops every service with SIGTERM, which flushes its trace exporter.
fn stop_to_flush(system: &mut TestSystem) {
    for process in [
        &mut system.gateway,
        &mut system.analytics,
        &mut system.jobs,
        &mut system.exports,
    ] {
        process.terminate();
        assert!(process.wait_exit(Duration::from_secs(10)).is_some_and(|s| s.success()));
    }
}

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

    stop_to_flush(&mut system);

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
        .find(|s| s.service == "sextant-gateway" && s.name == "GET /readyz")
        .unwrap();
    assert_eq!(
        gateway.parent_span_id, "00f067aa0ba902b7",
        "the caller's span is the parent"
    );
}

/// The one span of `trace` that `service` named `name`.
fn span<'a>(spans: &'a [CollectedSpan], trace: &str, service: &str, name: &str) -> &'a CollectedSpan {
    let found: Vec<&CollectedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == trace && s.service == service && s.name == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{service} {name:?} in trace {trace}: {:#?}",
        spans
            .iter()
            .filter(|s| s.trace_id == trace)
            .map(|s| (&s.service, &s.name, s.kind, &s.span_id, &s.parent_span_id))
            .collect::<Vec<_>>()
    );
    found[0]
}

fn child_of<'a>(child: &'a CollectedSpan, parent: &CollectedSpan) -> &'a CollectedSpan {
    assert_eq!(
        child.parent_span_id, parent.span_id,
        "{} {:?} is not a child of {} {:?}",
        child.service, child.name, parent.service, parent.name
    );
    child
}

/// `from`'s client span of the gRPC call `rpc`, a child of `parent`, and
/// `to`'s server span of it under that; returns the server span.
fn call<'a>(spans: &'a [CollectedSpan], parent: &CollectedSpan, from: &str, rpc: &str, to: &str) -> &'a CollectedSpan {
    let trace = parent.trace_id.as_str();
    let client = child_of(span(spans, trace, from, rpc), parent);
    assert_eq!(client.kind, "client");
    assert_eq!(client.attribute("rpc.system"), Some("grpc"));
    let server = child_of(span(spans, trace, to, rpc), client);
    assert_eq!(server.kind, "server");
    assert_eq!(server.attribute("rpc.method"), rpc.rsplit('/').next());
    server
}

/// gateway HTTP server → gateway gRPC client → `service`'s gRPC server.
fn request_hops<'a>(
    spans: &'a [CollectedSpan],
    trace: &str,
    route: &str,
    rpc: &str,
    service: &str,
) -> &'a CollectedSpan {
    let http = span(spans, trace, "sextant-gateway", route);
    assert_eq!(http.kind, "server");
    assert_eq!(http.parent_span_id, CALLER_SPAN, "the caller's span is the parent");
    assert_eq!(http.attribute("http.route"), route.split_once(' ').map(|(_, r)| r));
    assert_eq!(
        http.attribute("http.request.method"),
        route.split_once(' ').map(|(m, _)| m)
    );
    assert!(http.attribute("http.response.status_code").is_some(), "{http:#?}");
    call(spans, http, "sextant-gateway", rpc, service)
}

/// The queue's hops after `submit` (the jobs service's SubmitJob server
/// span): `process <queue>`, linked to the `publish` of its message, and
/// `job <kind>` in it.
fn queue_hops<'a>(spans: &'a [CollectedSpan], submit: &CollectedSpan, prefix: &str, kind: &str) -> &'a CollectedSpan {
    let trace = submit.trace_id.as_str();
    let process = child_of(
        span(
            spans,
            trace,
            "sextant-jobs",
            &format!("process {prefix}.jobs.queue.normal"),
        ),
        submit,
    );
    assert_eq!(process.kind, "consumer");
    assert_eq!(process.attribute("messaging.system"), Some("rabbitmq"));
    assert_eq!(process.attribute("messaging.operation.type"), Some("process"));
    let (link_trace, link_span) = process.links.first().expect("a link to the publish span");
    let publish = spans
        .iter()
        .find(|s| &s.trace_id == link_trace && &s.span_id == link_span)
        .expect("the linked publish span was exported");
    assert_eq!(publish.name, format!("publish {prefix}.jobs.work"));
    assert_eq!(publish.kind, "producer");
    assert_eq!(
        publish.attribute("messaging.destination.name"),
        Some(&*format!("{prefix}.jobs.work"))
    );
    let job = child_of(span(spans, trace, "sextant-jobs", &format!("job {kind}")), process);
    assert_eq!(job.attribute("job.kind"), Some(kind));
    assert_eq!(job.attribute("job.attempt"), Some("1"));
    job
}

const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn traceparent(trace: &str) -> String {
    format!("00-{trace}-{CALLER_SPAN}-01")
}

/// A webhook receiver that keeps each request's `traceparent`.
async fn receiver() -> (Arc<Mutex<Vec<String>>>, SocketAddr) {
    use axum::http::{HeaderMap, StatusCode};
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap| {
            let keep = keep.clone();
            async move {
                let traceparent = headers
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                keep.lock().unwrap().push(traceparent.to_owned());
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (got, addr)
}

async fn wait_for(client: &Client<'_>, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..300 {
        let (status, body) = client.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        if done(&body) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} never got there");
}

#[tokio::test]
async fn a_job_an_export_and_an_alert_notification_each_trace_from_the_request_through_the_queue() {
    const JOB: &str = "0af7651916cd43dd8448eb211c80319c";
    const EXPORT: &str = "5b8efff798038103d269b633813fc60c";
    let collector = Collector::start();
    let (hooked, hook) = receiver().await;
    let mut system = system!(
        alerting()
            .env("SEXTANT_TELEMETRY__OTLP_ENDPOINT", &collector.endpoint())
            // Every export renders as an export job.
            .exports_env("SEXTANT_EXPORTS__JOB_THRESHOLD_ROWS", "1")
    );
    let client = Client::new(&system, "acme");
    let post = |path: &'static str, body: Value, trace: &'static str| {
        let request = system
            .http
            .post(system.url(path))
            .bearer_auth(&client.token)
            .header("traceparent", traceparent(trace))
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        }
    };

    // A job.
    let (status, job) = post("/api/v1/jobs", json!({"kind": "noop", "payload": {}}), JOB).await;
    assert_eq!(status, 201, "{job}");
    let path = format!("/api/v1/jobs/{}", job["id"].as_str().unwrap());
    wait_for(&client, &path, |j| j["status"] == "succeeded").await;

    // An export of an analysis, rendered by an export job.
    let analysis = plain_analysis(&system, "acme").await;
    let request = system
        .http
        .post(system.url(&format!("/api/v1/analyses/{analysis}/exports")))
        .bearer_auth(&client.token)
        .header("traceparent", traceparent(EXPORT))
        .json(&json!({"format": "csv", "csv_section": "series"}));
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 202);
    let export: Value = response.json().await.unwrap();
    let path = format!("/api/v1/exports/{}", export["id"].as_str().unwrap());
    wait_for(&client, &path, |e| e["status"] == "ready").await;

    // An alert rule fires and its webhook is notified.
    client
        .create_rule(&rule(
            "trace.heat",
            json!({"webhook": {"url": format!("http://{hook}/hook"), "secret": "a-secret-of-24-characters"}}),
        ))
        .await;
    for _ in 0..4 {
        let ts = next_half_second().await;
        client.send("trace.heat", ts, 95.0, "a").await;
    }
    let mut delivered = String::new();
    for _ in 0..100 {
        if let Some(first) = hooked.lock().unwrap().first() {
            delivered = first.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let parts: Vec<&str> = delivered.split('-').collect();
    assert_eq!(parts.len(), 4, "the webhook came with a traceparent: {delivered:?}");
    let (alert, webhook_span) = (parts[1].to_owned(), parts[2].to_owned());

    stop_to_flush(&mut system);
    let spans = collector.spans();
    let prefix = format!("e2e-{}", system.id);

    // The job: request, queue, execution.
    let submit = request_hops(
        &spans,
        JOB,
        "POST /api/v1/jobs",
        "sextant.jobs.v1.JobService/SubmitJob",
        "sextant-jobs",
    );
    queue_hops(&spans, submit, &prefix, "noop");

    // The export: request, its job, the render it asks of the exports service.
    let create = request_hops(
        &spans,
        EXPORT,
        "POST /api/v1/analyses/{id}/exports",
        "sextant.exports.v1.ExportService/CreateExport",
        "sextant-exports",
    );
    const SUBMIT: &str = "sextant.jobs.v1.JobService/SubmitJob";
    let submit = call(&spans, create, "sextant-exports", SUBMIT, "sextant-jobs");
    let job = queue_hops(&spans, submit, &prefix, "export");
    let render_server = call(
        &spans,
        job,
        "sextant-jobs",
        "sextant.exports.v1.ExportService/RenderExport",
        "sextant-exports",
    );
    let render = child_of(
        span(&spans, EXPORT, "sextant-exports", "render csv:series"),
        render_server,
    );
    assert!(
        render.attribute("export.bytes").is_some_and(|b| b != "0"),
        "{render:#?}"
    );

    // The alert: evaluation, the notification's submit, its job, the webhook.
    let evaluation = span(&spans, &alert, "sextant-analytics", "evaluate alert rule");
    let notification = child_of(
        span(&spans, &alert, "sextant-analytics", "submit alert notification"),
        evaluation,
    );
    let submit = call(&spans, notification, "sextant-analytics", SUBMIT, "sextant-jobs");
    let job = queue_hops(&spans, submit, &prefix, "notify");
    let post = child_of(span(&spans, &alert, "sextant-jobs", "POST"), job);
    assert_eq!(post.kind, "client");
    assert_eq!(
        post.span_id, webhook_span,
        "the receiver's traceparent names the POST span"
    );
    assert_eq!(post.attribute("http.response.status_code"), Some("204"));
    assert_eq!(post.attribute("http.request.method"), Some("POST"));
}
