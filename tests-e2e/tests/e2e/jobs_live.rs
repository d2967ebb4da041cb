//! Jobs followed live over the WebSocket, as a frontend does: submit over
//! HTTP, watch `jobs` or `job:<id>`, see every change in order; resume after a
//! disconnect from the last version; tenants see only their own jobs.

use std::time::Duration;

use serde_json::{Value, json};
use sextant_e2e::TestSystem;
use sextant_e2e::ws::{self, Auth, Socket};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::jobs::Api;
use crate::system;

pub(crate) async fn socket(system: &TestSystem, tenant: &str) -> Socket {
    let token = system.token(tenant, "alice");
    let mut socket = ws::connect(&system.ws_url("/api/v1/ws"), Auth::Header(&token))
        .await
        .expect("upgrade accepted");
    assert_eq!(ws::next_json(&mut socket).await["type"], "hello");
    socket
}

/// A socket of `tenant` following its `jobs` topic, past the snapshot.
pub(crate) async fn following_jobs(system: &TestSystem, tenant: &str) -> Socket {
    let mut socket = socket(system, tenant).await;
    assert_eq!(subscribe(&mut socket, "jobs", None).await["type"], "subscribed");
    assert_eq!(frame(&mut socket).await["type"], "snapshot");
    socket
}

/// Subscribes and returns the `subscribed` frame (or the refusal).
pub(crate) async fn subscribe(socket: &mut Socket, topic: &str, after_version: Option<u64>) -> Value {
    let mut op = json!({"op": "subscribe", "id": topic, "topic": topic});
    if let Some(after) = after_version {
        op["after_version"] = json!(after);
    }
    ws::send_json(socket, &op).await;
    ws::next_json(socket).await
}

pub(crate) async fn frame(socket: &mut Socket) -> Value {
    match ws::next(socket, Duration::from_secs(15)).await {
        ws::Frame::Json(value) => value,
        ws::Frame::Close(close) => panic!("closed: {close:?}"),
        ws::Frame::Broken(error) => panic!("broken: {error}"),
    }
}

pub(crate) fn is_final(event: &Value) -> bool {
    matches!(event["event"].as_str(), Some("succeeded" | "failed" | "cancelled"))
}

/// Event frames about `job_id` until its final one.
pub(crate) async fn events_until_final(socket: &mut Socket, job_id: &str) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let frame = frame(socket).await;
        assert_eq!(frame["type"], "event", "{frame}");
        if frame["job_id"] != job_id {
            continue;
        }
        let done = is_final(&frame);
        events.push(frame);
        if done {
            return events;
        }
    }
}

fn names(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["event"].as_str().unwrap()).collect()
}

fn time(value: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(value.as_str().expect("a timestamp"), &Rfc3339).unwrap()
}

