//! Joining a topic with a resume point it never reached (a version from
//! another topic, a stale tab, a made-up number): the subscriber gets a fresh
//! snapshot and then every update, both when it is the topic's first
//! subscriber on the gateway and when another socket already follows it.
//! One test per topic kind.

use serde_json::{Value, json};
use sextant_e2e::ws::{self, Socket};

use crate::alerts::{alerting, next_half_second, rule};
use crate::jobs::Api;
use crate::jobs_live::{events_until_final, frame, is_final, socket, submit};
use crate::metrics::{Client, rfc3339};
use crate::metrics_live::socket_at;
use crate::system;

/// Far beyond any version a test reaches, and exact in JavaScript.
const BEYOND: u64 = 1 << 50;

/// Subscribes with `after_version` and expects `subscribed`, then a fresh
/// snapshot; returns the snapshot.
async fn join(socket: &mut Socket, op: Value) -> Value {
    ws::send_json(socket, &op).await;
    let subscribed = ws::next_json(socket).await;
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    let snapshot = frame(socket).await;
    assert_eq!(
        snapshot["type"], "snapshot",
        "a join beyond the topic's version: {snapshot}"
    );
    assert!(snapshot["version"].as_u64().unwrap() < BEYOND, "{snapshot}");
    snapshot
}

fn op(topic: &str, after: u64) -> Value {
    json!({"op": "subscribe", "id": topic, "topic": topic, "after_version": after})
}

#[tokio::test]
async fn a_jobs_join_beyond_the_topic_gets_a_snapshot_then_every_event() {
    let system = system!();
    let api = Api::new(&system, "acme");
    let earlier = submit(&api, json!({"kind": "noop"})).await;

    // Alone on the topic, then beside a socket that already follows it.
    let mut first = socket(&system, "acme").await;
    let snapshot = join(&mut first, op("jobs", BEYOND)).await;
    assert!(
        snapshot["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == earlier.as_str()),
        "{snapshot}"
    );
    let mut joiner = socket(&system, "acme").await;
    let snapshot = join(&mut joiner, op("jobs", BEYOND + 1)).await;
    assert!(
        snapshot["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == earlier.as_str())
    );

    let id = submit(
        &api,
        json!({"kind": "sleep", "payload": {"duration_ms": 300, "steps": 3}}),
    )
    .await;
    let seen = events_until_final(&mut first, &id).await;
    assert_eq!(events_until_final(&mut joiner, &id).await, seen);
    let versions: Vec<u64> = seen.iter().map(|e| e["job_version"].as_u64().unwrap()).collect();
    assert_eq!(
        versions,
        (1..=versions.len() as u64).collect::<Vec<_>>(),
        "every change once"
    );

    // One job's topic: the job as it is, then the rest of its events.
    let id = submit(
        &api,
        json!({"kind": "sleep", "payload": {"duration_ms": 1200, "steps": 6}}),
    )
    .await;
    let topic = format!("job:{id}");
    let mut first = socket(&system, "acme").await;
    let snapshot = join(&mut first, op(&topic, BEYOND)).await;
    assert_eq!(snapshot["jobs"][0]["id"], id.as_str());
    let mut joiner = socket(&system, "acme").await;
    let snapshot = join(&mut joiner, op(&topic, BEYOND)).await;
    let shown = snapshot["jobs"][0]["version"].as_u64().unwrap();
    let rest = events_until_final(&mut joiner, &id).await;
    let versions: Vec<u64> = rest.iter().map(|e| e["job_version"].as_u64().unwrap()).collect();
    if let Some(&first_event) = versions.first() {
        assert!(
            first_event <= shown + 1,
            "no gap after the snapshot: {shown} then {versions:?}"
        );
    }
    assert!(versions.windows(2).all(|w| w[1] == w[0] + 1), "{versions:?}");
    let last = events_until_final(&mut first, &id).await;
    assert!(last.last().is_some_and(is_final));
    assert_eq!(last.last(), rest.last());
}

#[tokio::test]
async fn a_metric_join_beyond_the_topic_gets_a_snapshot_then_every_update() {
    let system = system!();
    let client = Client::new(&system, "acme");
    let metric = "join.latency";
    let now = time::OffsetDateTime::now_utc();
    let event = |value: f64| json!({"name": metric, "ts": rfc3339(now), "value": value, "labels": {"host": "a"}});
    client.ingest(&[event(1.0)]).await;
    let query = json!({
        "metric": metric, "aggregations": ["count", "max"], "bucket_seconds": 60, "window_seconds": 3600,
    });
    let subscribe =
        |after: u64| json!({"op": "subscribe", "id": "m", "topic": "metric", "query": query, "after_version": after});

    let token = system.token("acme", "alice");
    let url = system.ws_url("/api/v1/ws");
    let mut first = socket_at(&url, &token).await;
    let snapshot = join(&mut first, subscribe(BEYOND)).await;
    assert_eq!(snapshot["series"][0]["buckets"][0]["count"], 1, "{snapshot}");
    let mut joiner = socket_at(&url, &token).await;
    let snapshot = join(&mut joiner, subscribe(BEYOND)).await;
    assert_eq!(snapshot["series"][0]["buckets"][0]["count"], 1, "{snapshot}");

    client.ingest(&[event(7.0)]).await;
    for socket in [&mut first, &mut joiner] {
        let update = frame(socket).await;
        assert_eq!(update["type"], "update", "{update}");
        assert!(update["version"].as_u64().unwrap() > snapshot["version"].as_u64().unwrap());
        let bucket = &update["series"][0]["buckets"][0];
        assert_eq!(
            (bucket["count"].as_u64(), bucket["values"]["max"].as_f64()),
            (Some(2), Some(7.0)),
            "{update}"
        );
    }
}

#[tokio::test]
async fn an_alerts_join_beyond_the_topic_gets_a_snapshot_then_every_transition() {
    let system = system!(alerting());
    let client = Client::new(&system, "acme");
    let metric = "join.cpu";
    let created = client.create_rule(&rule(metric, json!({}))).await;
    let rule_id = created["id"].as_str().unwrap().to_owned();
    let token = system.token("acme", "alice");
    let url = system.ws_url("/api/v1/ws");

    let mut sockets = Vec::new();
    for topic in ["alerts".to_owned(), format!("alert:{rule_id}")] {
        let mut first = socket_at(&url, &token).await;
        join(&mut first, op(&topic, BEYOND)).await;
        let mut joiner = socket_at(&url, &token).await;
        join(&mut joiner, op(&topic, BEYOND)).await;
        sockets.push(first);
        sockets.push(joiner);
    }

    // Above the threshold: the instance leaves `no_data` for `firing`.
    let at = next_half_second().await;
    client.send(metric, at, 95.0, "h").await;
    let mut seen = Vec::new();
    for socket in &mut sockets {
        let transition = loop {
            let frame = frame(socket).await;
            assert_eq!(frame["type"], "transition", "{frame}");
            if frame["to"] == "firing" {
                break frame;
            }
        };
        assert_eq!(transition["rule_id"], rule_id.as_str());
        seen.push(transition["version"].clone());
    }
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "the same transition everywhere: {seen:?}"
    );
}
