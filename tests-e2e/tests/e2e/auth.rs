//! Bearer auth at the edge: every bad token is a 401 problem+json, for HTTP
//! and for the WebSocket upgrade alike.

use serde_json::{Value, json};
use sextant_e2e::tokens::{self, claims, sign, unsigned};
use sextant_e2e::ws::{self, Auth};

use crate::system;

async fn expect_401(system: &sextant_e2e::TestSystem, token: Option<&str>, detail: &str) {
    let mut request = system.http.get(system.url("/api/v1/me"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "unauthenticated");
    assert_eq!(body["status"], 401);
    assert_eq!(body["detail"], detail, "{body}");

    // The WebSocket upgrade refuses the same token the same way.
    let auth = token.map_or(Auth::None, Auth::Header);
    assert_eq!(ws::connect(&system.ws_url("/api/v1/ws"), auth).await.err(), Some(401));
}

#[tokio::test]
async fn a_valid_token_identifies_tenant_and_user() {
    let system = system!();
    let response = system
        .http
        .get(system.url("/api/v1/me"))
        .bearer_auth(system.token("acme", "alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["tenant"], "acme");
    assert_eq!(body["user"], "alice");
}

#[tokio::test]
async fn bad_tokens_are_refused_with_problem_json() {
    let system = system!();
    let secret = system.jwt_secret.clone();

    expect_401(&system, None, "missing bearer token").await;

    let mut expired = claims("acme", "alice");
    expired["exp"] = json!(tokens::now() - 600);
    expired["nbf"] = json!(tokens::now() - 1200);
    expect_401(&system, Some(&sign(&secret, &expired)), "token expired").await;

    let foreign = sign("someone-elses-secret-of-sufficient-length", &claims("acme", "alice"));
    expect_401(&system, Some(&foreign), "token signature is invalid").await;

    expect_401(
        &system,
        Some(&unsigned(&claims("acme", "alice"))),
        "token algorithm not allowed",
    )
    .await;

    let mut other_audience = claims("acme", "alice");
    other_audience["aud"] = json!("another-api");
    expect_401(
        &system,
        Some(&sign(&secret, &other_audience)),
        "token audience not accepted",
    )
    .await;

    let mut future = claims("acme", "alice");
    future["nbf"] = json!(tokens::now() + 3600);
    expect_401(&system, Some(&sign(&secret, &future)), "token not yet valid").await;

    expect_401(&system, Some("not.a.jwt"), "token is malformed").await;
}
