//! Liveness, readiness, metrics and the OpenAPI document.

use crate::system;

#[tokio::test]
async fn readyz_lists_every_backend_as_serving() {
    let system = system!();
    let (status, body) = system.readyz().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    for backend in ["analytics", "jobs", "exports"] {
        assert_eq!(body["backends"][backend]["status"], "serving", "{body}");
    }
    assert_eq!(body["down"], serde_json::json!([]));
}

#[tokio::test]
async fn healthz_and_metrics_answer_without_a_token() {
    let system = system!();
    let health = system.http.get(system.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    let metrics = system.http.get(system.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(text.contains("sextant_gateway_http_requests_total"), "{text}");
    assert!(text.contains("sextant_gateway_ws_connections"), "{text}");
}

#[tokio::test]
async fn openapi_document_describes_the_routes() {
    let system = system!();
    let response = system
        .http
        .get(system.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let doc: serde_json::Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/me",
        "/api/v1/ws",
        "/api/v1/jobs",
        "/api/v1/jobs/batch",
        "/api/v1/jobs/stats",
        "/api/v1/jobs/{id}",
        "/api/v1/jobs/{id}/cancel",
        "/api/v1/jobs/{id}/retry",
        "/otlp/v1/metrics",
        "/prometheus/api/v1/write",
        "/prometheus/api/v1/query",
        "/prometheus/api/v1/query_range",
        "/prometheus/api/v1/labels",
        "/prometheus/api/v1/label/{name}/values",
        "/prometheus/api/v1/series",
        "/prometheus/api/v1/metadata",
        "/prometheus/api/v1/status/buildinfo",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
}

#[tokio::test]
async fn unknown_routes_are_problem_json_404s() {
    let system = system!();
    let response = system.http.get(system.url("/api/v1/nope")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "not_found");
}
