//! The edge: body size limit and CORS, both answered as problem+json.

use serde_json::Value;
use sextant_e2e::TestSystem;

use crate::system;

/// A 64 KiB body posted to `path` from `origin` (none: no Origin header).
async fn oversized(system: &TestSystem, path: &str, origin: Option<&str>) -> reqwest::Response {
    let mut request = system
        .http
        .post(system.url(path))
        .bearer_auth(system.token("acme", "alice"))
        .header("content-type", "application/json")
        .body(vec![b' '; 64 * 1024]);
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413_before_anything_reads_it() {
    let system = system!(TestSystem::builder().gateway_env("SEXTANT_GATEWAY__HTTP__BODY_LIMIT", "4096"));
    let response = oversized(&system, "/api/v1/me", None).await;
    assert_eq!(response.status(), 413);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "payload_too_large");
    assert_eq!(body["detail"], "request body exceeds 4096 bytes");

    // The gateway is unharmed: the next request is served.
    let (status, _) = system.readyz().await;
    assert_eq!(status, 200);
}

async fn preflight(system: &TestSystem, origin: &str) -> reqwest::Response {
    system
        .http
        .request(reqwest::Method::OPTIONS, system.url("/api/v1/me"))
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn cors_allows_exactly_the_configured_origins() {
    let system = system!(TestSystem::builder().gateway_env(
        "SEXTANT_GATEWAY__CORS__ALLOWED_ORIGINS",
        "[\"https://app.example.com\"]"
    ));

    let allowed = preflight(&system, "https://app.example.com").await;
    assert_eq!(allowed.status(), 200);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let methods = allowed.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(methods.contains("GET"), "{methods}");

    // The default development origin is no longer allowed once configured
    // away: no CORS headers, so a browser refuses to use the response.
    let refused = preflight(&system, "http://localhost:3000").await;
    assert!(refused.headers().get("access-control-allow-origin").is_none());
    assert!(refused.headers().get("access-control-allow-methods").is_none());
    let response = system
        .http
        .get(system.url("/api/v1/me"))
        .header("origin", "http://localhost:3000")
        .bearer_auth(system.token("acme", "alice"))
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("access-control-allow-origin").is_none());

    // A real request from the allowed origin carries the CORS headers too.
    let response = system
        .http
        .get(system.url("/api/v1/me"))
        .header("origin", "https://app.example.com")
        .bearer_auth(system.token("acme", "alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let exposed = response.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    for header in [
        "etag",
        "content-range",
        "content-disposition",
        "retry-after",
        "ratelimit-remaining",
    ] {
        assert!(exposed.contains(header), "{header} is readable by the page: {exposed}");
    }

    // A browser resuming a download, or updating a rule conditionally, may send these.
    let resumed = system
        .http
        .request(reqwest::Method::OPTIONS, system.url("/api/v1/exports/x/download"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "GET")
        .header(
            "access-control-request-headers",
            "authorization,range,if-range,if-none-match,if-match",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    let allowed = resumed.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for header in ["range", "if-range", "if-none-match", "if-match"] {
        assert!(allowed.contains(header), "{header}: {allowed}");
    }
}

#[tokio::test]
async fn the_edges_own_refusal_is_readable_by_a_page_on_an_allowed_origin() {
    let system = system!(TestSystem::builder().gateway_env("SEXTANT_GATEWAY__HTTP__BODY_LIMIT", "4096"));
    let response = oversized(&system, "/api/v1/jobs", Some("http://localhost:3000")).await;
    assert_eq!(response.status(), 413);
    assert_eq!(
        response
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap()),
        Some("http://localhost:3000")
    );
    assert_eq!(response.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn head_answers_wherever_get_does_with_the_same_headers_and_no_body() {
    let system = system!();
    let token = system.token("acme", "alice");
    for path in [
        "/healthz",
        "/api/v1/me",
        "/api/v1/jobs",
        "/api/v1/openapi.json",
        "/api/v1/jobs/not-a-job",
    ] {
        let get = system
            .http
            .get(system.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let head = system
            .http
            .head(system.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), get.status(), "{path}");
        for header in ["content-type", "content-length"] {
            assert_eq!(
                head.headers().get(header),
                get.headers().get(header),
                "{path}: {header}"
            );
        }
        assert!(head.bytes().await.unwrap().is_empty(), "{path}");
    }
    // A method a path does not take: 405, and Allow names HEAD beside GET.
    let answer = system
        .http
        .delete(system.url("/api/v1/jobs"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 405);
    assert_eq!(answer.headers()["allow"], "GET, POST, HEAD");
}
