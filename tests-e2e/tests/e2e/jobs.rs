//! `/api/v1/jobs` through the gateway, as a frontend uses it.

use std::time::Duration;

use serde_json::{Value, json};
use sextant_e2e::TestSystem;

use crate::system;

pub(crate) struct Api<'a> {
    pub system: &'a TestSystem,
    pub token: String,
}

impl<'a> Api<'a> {
    pub fn new(system: &'a TestSystem, tenant: &str) -> Self {
        Self {
            system,
            token: system.token(tenant, "alice"),
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .system
            .http
            .request(method, self.system.url(path))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn count(&self) -> usize {
        let (status, body) = self.get("/api/v1/jobs?page_size=500").await;
        assert_eq!(status, 200, "{body}");
        body["jobs"].as_array().unwrap().len()
    }

    pub async fn wait_for(&self, id: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (_, job) = self.get(&format!("/api/v1/jobs/{id}")).await;
            if done(&job) {
                return job;
            }
            assert!(tokio::time::Instant::now() < deadline, "never reached: {job}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn a_submitted_job_runs_and_reports_its_result() {
    let system = system!();
    let api = Api::new(&system, "acme");
    let (status, job) = api
        .post(
            "/api/v1/jobs",
            json!({"kind": "sleep", "payload": {"duration_ms": 300, "steps": 3}}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["status"], "queued");
    assert_eq!(job["version"], 1);
    let id = job["id"].as_str().unwrap().to_owned();

    let done = api
        .wait_for(&id, Duration::from_secs(15), |j| j["status"] == "succeeded")
        .await;
    assert_eq!(done["result"], json!({"slept_ms": 300, "steps": 3}));
    assert_eq!(done["progress"]["percent"], 100.0);
    assert_eq!(done["attempt"], 1);
    assert!(done["version"].as_u64().unwrap() > 3);

    let (status, stats) = api.get("/api/v1/jobs/stats").await;
    assert_eq!(status, 200);
    assert_eq!(
        stats["counts"],
        json!([{"kind": "sleep", "status": "succeeded", "count": 1}])
    );
}

#[tokio::test]
async fn every_bad_request_is_a_clear_problem_and_leaves_no_job() {
    let system = system!();
    let api = Api::new(&system, "acme");
    let cases = [
        (json!({"kind": "teleport"}), "invalid_argument", "unknown kind"),
        (
            json!({"kind": "sleep", "payload": {"duration_ms": "soon"}}),
            "invalid_argument",
            "invalid payload",
        ),
        (json!({"kind": "noop", "delay_ms": -5}), "invalid_argument", "delay_ms"),
        (
            json!({"kind": "noop", "priority": 10}),
            "invalid_argument",
            "priority must be between 0 and 9",
        ),
        (
            json!({"kind": "noop", "colour": "red"}),
            "invalid_argument",
            "unknown field",
        ),
        (
            json!({"kind": "noop", "delay_ms": 5, "run_at": "2030-01-01T00:00:00Z"}),
            "invalid_argument",
            "not both",
        ),
    ];
    for (body, code, detail) in cases {
        let (status, problem) = api.post("/api/v1/jobs", body.clone()).await;
        assert_eq!(status, 400, "{body}: {problem}");
        assert_eq!(problem["code"], code, "{body}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(detail),
            "{body}: {problem}"
        );
    }
    let malformed = system
        .http
        .post(system.url("/api/v1/jobs"))
        .bearer_auth(&api.token)
        .header("content-type", "application/json")
        .body("{\"kind\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    assert_eq!(malformed.json::<Value>().await.unwrap()["code"], "malformed_request");

    for query in ["page_size=501", "cursor=not-a-cursor", "status=sleepy"] {
        let (status, problem) = api.get(&format!("/api/v1/jobs?{query}")).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (400, Some("invalid_argument")),
            "{query}: {problem}"
        );
    }
    assert_eq!(api.count().await, 0);

    // The same idempotency key with another payload is a conflict, not a second job.
    let (status, first) = api
        .post("/api/v1/jobs", json!({"kind": "noop", "idempotency_key": "k-1"}))
        .await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = api
        .post("/api/v1/jobs", json!({"kind": "noop", "idempotency_key": "k-1"}))
        .await;
    assert_eq!((status, &again["id"]), (200, &first["id"]));
    let (status, problem) = api
        .post(
            "/api/v1/jobs",
            json!({"kind": "noop", "payload": {"x": 1}, "idempotency_key": "k-1"}),
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (409, Some("already_exists")),
        "{problem}"
    );
    assert_eq!(api.count().await, 1);
}

#[tokio::test]
async fn another_tenant_cannot_see_or_touch_a_job() {
    let system = system!();
    let acme = Api::new(&system, "acme");
    let globex = Api::new(&system, "globex");
    let (status, job) = acme
        .post(
            "/api/v1/jobs",
            json!({"kind": "sleep", "payload": {"duration_ms": 5000}}),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap();

    let (get, got) = globex.get(&format!("/api/v1/jobs/{id}")).await;
    let (cancel, cancelled) = globex.post(&format!("/api/v1/jobs/{id}/cancel"), json!({})).await;
    let (retry, problem) = globex.post(&format!("/api/v1/jobs/{id}/retry"), json!({})).await;
    assert_eq!((get, cancel, retry), (404, 404, 404), "{got}\n{cancelled}\n{problem}");
    assert_eq!(problem["code"], "not_found");
    assert_eq!(globex.count().await, 0);
    let (status, stats) = globex.get("/api/v1/jobs/stats").await;
    assert_eq!((status, &stats["counts"]), (200, &json!([])), "{stats}");

    let (status, mine) = acme.get(&format!("/api/v1/jobs/{id}")).await;
    assert_eq!((status, &mine["cancel_requested"]), (200, &json!(false)), "{mine}");
}

#[tokio::test]
async fn a_running_job_is_cancelled_within_a_second_and_can_be_retried() {
    let system = system!();
    let api = Api::new(&system, "acme");
    let (_, job) = api
        .post(
            "/api/v1/jobs",
            json!({"kind": "sleep", "payload": {"duration_ms": 20000, "steps": 20}}),
        )
        .await;
    let id = job["id"].as_str().unwrap().to_owned();
    api.wait_for(&id, Duration::from_secs(15), |j| j["status"] == "running")
        .await;

    let asked = tokio::time::Instant::now();
    let (status, _) = api.post(&format!("/api/v1/jobs/{id}/cancel"), json!({})).await;
    assert_eq!(status, 200);
    api.wait_for(&id, Duration::from_secs(5), |j| j["status"] == "cancelled")
        .await;
    assert!(asked.elapsed() < Duration::from_secs(1), "took {:?}", asked.elapsed());

    let (status, retried) = api.post(&format!("/api/v1/jobs/{id}/retry"), json!({})).await;
    assert_eq!((status, retried["status"].as_str()), (200, Some("queued")), "{retried}");
}
