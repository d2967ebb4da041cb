//! The server against its documents: what a client written only from
//! `openapi.json` and `docs/websocket.md` found the server doing otherwise.
//! Each test names the rule, and checks that a refused request changed
//! nothing.

use std::time::Duration;

use serde_json::{Value, json};
use sextant_e2e::TestSystem;

use crate::jobs::Api;
use crate::jobs_live::{events_until_final, following_jobs, frame, socket, submit, subscribe};
use crate::system;

/// A raw request with the caller's token; the status and the JSON body.
async fn raw(api: &Api<'_>, method: reqwest::Method, path: &str, body: &'static str) -> (u16, Value) {
    let response = api
        .system
        .http
        .request(method, api.system.url(path))
        .bearer_auth(&api.token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_idempotency_key_reused_with_any_other_request_is_a_conflict() {
    let system = system!();
    let api = Api::new(&system, "acme");
    let first = json!({"kind": "noop", "delay_ms": 60000, "idempotency_key": "k1"});
    let (status, job) = api.post("/api/v1/jobs", first.clone()).await;
    assert_eq!(status, 201, "{job}");
    // The same request later (its delay now ends later): the same job.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, again) = api.post("/api/v1/jobs", first).await;
    assert_eq!((status, &again["id"]), (200, &job["id"]), "{again}");

    let in_ten_minutes = (time::OffsetDateTime::now_utc() + time::Duration::minutes(10))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    for other in [
        json!({"kind": "noop", "delay_ms": 120000, "idempotency_key": "k1"}),
        json!({"kind": "noop", "run_at": in_ten_minutes, "idempotency_key": "k1"}),
        json!({"kind": "noop", "delay_ms": 60000, "failure_policy": "continue", "idempotency_key": "k1"}),
    ] {
        let (status, problem) = api.post("/api/v1/jobs", other.clone()).await;
        assert_eq!(status, 409, "{other}: {problem}");
        assert_eq!(problem["code"], "already_exists", "{other}: {problem}");
    }
    assert_eq!(api.count().await, 1, "no other job was created");
    let (_, unchanged) = api.get(&format!("/api/v1/jobs/{}", job["id"].as_str().unwrap())).await;
    assert_eq!(unchanged["run_at"], job["run_at"]);
}

#[tokio::test]
async fn a_body_that_is_not_exactly_one_json_document_is_malformed_and_creates_nothing() {
    let system = system!();
    let api = Api::new(&system, "acme");
    for body in [
        r#"{"kind":"noop"} x"#,
        r#"{"kind":"noop"}{"kind":"noop"}"#,
        r#"{"kind":"noop"},"#,
    ] {
        let (status, problem) = raw(&api, reqwest::Method::POST, "/api/v1/jobs", body).await;
        assert_eq!(status, 400, "{body}: {problem}");
        assert_eq!(problem["code"], "malformed_request", "{body}: {problem}");
    }
    let (status, problem) = raw(&api, reqwest::Method::POST, "/api/v1/jobs/batch", r#"{"jobs":[]} []"#).await;
    assert_eq!(
        (status, &problem["code"]),
        (400, &json!("malformed_request")),
        "{problem}"
    );
    assert_eq!(api.count().await, 0);
}

#[tokio::test]
async fn a_page_size_outside_1_to_500_is_refused() {
    let system = system!();
    let api = Api::new(&system, "acme");
    submit(&api, json!({"kind": "noop"})).await;
    for size in [0, 501] {
        let (status, problem) = api.get(&format!("/api/v1/jobs?page_size={size}")).await;
        assert_eq!(status, 400, "page_size={size}: {problem}");
        assert_eq!(problem["code"], "invalid_argument");
        assert!(problem["detail"].as_str().unwrap().contains("page_size"), "{problem}");
    }
    let (status, page) = api.get("/api/v1/jobs?page_size=1").await;
    assert_eq!((status, page["jobs"].as_array().map(Vec::len)), (200, Some(1)));
}

#[tokio::test]
async fn a_batch_item_with_both_delay_and_run_at_fails_alone_with_its_index() {
    let system = system!();
    let api = Api::new(&system, "acme");
    let both = json!({"kind": "noop", "delay_ms": 5, "run_at": "2030-01-01T00:00:00Z"});
    let (status, body) = api
        .post(
            "/api/v1/jobs/batch",
            json!({"jobs": [{"kind": "noop"}, both, {"kind": "teleport"}, {"kind": "noop"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!(items[0]["created"], true, "{body}");
    assert_eq!(items[3]["created"], true, "{body}");
    let error = &items[1]["error"];
    assert_eq!(
        (&error["index"], &error["code"]),
        (&json!(1), &json!("invalid_argument")),
        "{body}"
    );
    assert_eq!(error["field"], "run_at", "{body}");
    // The service's own item errors keep the client's index too.
    assert_eq!(items[2]["error"]["index"], 2, "{body}");
    assert_eq!(api.count().await, 2);
}

#[tokio::test]
async fn a_subscription_to_an_unknown_topic_is_refused_naming_the_topic() {
    let system = system!();
    let mut socket = socket(&system, "acme").await;
    let refused = subscribe(&mut socket, "bogus", None).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "not_found");
    assert_eq!(refused["topic"], "bogus", "{refused}");
    assert_eq!(refused["id"], "bogus");
    // Not subscribed, still connected.
    let unsubscribe = json!({"op": "unsubscribe", "id": 2, "topic": "bogus"});
    sextant_e2e::ws::send_json(&mut socket, &unsubscribe).await;
    assert_eq!(frame(&mut socket).await["code"], "not_found");
}

#[tokio::test]
async fn every_event_after_a_retry_lists_every_failed_attempt() {
    let system = system!(TestSystem::builder().jobs_env("SEXTANT_JOBS__WORKER__RETRY_BASE", "100ms"));
    let api = Api::new(&system, "acme");
    let mut socket = following_jobs(&system, "acme").await;
    let id = submit(
        &api,
        json!({"kind": "fail", "payload": {"times": 1, "message": "flaky disk"}, "max_attempts": 3}),
    )
    .await;
    let events = events_until_final(&mut socket, &id).await;
    let names: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["queued", "started", "retry_scheduled", "queued", "started", "succeeded"]
    );
    let (_, job) = api.get(&format!("/api/v1/jobs/{id}")).await;
    let errors = &job["errors"];
    assert_eq!(errors.as_array().map(Vec::len), Some(1), "{job}");
    for event in &events[2..] {
        assert_eq!(&event["job"]["errors"], errors, "{}: {event}", event["event"]);
    }
    for event in &events[..2] {
        assert_eq!(event["job"]["errors"], json!([]), "{event}");
    }
}

#[tokio::test]
async fn an_unsupported_method_is_405_with_allow_and_documented_statuses_are_answered() {
    let system = system!();
    let api = Api::new(&system, "acme");
    for (method, path, allow) in [
        (reqwest::Method::DELETE, "/api/v1/jobs", "GET, POST, HEAD"),
        (reqwest::Method::PUT, "/api/v1/jobs/0193", "GET, HEAD"),
        (reqwest::Method::GET, "/api/v1/jobs/batch", "POST"),
        (reqwest::Method::POST, "/api/v1/me", "GET, HEAD"),
    ] {
        let response = system
            .http
            .request(method.clone(), system.url(path))
            .bearer_auth(&api.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_eq!(response.headers()["allow"], allow, "{method} {path}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
    }

    // What the server answers, the document lists.
    let (_, document) = api.get("/api/v1/openapi.json").await;
    let documented = |path: &str, method: &str, status: u16| {
        document["paths"][path][method]["responses"]
            .get(status.to_string())
            .is_some()
    };
    let cases = [
        (
            "post",
            "/api/v1/jobs/{id}/cancel",
            "/api/v1/jobs/not-a-uuid/cancel",
            400,
        ),
        ("post", "/api/v1/jobs/{id}/retry", "/api/v1/jobs/not-a-uuid/retry", 400),
        ("get", "/api/v1/jobs", "/api/v1/jobs?status=bogus", 400),
        ("get", "/api/v1/ws", "/api/v1/ws", 400),
    ];
    for (method, template, path, status) in cases {
        let response = system
            .http
            .request(method.to_uppercase().parse().unwrap(), system.url(path))
            .bearer_auth(&api.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
        assert!(
            documented(template, method, status),
            "{method} {template} {status} is not documented"
        );
    }
    let response = system
        .http
        .post(system.url("/api/v1/jobs/batch"))
        .bearer_auth(&api.token)
        .header("content-type", "text/plain")
        .body("jobs")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    assert!(documented("/api/v1/jobs/batch", "post", 415));
    // `status` takes only the listed values, and says so.
    let status = document["paths"]["/api/v1/jobs"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "status")
        .unwrap();
    assert_eq!(
        status["schema"]["items"]["enum"],
        json!(["scheduled", "queued", "running", "succeeded", "failed", "cancelled"]),
        "{status}"
    );
}

#[tokio::test]
async fn a_browser_on_another_origin_can_read_location_retry_after_and_rate_limit_headers() {
    let system = system!(TestSystem::builder().gateway_env(
        "SEXTANT_GATEWAY__CORS__ALLOWED_ORIGINS",
        "[\"https://app.example.com\"]"
    ));
    let response = system
        .http
        .post(system.url("/api/v1/jobs"))
        .header("origin", "https://app.example.com")
        .bearer_auth(system.token("acme", "alice"))
        .json(&json!({"kind": "noop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let exposed = response.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    for header in [
        "location",
        "retry-after",
        "ratelimit",
        "ratelimit-policy",
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
    ] {
        assert!(
            exposed.split(',').any(|h| h.trim() == header),
            "{header} not in {exposed}"
        );
    }
}

#[tokio::test]
async fn a_string_with_nul_is_bad_input_not_an_outage() {
    let system = system!();
    let api = Api::new(&system, "acme");
    for body in [
        json!({"kind": "noop", "payload": {"note": "a\u{0}b"}}),
        json!({"kind": "noop", "payload": {"a\u{0}": 1}}),
        json!({"kind": "noop", "idempotency_key": "k\u{0}"}),
    ] {
        let (status, problem) = api.post("/api/v1/jobs", body.clone()).await;
        assert_eq!(status, 400, "{body}: {problem}");
        assert_eq!(problem["code"], "invalid_argument", "{problem}");
        assert!(problem["detail"].as_str().unwrap().contains("U+0000"), "{problem}");
    }
    for path in ["/api/v1/jobs?kind=a%00b", "/api/v1/jobs?kind=x,%00"] {
        let (status, problem) = api.get(path).await;
        assert_eq!(
            (status, &problem["code"]),
            (400, &json!("invalid_argument")),
            "{path}: {problem}"
        );
    }
    // Nothing stored, and the jobs service is not taken for down.
    assert_eq!(api.count().await, 0);
    let breaker = r#"sextant_gateway_backend_breaker_state{backend="jobs"}"#;
    assert_eq!(system.metric(&system.gateway, breaker).await, 0.0);
    assert_eq!(system.readyz().await.0, 200);
}

#[tokio::test]
async fn an_idempotency_key_with_a_space_or_a_tab_is_refused_wherever_it_comes_and_stores_nothing() {
    let system = system!();
    let api = Api::new(&system, "acme");
    let post = |path: &'static str, key: &'static str, body: Value| {
        let request = api
            .system
            .http
            .post(api.system.url(path))
            .bearer_auth(&api.token)
            .header("idempotency-key", key)
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let event = json!({"events": [{"name": "keyed", "ts": time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339).unwrap(), "value": 1}]});
    let analysis = json!({"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T01:00:00Z", "bucket_seconds": 60});
    // (HTTP drops the white space around a header's value, not inside it.)
    for key in ["a b", "a\tb"] {
        for (path, body) in [
            ("/api/v1/jobs", json!({"kind": "noop"})),
            ("/api/v1/events", event.clone()),
            ("/api/v1/analyses", analysis.clone()),
            (
                "/api/v1/analyses/0193a000-0000-7000-8000-000000000000/exports",
                json!({"format": "csv"}),
            ),
        ] {
            let (status, problem) = post(path, key, body).await;
            assert_eq!(
                (status, problem["code"].as_str()),
                (400, Some("invalid_argument")),
                "{path} {key:?}: {problem}"
            );
            assert!(
                problem["detail"].as_str().unwrap().contains("visible ASCII"),
                "{problem}"
            );
        }
    }
    // In a job's body too; in a batch, that item fails alone.
    for key in ["a b", "a\tb", " lead", "trail ", "é"] {
        let (status, problem) = api
            .post("/api/v1/jobs", json!({"kind": "noop", "idempotency_key": key}))
            .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (400, Some("invalid_argument")),
            "{key:?}: {problem}"
        );
    }
    let (status, batch) = api
        .post(
            "/api/v1/jobs/batch",
            json!({"jobs": [{"kind": "noop", "idempotency_key": "a b"}, {"kind": "noop", "idempotency_key": "ok-1"}]}),
        )
        .await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["items"][0]["error"]["field"], "idempotency_key", "{batch}");
    assert_eq!(batch["items"][1]["job"]["idempotency_key"], "ok-1", "{batch}");
    // Only the batch's good item was stored: no job, event or analysis else.
    assert_eq!(api.count().await, 1);
    let (_, metrics) = api.get("/api/v1/metrics").await;
    assert_eq!(metrics["metrics"], json!([]), "{metrics}");
    let (_, analyses) = api.get("/api/v1/analyses").await;
    assert_eq!(analyses["analyses"], json!([]), "{analyses}");
}

#[tokio::test]
async fn a_metric_query_with_an_empty_group_by_is_refused_and_an_empty_range_has_no_series() {
    let system = system!();
    let api = Api::new(&system, "acme");
    let query = |group_by: Value, start: &str| {
        json!({"metric": "m", "aggregations": ["avg"], "bucket_seconds": 60,
               "start": start, "end": "2000-01-01T00:00:00Z", "group_by": group_by})
    };
    // `group_by` names a label or is null: "" fails its pattern.
    let (status, problem) = api
        .post("/api/v1/metrics/query", query(json!(""), "2000-01-01T00:00:00Z"))
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (400, Some("invalid_argument")),
        "{problem}"
    );
    // start = end is an empty half-open range: no buckets, not an error.
    let (status, answer) = api
        .post("/api/v1/metrics/query", query(Value::Null, "2000-01-01T00:00:00Z"))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["series"], json!([]));
    // start after end is a mistake.
    let (status, problem) = api
        .post("/api/v1/metrics/query", query(Value::Null, "2000-01-01T00:00:01Z"))
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (400, Some("invalid_argument")),
        "{problem}"
    );
}
