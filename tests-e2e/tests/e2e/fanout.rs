//! Shared topics seen from outside: many browsers on one topic cost the jobs
//! service one stream, and every subscriber gets every event once, in order,
//! also across a jobs restart and a resume the gateway's history cannot serve.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use sextant_e2e::TestSystem;
use sextant_e2e::ws::{self, Auth, Socket};

use crate::jobs::Api;
use crate::jobs_live::{follow_with_a_disconnect, frame, is_final, submit, subscribe};
use crate::system;

const TENANT_STREAMS: &str = r#"sextant_jobs_watch_streams{target="tenant"}"#;
const TENANT_STREAMS_OPENED: &str = r#"sextant_jobs_watch_streams_opened_total{target="tenant"}"#;
const SHARED_UPSTREAMS: &str = r#"sextant_gateway_ws_upstream_streams{kind="jobs",role="shared"}"#;

/// `n` sockets of different users of `tenant`, each subscribed to `jobs`
/// and past its snapshot.
async fn subscribers(system: &TestSystem, tenant: &str, n: usize) -> Vec<Socket> {
    let mut sockets = Vec::with_capacity(n);
    for i in 0..n {
        let token = system.token(tenant, &format!("user-{i}"));
        let mut socket = ws::connect(&system.ws_url("/api/v1/ws"), Auth::Header(&token))
            .await
            .expect("upgrade accepted");
        assert_eq!(ws::next_json(&mut socket).await["type"], "hello");
        let subscribed = subscribe(&mut socket, "jobs", None).await;
        assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
        let snapshot = frame(&mut socket).await;
        assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
        sockets.push(socket);
    }
    sockets
}

/// Event frames until every job in `ids` has had its final event.
async fn events_until_all_final(socket: &mut Socket, ids: &[String]) -> Vec<Value> {
    let mut events = Vec::new();
    let mut open: Vec<&String> = ids.iter().collect();
    while !open.is_empty() {
        let frame = frame(socket).await;
        assert_eq!(frame["type"], "event", "{frame}");
        if is_final(&frame) {
            open.retain(|id| frame["job_id"] != id.as_str());
        }
        events.push(frame);
    }
    events
}

/// Each job's versions, as seen in `events`, must be 1, 2, 3, … (each change
/// once, from `queued` on), and the frames' topic versions must rise.
fn assert_every_change_once_in_order(events: &[Value], ids: &[String]) {
    let topic_versions: Vec<u64> = events.iter().map(|e| e["version"].as_u64().unwrap()).collect();
    assert!(topic_versions.windows(2).all(|w| w[1] > w[0]), "{topic_versions:?}");
    let mut per_job: HashMap<&str, Vec<u64>> = HashMap::new();
    for event in events {
        per_job
            .entry(event["job_id"].as_str().unwrap())
            .or_default()
            .push(event["job_version"].as_u64().unwrap());
    }
    for id in ids {
        let seen = &per_job[id.as_str()];
        let expected: Vec<u64> = (1..=seen.len() as u64).collect();
        assert_eq!(seen, &expected, "job {id}");
    }
}

