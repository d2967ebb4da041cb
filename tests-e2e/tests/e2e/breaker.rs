//! The circuit breaker at the edge: a backend that stops answering is
//! refused at once with 503 naming it, readiness says so, and once it is
//! back a probe closes the breaker, with no gateway restart.

use std::time::Duration;

use serde_json::Value;
use sextant_e2e::TestSystem;

use crate::jobs::Api;
use crate::system;

const BREAKER_STATE: &str = r#"sextant_gateway_backend_breaker_state{backend="jobs"}"#;
const REJECTED: &str = r#"sextant_gateway_backend_breaker_rejected_total{backend="jobs"}"#;

fn builder() -> sextant_e2e::TestSystemBuilder {
    TestSystem::builder()
        .gateway_env("SEXTANT_GATEWAY__BACKENDS__REQUEST_TIMEOUT", "500ms")
        .gateway_env("SEXTANT_GATEWAY__BACKENDS__CONNECT_TIMEOUT", "300ms")
        .gateway_env("SEXTANT_GATEWAY__BACKENDS__READINESS_TIMEOUT", "300ms")
        .gateway_env("SEXTANT_GATEWAY__BACKENDS__BREAKER_FAILURES", "3")
        .gateway_env("SEXTANT_GATEWAY__BACKENDS__BREAKER_OPEN_FOR", "1s")
}

/// A job list request: status, `Retry-After`, problem body.
async fn list(api: &Api<'_>) -> (u16, Option<String>, Value) {
    let response = api
        .system
        .http
        .get(api.system.url("/api/v1/jobs"))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry_after, response.json().await.unwrap_or(Value::Null))
}

/// Calls until the breaker refuses one; that refusal.
async fn until_refused(system: &TestSystem, api: &Api<'_>) -> (u16, Option<String>, Value) {
    for _ in 0..10 {
        let answer = list(api).await;
        assert!(matches!(answer.0, 503 | 504), "{answer:?}");
        if answer.2["backend"] == "jobs" {
            return answer;
        }
    }
    panic!("the breaker never opened\n{}", system.all_logs());
}

async fn assert_open(system: &TestSystem, api: &Api<'_>) {
    let (status, retry_after, problem) = until_refused(system, api).await;
    assert_eq!(status, 503, "{problem}");
    assert_eq!(problem["code"], "unavailable");
    assert!(
        problem["detail"].as_str().unwrap().contains("jobs service"),
        "{problem}"
    );
    let retry_after: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=1).contains(&retry_after), "{retry_after}");

    // Refused without calling the backend, and counted.
    let rejected = system.metric(&system.gateway, REJECTED).await;
    let (status, _, problem) = list(api).await;
    assert_eq!((status, &problem["backend"]), (503, &Value::from("jobs")));
    assert!(system.metric(&system.gateway, REJECTED).await > rejected);
    assert_eq!(system.metric(&system.gateway, BREAKER_STATE).await, 2.0);

    let (status, body) = system.readyz().await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["down"].as_array().unwrap().contains(&Value::from("jobs")),
        "{body}"
    );
    assert_eq!(body["backends"]["jobs"]["breaker"], "open", "{body}");
    assert_eq!(body["backends"]["analytics"]["breaker"], "closed", "{body}");
}

async fn assert_closes(system: &TestSystem, api: &Api<'_>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, body) = list(api).await;
        if status == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {status}: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(system.metric(&system.gateway, BREAKER_STATE).await, 0.0);
    let body = system
        .wait_until(Duration::from_secs(10), |status, _| status == 200)
        .await
        .unwrap_or_else(|body| panic!("not ready again: {body}"));
    assert_eq!(body["backends"]["jobs"]["breaker"], "closed", "{body}");
}

#[tokio::test]
async fn a_stopped_backend_opens_its_breaker_and_a_restart_closes_it() {
    let mut system = system!(builder());
    assert_eq!(list(&Api::new(&system, "acme")).await.0, 200);

    let port = system.jobs.addr.port().to_string();
    system.jobs.signal(libc::SIGKILL);
    system.jobs.wait_exit(Duration::from_secs(10));
    assert_open(&system, &Api::new(&system, "acme")).await;

    system.jobs = system.spawn_jobs("jobs-again", &[("SEXTANT_JOBS__GRPC__PORT", &port)]);
    let api = Api::new(&system, "acme");
    assert_closes(&system, &api).await;
}

#[tokio::test]
async fn a_hung_backend_opens_its_breaker_instead_of_every_call_waiting_for_its_deadline() {
    let system = system!(builder());
    let api = Api::new(&system, "acme");
    assert_eq!(list(&api).await.0, 200);

    // Stopped, not dead: connections stay open and calls wait for their deadline.
    system.jobs.signal(libc::SIGSTOP);
    assert_open(&system, &api).await;

    system.jobs.signal(libc::SIGCONT);
    assert_closes(&system, &api).await;
}