pub(crate) async fn submit(api: &Api<'_>, body: Value) -> String {
    let (status, job) = api.post("/api/v1/jobs", body).await;
    assert_eq!(status, 201, "{job}");
    job["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_sleep_job_is_seen_live_from_queued_through_progress_to_succeeded() {
    let system = system!();
    let api = Api::new(&system, "acme");
    let mut socket = socket(&system, "acme").await;
    let subscribed = subscribe(&mut socket, "jobs", None).await;
    assert_eq!(subscribed, json!({"type": "subscribed", "id": "jobs", "topic": "jobs"}));
    let snapshot = frame(&mut socket).await;
    assert_eq!((&snapshot["type"], &snapshot["jobs"]), (&json!("snapshot"), &json!([])));

    let id = submit(
        &api,
        json!({"kind": "sleep", "payload": {"duration_ms": 800, "steps": 4}}),
    )
    .await;
    let events = events_until_final(&mut socket, &id).await;
    assert_eq!(
        names(&events),
        [
            "queued",
            "started",
            "progress",
            "progress",
            "progress",
            "progress",
            "succeeded"
        ]
    );
    let versions: Vec<u64> = events.iter().map(|e| e["job_version"].as_u64().unwrap()).collect();
    assert!(versions.windows(2).all(|w| w[1] > w[0]), "{versions:?}");
    let sequences: Vec<u64> = events.iter().map(|e| e["version"].as_u64().unwrap()).collect();
    assert!(sequences.windows(2).all(|w| w[1] > w[0]), "{sequences:?}");
    let percents: Vec<f64> = events[2..6]
        .iter()
        .map(|e| e["job"]["progress"]["percent"].as_f64().unwrap())
        .collect();
    assert_eq!(percents, [25.0, 50.0, 75.0, 100.0]);
    let done = events.last().unwrap();
    assert_eq!(done["job"]["status"], "succeeded");
    assert_eq!(done["job"]["result"], json!({"slept_ms": 800, "steps": 4}));
}

#[tokio::test]
async fn a_running_job_cancelled_over_http_shows_cancelled_within_a_second() {
    let system = system!();
    let api = Api::new(&system, "acme");
    let id = submit(
        &api,
        json!({"kind": "sleep", "payload": {"duration_ms": 30000, "steps": 30}}),
    )
    .await;
    let mut socket = socket(&system, "acme").await;
    let topic = format!("job:{id}");
    assert_eq!(subscribe(&mut socket, &topic, None).await["type"], "subscribed");
    let snapshot = frame(&mut socket).await;
    assert_eq!(snapshot["type"], "snapshot");
    let mut running = snapshot["jobs"][0]["status"] == "running";
    while !running {
        running = frame(&mut socket).await["event"] == "started";
    }

    let asked = tokio::time::Instant::now();
    let (status, _) = api.post(&format!("/api/v1/jobs/{id}/cancel"), json!({})).await;
    assert_eq!(status, 200);
    let events = events_until_final(&mut socket, &id).await;
    let seen = asked.elapsed();
    let last = events.last().unwrap();
    assert_eq!(last["event"], "cancelled", "{events:?}");
    assert_eq!(last["job"]["status"], "cancelled");
    assert!(seen < Duration::from_secs(1), "cancelled seen after {seen:?}");
    assert!(names(&events).contains(&"cancel_requested"), "{events:?}");
}

#[tokio::test]
async fn a_failing_job_shows_retries_with_growing_delays_then_fails_with_every_error() {
    let system = system!(TestSystem::builder().jobs_env("SEXTANT_JOBS__WORKER__RETRY_BASE", "400ms"));
    let api = Api::new(&system, "acme");
    // Subscribed before the submit: the first attempt fails at once.
    let mut socket = following_jobs(&system, "acme").await;
    let id = submit(
        &api,
        json!({"kind": "fail", "payload": {"times": 9, "message": "disk on fire"}, "max_attempts": 3}),
    )
    .await;
    let events = events_until_final(&mut socket, &id).await;

    let retries: Vec<&Value> = events.iter().filter(|e| e["event"] == "retry_scheduled").collect();
    assert_eq!(retries.len(), 2, "{events:#?}");
    let delays: Vec<Duration> = retries
        .iter()
        .map(|r| (time(&r["retry_at"]) - time(&r["occurred_at"])).unsigned_abs())
        .collect();
    assert!(delays[1] > delays[0], "delays grow: {delays:?}");
    for (i, retry) in retries.iter().enumerate() {
        assert_eq!(retry["job"]["attempt"], i + 1);
        assert_eq!(retry["job"]["errors"].as_array().unwrap().len(), i + 1);
    }
    let failed = events.last().unwrap();
    assert_eq!(failed["event"], "failed");
    assert_eq!(failed["job"]["attempt"], 3);
    let errors = failed["job"]["errors"].as_array().unwrap();
    assert_eq!(
        errors
            .iter()
            .map(|e| e["attempt"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(errors.iter().all(|e| e["message"] == "disk on fire"), "{errors:?}");
}

#[tokio::test]
async fn a_batch_parent_reports_its_childrens_progress() {
    let system = system!();
    let api = Api::new(&system, "acme");
    let child = json!({"kind": "sleep", "payload": {"duration_ms": 200, "steps": 1}});
    let mut socket = following_jobs(&system, "acme").await;
    let id = submit(
        &api,
        json!({"kind": "batch", "payload": {"children": [child, child, child, child]}}),
    )
    .await;
    let events = events_until_final(&mut socket, &id).await;

    let done: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == "progress")
        .map(|e| e["job"]["children_done"].as_u64().unwrap())
        .collect();
    assert!(done.windows(2).all(|w| w[1] > w[0]), "{done:?}");
    assert_eq!(done.last(), Some(&4), "{done:?}");
    let last = events.last().unwrap();
    assert_eq!(last["event"], "succeeded");
    assert_eq!(last["job"]["children_total"], 4);
    assert_eq!(last["job"]["result"]["succeeded"], 4);
    assert_eq!(last["job"]["progress"]["percent"], 100.0);
}

#[tokio::test]
async fn a_delayed_job_starts_no_earlier_than_its_time() {
    let system = system!();
    let api = Api::new(&system, "acme");
    let id = submit(&api, json!({"kind": "noop", "delay_ms": 1500})).await;
    let mut socket = socket(&system, "acme").await;
    assert_eq!(
        subscribe(&mut socket, &format!("job:{id}"), None).await["type"],
        "subscribed"
    );
    let snapshot = frame(&mut socket).await;
    let job = &snapshot["jobs"][0];
    assert_eq!(job["status"], "scheduled");
    let run_at = time(&job["run_at"]);

    let events = events_until_final(&mut socket, &id).await;
    assert_eq!(names(&events), ["queued", "started", "succeeded"]);
    let started = time(&events[1]["occurred_at"]);
    assert!(started >= run_at, "started {started} before {run_at}");
    assert!(
        started - run_at < time::Duration::seconds(1),
        "started {started}, due {run_at}"
    );
}

#[tokio::test]
async fn another_tenant_cannot_subscribe_to_a_job_or_see_it_on_its_topic() {
    let system = system!();
    let acme = Api::new(&system, "acme");
    let mut globex = socket(&system, "globex").await;
    assert_eq!(subscribe(&mut globex, "jobs", None).await["type"], "subscribed");
    let snapshot = frame(&mut globex).await;
    assert_eq!(snapshot["jobs"], json!([]));

    let id = submit(&acme, json!({"kind": "noop"})).await;
    let topic = format!("job:{id}");
    let refused = subscribe(&mut globex, &topic, None).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "not_found");
    assert_eq!(refused["topic"], topic.as_str());
    assert_eq!(refused["id"], topic.as_str());

    acme.wait_for(&id, Duration::from_secs(15), |j| j["status"] == "succeeded")
        .await;
    // Still connected, still subscribed to its own topic, and nothing of acme's arrived.
    ws::send_json(&mut globex, &json!({"op": "ping", "id": "after"})).await;
    assert_eq!(frame(&mut globex).await, json!({"type": "pong", "id": "after"}));
    // Unsubscribing from the refused topic: it was never live.
    ws::send_json(&mut globex, &json!({"op": "unsubscribe", "id": 3, "topic": topic})).await;
    assert_eq!(frame(&mut globex).await["code"], "not_found");
}

/// Follows `topic` on a fresh socket, disconnects after `keep` frames, and
/// resumes on another socket with the last version seen. Returns every frame.
pub(crate) async fn follow_with_a_disconnect(
    system: &TestSystem,
    topic: &str,
    job_id: &str,
    keep: usize,
) -> Vec<Value> {
    let mut first = socket(system, "acme").await;
    assert_eq!(subscribe(&mut first, topic, None).await["type"], "subscribed");
    let mut frames = vec![frame(&mut first).await];
    assert_eq!(frames[0]["type"], "snapshot");
    while frames.len() < keep {
        frames.push(frame(&mut first).await);
    }
    let last = frames.last().unwrap()["version"].as_u64().unwrap();
    drop(first);
    // Changes happen while nobody listens.
    tokio::time::sleep(Duration::from_millis(700)).await;

    let mut second = socket(system, "acme").await;
    assert_eq!(subscribe(&mut second, topic, Some(last)).await["type"], "subscribed");
    loop {
        let frame = frame(&mut second).await;
        assert_eq!(frame["type"], "event", "a resume sends no snapshot: {frame}");
        let done = frame["job_id"] == job_id && is_final(&frame);
        frames.push(frame);
        if done {
            return frames;
        }
    }
}

#[tokio::test]
async fn a_client_that_resubscribes_with_its_last_version_misses_nothing_and_gets_nothing_twice() {
    let system = system!();
    let api = Api::new(&system, "acme");
    let sleep = json!({"kind": "sleep", "payload": {"duration_ms": 1600, "steps": 8}});

    // One job's topic: versions continue exactly where the client left off.
    let id = submit(&api, sleep.clone()).await;
    let frames = follow_with_a_disconnect(&system, &format!("job:{id}"), &id, 3).await;
    let versions: Vec<u64> = frames.iter().map(|f| f["version"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (versions[0]..versions[0] + versions.len() as u64).collect();
    assert_eq!(versions, expected, "every version once");
    let (_, job) = api.get(&format!("/api/v1/jobs/{id}")).await;
    assert_eq!(versions.last().unwrap(), &job["version"].as_u64().unwrap());

    // The tenant topic: each of the job's changes once, in order.
    let id = submit(&api, sleep).await;
    let frames = follow_with_a_disconnect(&system, "jobs", &id, 3).await;
    let sequences: Vec<u64> = frames.iter().map(|f| f["version"].as_u64().unwrap()).collect();
    assert!(sequences.windows(2).all(|w| w[1] > w[0]), "{sequences:?}");
    let job_versions: Vec<u64> = frames[1..]
        .iter()
        .filter(|f| f["job_id"] == id.as_str())
        .map(|f| f["job_version"].as_u64().unwrap())
        .collect();
    let first = job_versions[0];
    assert_eq!(
        job_versions,
        (first..first + job_versions.len() as u64).collect::<Vec<_>>(),
        "each change once"
    );
    let (_, job) = api.get(&format!("/api/v1/jobs/{id}")).await;
    assert_eq!(job_versions.last().unwrap(), &job["version"].as_u64().unwrap());
}

#[tokio::test]
async fn a_subscribed_client_is_not_idle() {
    let system = system!(TestSystem::builder().gateway_env("SEXTANT_GATEWAY__WS__IDLE_TIMEOUT", "1s"));
    let mut socket = following_jobs(&system, "acme").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    ws::send_json(&mut socket, &json!({"op": "unsubscribe", "id": 1, "topic": "jobs"})).await;
    assert_eq!(
        frame(&mut socket).await,
        json!({"type": "unsubscribed", "id": 1, "topic": "jobs"})
    );
    // Without subscriptions the idle timeout applies again.
    let (code, _) = ws::expect_close(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(code, 4000);
}

#[tokio::test]
async fn events_of_a_job_run_by_another_replica_reach_the_gateways_replica() {
    // The gateway talks to an api-only replica; a worker-only replica runs the
    // job. Its changes reach the subscriber through RabbitMQ.
    let system = system!(TestSystem::builder().jobs_env("SEXTANT_JOBS__WORKER__ROLE", "api"));
    let _worker = system.spawn_jobs("jobs-worker", &[("SEXTANT_JOBS__WORKER__ROLE", "worker")]);
    let api = Api::new(&system, "acme");
    let mut socket = following_jobs(&system, "acme").await;
    let id = submit(
        &api,
        json!({"kind": "sleep", "payload": {"duration_ms": 300, "steps": 2}}),
    )
    .await;
    let events = events_until_final(&mut socket, &id).await;
    assert_eq!(
        names(&events),
        ["queued", "started", "progress", "progress", "succeeded"]
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_as_a_slow_consumer() {
    let system = system!(TestSystem::builder().gateway_env("SEXTANT_GATEWAY__WS__OUTBOUND_BUFFER", "8"));
    let api = Api::new(&system, "acme");
    // A small receive buffer, so the kernel does not soak up the backlog for us.
    let url = system.ws_url("/api/v1/ws");
    let addr: std::net::SocketAddr = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(4096).unwrap();
    let stream = tcp.connect(addr).await.unwrap();
    let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    let token = system.token("acme", "alice");
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let (mut socket, _) = tokio_tungstenite::client_async(request, stream).await.unwrap();
    assert_eq!(ws::next_json(&mut socket).await["type"], "hello");
    assert_eq!(subscribe(&mut socket, "jobs", None).await["type"], "subscribed");
    assert_eq!(frame(&mut socket).await["type"], "snapshot");

    // Thousands of events while the client reads nothing, more whenever the
    // last batch is done, until the gateway gives up on the client. It does so
    // without waiting for the client to read: its close count moves while this
    // socket is still untouched.
    let closed = r#"sextant_gateway_ws_connections_closed_total{code="4008"} 1"#;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut submitted = 0;
    loop {
        let metrics = system.http.get(system.url("/metrics")).send().await.unwrap();
        if metrics.text().await.unwrap().lines().any(|line| line == closed) {
            break;
        }
        let (_, stats) = api.get("/api/v1/jobs/stats").await;
        let done: u64 = stats["counts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["status"] == "succeeded")
            .map(|c| c["count"].as_u64().unwrap())
            .sum();
        assert!(
            tokio::time::Instant::now() < deadline && submitted < 20_000,
            "no 4008 close counted after {submitted} jobs\n{stats}\n{}",
            system.all_logs()
        );
        if done == submitted {
            let batch: Vec<Value> = (0..1000).map(|_| json!({"kind": "noop"})).collect();
            let (status, body) = api.post("/api/v1/jobs/batch", json!({ "jobs": batch })).await;
            assert_eq!(status, 200, "{body}");
            submitted += 1000;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, reason) = ws::expect_close(&mut socket, Duration::from_secs(30)).await;
    assert_eq!(code, 4008, "{reason}");
}