async fn wait_for_metric(system: &TestSystem, gateway: bool, series: &str, value: f64) {
    let service = if gateway { &system.gateway } else { &system.jobs };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let seen = system.metric(service, series).await;
        if seen == value {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} is {seen}, not {value}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn many_subscribers_of_one_topic_cost_the_jobs_service_one_stream_and_each_gets_every_event_once() {
    let system = system!(TestSystem::builder().gateway_env("SEXTANT_GATEWAY__WS__TOPIC_LINGER", "300ms"));
    let api = Api::new(&system, "acme");
    let mut sockets = subscribers(&system, "acme", 40).await;

    assert_eq!(system.metric(&system.jobs, TENANT_STREAMS).await, 1.0);
    assert_eq!(system.metric(&system.jobs, TENANT_STREAMS_OPENED).await, 1.0);
    let gateway = &system.gateway;
    assert_eq!(system.metric(gateway, SHARED_UPSTREAMS).await, 1.0);
    let subscribers = r#"sextant_gateway_ws_subscribers{kind="jobs"}"#;
    assert_eq!(system.metric(gateway, subscribers).await, 40.0);

    let mut ids = Vec::new();
    for _ in 0..3 {
        let job = json!({"kind": "sleep", "payload": {"duration_ms": 300, "steps": 3}});
        ids.push(submit(&api, job).await);
    }
    let first = events_until_all_final(&mut sockets[0], &ids).await;
    assert_every_change_once_in_order(&first, &ids);
    for socket in &mut sockets[1..] {
        assert_eq!(
            events_until_all_final(socket, &ids).await,
            first,
            "every subscriber sees the same frames"
        );
    }
    let fanned_out = r#"sextant_gateway_ws_frames_fanned_out_total{kind="jobs"}"#;
    assert!(system.metric(gateway, fanned_out).await >= (40 * first.len()) as f64);
    // Still one stream, and the frames were the jobs service's once, not 40 times.
    assert_eq!(system.metric(&system.jobs, TENANT_STREAMS_OPENED).await, 1.0);

    // The last subscriber gone, the upstream closes after the linger.
    drop(sockets);
    wait_for_metric(&system, true, subscribers, 0.0).await;
    wait_for_metric(&system, false, TENANT_STREAMS, 0.0).await;
    assert_eq!(system.metric(gateway, SHARED_UPSTREAMS).await, 0.0);
}

#[tokio::test]
async fn a_jobs_restart_under_subscribers_is_invisible_to_them() {
    let mut system = system!();
    let mut sockets = subscribers(&system, "acme", 10).await;
    let id = submit(
        &Api::new(&system, "acme"),
        json!({"kind": "sleep", "payload": {"duration_ms": 3000, "steps": 12}}),
    )
    .await;
    // Wait until the job runs, then restart the jobs service on its port.
    loop {
        let frame = frame(&mut sockets[0]).await;
        if frame["event"] == "progress" {
            break;
        }
    }
    let port = system.jobs.addr.port().to_string();
    system.jobs.terminate();
    assert!(system.jobs.wait_exit(Duration::from_secs(20)).is_some(), "jobs stopped");
    system.jobs = system.spawn_jobs("jobs-again", &[("SEXTANT_JOBS__GRPC__PORT", &port)]);

    // A job submitted after the restart too: both seen to the end, on every socket.
    let api = Api::new(&system, "acme");
    let second = loop {
        let (status, job) = api.post("/api/v1/jobs", json!({"kind": "noop"})).await;
        if status == 201 {
            break job["id"].as_str().unwrap().to_owned();
        }
        assert_eq!(status, 503, "{job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ids = [id, second];
    let mut seen = Vec::new();
    for socket in &mut sockets {
        seen.push(events_until_all_final(socket, &ids).await);
    }
    // Socket 0 read some events before the restart; the others saw them all.
    for events in &seen[1..] {
        assert_every_change_once_in_order(events, &ids);
        assert_eq!(events, &seen[1]);
    }
    assert_eq!(system.metric(&system.jobs, TENANT_STREAMS).await, 1.0);
}

#[tokio::test]
async fn a_resume_older_than_the_gateways_history_catches_up_from_the_backend_exactly() {
    // A history of one frame: the resume point has surely left it.
    let system = system!(TestSystem::builder().gateway_env("SEXTANT_GATEWAY__WS__TOPIC_HISTORY", "1"));
    let api = Api::new(&system, "acme");
    let sleep = json!({"kind": "sleep", "payload": {"duration_ms": 1600, "steps": 8}});

    for topic_of in [|id: &str| format!("job:{id}"), |_: &str| "jobs".to_owned()] {
        let id = submit(&api, sleep.clone()).await;
        let frames = follow_with_a_disconnect(&system, &topic_of(&id), &id, 3).await;
        let events: Vec<&Value> = frames[1..].iter().filter(|f| f["job_id"] == id.as_str()).collect();
        let versions: Vec<u64> = events.iter().map(|f| f["job_version"].as_u64().unwrap()).collect();
        let first = versions[0];
        assert_eq!(
            versions,
            (first..first + versions.len() as u64).collect::<Vec<_>>(),
            "each change once"
        );
        let (_, job) = api.get(&format!("/api/v1/jobs/{id}")).await;
        assert_eq!(versions.last(), job["version"].as_u64().as_ref());
        assert!(events.last().is_some_and(|e| is_final(e)));
    }
    // Each resume needed a catch-up stream of its own, beside the shared one.
    let opened = system.metric(&system.jobs, TENANT_STREAMS_OPENED).await;
    assert_eq!(opened, 2.0, "one shared stream and one catch-up for `jobs`");
}
