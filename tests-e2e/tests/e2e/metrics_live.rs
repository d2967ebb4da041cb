//! Live metric queries over the WebSocket, as a dashboard chart follows
//! them: a snapshot of the trailing window, then an update for each bucket
//! that changes; an exact resume from the last version; across replicas of
//! the analytics service and of the gateway; never another tenant's data.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use sextant_e2e::TestSystem;
use sextant_e2e::ws::{self, Auth, Socket};
use time::OffsetDateTime;

use crate::metrics::{Client, Ev, rfc3339};
use crate::system;

const AGGS: [&str; 4] = ["count", "sum", "max", "p95"];

fn spec(metric: &str) -> Value {
    json!({
        "metric": metric, "aggregations": AGGS, "bucket_seconds": 60, "window_seconds": 3600,
        "group_by": "host",
    })
}

pub(crate) async fn socket_at(url: &str, token: &str) -> Socket {
    let mut socket = ws::connect(url, Auth::Header(token)).await.expect("upgrade accepted");
    assert_eq!(ws::next_json(&mut socket).await["type"], "hello");
    socket
}

/// Subscribes to a metric query; returns the topic name from `subscribed`.
pub(crate) async fn subscribe(socket: &mut Socket, query: &Value, after: Option<u64>) -> String {
    let mut op = json!({"op": "subscribe", "id": "m", "topic": "metric", "query": query});
    if let Some(after) = after {
        op["after_version"] = json!(after);
    }
    ws::send_json(socket, &op).await;
    let reply = ws::next_json(socket).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    assert_eq!(reply["id"], "m");
    reply["topic"].as_str().unwrap().to_owned()
}

pub(crate) async fn frame(socket: &mut Socket) -> Value {
    match ws::next(socket, Duration::from_secs(15)).await {
        ws::Frame::Json(value) => value,
        ws::Frame::Close(close) => panic!("closed: {close:?}"),
        ws::Frame::Broken(error) => panic!("broken: {error}"),
    }
}

/// No frame arrives for `wait`.
async fn quiet(socket: &mut Socket, wait: Duration) {
    use futures::StreamExt;
    if let Ok(Some(Ok(message))) = tokio::time::timeout(wait, socket.next()).await
        && message.is_text()
    {
        panic!("unexpected frame: {message}");
    }
}

/// A chart's state: per (group, bucket start) the bucket as last sent.
type Chart = BTreeMap<(String, String), Value>;

fn apply(chart: &mut Chart, frame: &Value) {
    if frame["type"] == "snapshot" {
        chart.clear();
    }
    for series in frame["series"].as_array().unwrap() {
        let group = series["group"].as_str().unwrap_or("").to_owned();
        for bucket in series["buckets"].as_array().unwrap() {
            chart.insert(
                (group.clone(), bucket["start"].as_str().unwrap().to_owned()),
                bucket.clone(),
            );
        }
    }
}

/// The buckets a frame carries.
fn keys(frame: &Value) -> Vec<(String, String)> {
    let mut chart = Chart::new();
    for series in frame["series"].as_array().unwrap() {
        for bucket in series["buckets"].as_array().unwrap() {
            chart.insert(
                (
                    series["group"].as_str().unwrap_or("").to_owned(),
                    bucket["start"].as_str().unwrap().to_owned(),
                ),
                Value::Null,
            );
        }
    }
    chart.into_keys().collect()
}

/// What a fresh query says now about the last hour, as a chart.
async fn fresh(client: &Client<'_>, metric: &str) -> Chart {
    fresh_in(client, metric, 60).await
}

/// The same, in buckets of `bucket` seconds.
async fn fresh_in(client: &Client<'_>, metric: &str, bucket: u64) -> Chart {
    let now = OffsetDateTime::now_utc();
    // Within `max_buckets` (10,000) even at one-second buckets.
    let (back, ahead) = if bucket >= 60 { (120, 60) } else { (61, 10) };
    let answer = client
        .query(&json!({
            "metric": metric, "aggregations": AGGS, "bucket_seconds": bucket, "group_by": "host",
            "start": rfc3339(now - time::Duration::minutes(back)), "end": rfc3339(now + time::Duration::minutes(ahead)),
        }))
        .await;
    let mut chart = Chart::new();
    apply(&mut chart, &answer);
    chart
}

/// One event per host in the minute starting `minute` (after now - 50 min).
fn batch(metric: &str, minute: OffsetDateTime, value: f64) -> Vec<Value> {
    ["a", "b"]
        .iter()
        .enumerate()
        .map(|(i, host)| {
            Ev {
                metric: metric.into(),
                ts: minute + time::Duration::seconds(10 + i as i64),
                value: value + i as f64,
                labels: BTreeMap::from([("host".into(), (*host).into())]),
            }
            .json()
        })
        .collect()
}

fn minute(back: i64) -> OffsetDateTime {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    OffsetDateTime::from_unix_timestamp(now / 60 * 60 - back * 60).unwrap()
}

#[tokio::test]
async fn a_chart_gets_a_snapshot_then_updates_and_resumes_exactly_after_a_disconnect() {
    let system = system!();
    let client = Client::new(&system, "acme");
    let token = system.token("acme", "alice");
    let url = system.ws_url("/api/v1/ws");
    client.ingest(&batch("live.cpu", minute(30), 10.0)).await;

    let mut socket = socket_at(&url, &token).await;
    let topic = subscribe(&mut socket, &spec("live.cpu"), None).await;
    assert!(topic.starts_with("metric:{"), "{topic}");
    let snapshot = frame(&mut socket).await;
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    assert_eq!(snapshot["topic"], topic.as_str());
    assert_eq!(snapshot["version"], 1);
    assert_eq!(snapshot["aggregations"], json!(AGGS));
    let mut chart = Chart::new();
    apply(&mut chart, &snapshot);
    assert_eq!(chart, fresh(&client, "live.cpu").await);

    // Events arrive: an update with exactly the buckets they changed.
    client.ingest(&batch("live.cpu", minute(20), 20.0)).await;
    let update = frame(&mut socket).await;
    assert_eq!(
        (update["type"].as_str(), update["version"].as_u64()),
        (Some("update"), Some(2)),
        "{update}"
    );
    let m20 = rfc3339(minute(20));
    assert_eq!(keys(&update), [("a".into(), m20.clone()), ("b".into(), m20.clone())]);
    apply(&mut chart, &update);
    assert_eq!(chart, fresh(&client, "live.cpu").await);
    let last_seen = update["version"].as_u64().unwrap();

    // Gone for a while: two batches go by, on other minutes.
    drop(socket);
    client.ingest(&batch("live.cpu", minute(10), 30.0)).await;
    client.ingest(&batch("live.cpu", minute(5), 40.0)).await;
    let mut socket = socket_at(&url, &token).await;
    let again = subscribe(&mut socket, &spec("live.cpu"), Some(last_seen)).await;
    assert_eq!(again, topic, "one query, one topic name");
    // What was missed — and only that — whether the gateway answers from its
    // history (one update per batch) or the service catches up (one update).
    let mut seen = Vec::new();
    let mut version = last_seen;
    while version < 4 {
        let update = frame(&mut socket).await;
        assert_eq!(update["type"], "update", "no snapshot on an exact resume: {update}");
        let v = update["version"].as_u64().unwrap();
        assert!(v > version, "versions rise: {v} after {version}");
        version = v;
        seen.extend(keys(&update));
        apply(&mut chart, &update);
    }
    seen.sort();
    let (m10, m5) = (rfc3339(minute(10)), rfc3339(minute(5)));
    let mut want = vec![
        ("a".to_owned(), m10.clone()),
        ("b".to_owned(), m10),
        ("a".to_owned(), m5.clone()),
        ("b".to_owned(), m5),
    ];
    want.sort();
    assert_eq!(seen, want, "each missed bucket once, nothing already seen");
    assert_eq!(chart, fresh(&client, "live.cpu").await);
    quiet(&mut socket, Duration::from_millis(500)).await;

    // A query the service refuses ends the subscription with an error frame.
    let mut bad = spec("live.cpu");
    bad["bucket_seconds"] = json!(0);
    ws::send_json(
        &mut socket,
        &json!({"op": "subscribe", "id": 7, "topic": "metric", "query": bad}),
    )
    .await;
    let mut refusal = frame(&mut socket).await;
    if refusal["type"] == "subscribed" {
        refusal = frame(&mut socket).await;
    }
    assert_eq!(
        (refusal["type"].as_str(), refusal["code"].as_str()),
        (Some("error"), Some("invalid_argument")),
        "{refusal}"
    );
    // A malformed query never reaches the service.
    ws::send_json(
        &mut socket,
        &json!({"op": "subscribe", "id": 8, "topic": "metric", "query": {"metric": 1}}),
    )
    .await;
    let refusal = frame(&mut socket).await;
    assert_eq!(
        (
            refusal["type"].as_str(),
            refusal["code"].as_str(),
            refusal["id"].as_i64()
        ),
        (Some("error"), Some("invalid_argument"), Some(8)),
        "{refusal}"
    );
}

#[tokio::test]
async fn a_chart_of_one_second_buckets_gets_exactly_the_seconds_a_batch_touched() {
    let system = system!();
    let client = Client::new(&system, "acme");
    let token = system.token("acme", "alice");
    client.ingest(&batch("live.fine", minute(30), 10.0)).await;
    let mut query = spec("live.fine");
    query["bucket_seconds"] = json!(1);
    let mut socket = socket_at(&system.ws_url("/api/v1/ws"), &token).await;
    subscribe(&mut socket, &query, None).await;
    let snapshot = frame(&mut socket).await;
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    let mut chart = Chart::new();
    apply(&mut chart, &snapshot);

    // One batch: seconds 10 and 11 (host a, b), then seconds 40 and 59 of
    // the same minute, and second 0 of the next one.
    let m = minute(20);
    let at = |s: i64, host: &str, value: f64| {
        Ev {
            metric: "live.fine".into(),
            ts: m + time::Duration::seconds(s),
            value,
            labels: BTreeMap::from([("host".into(), host.into())]),
        }
        .json()
    };
    let mut events = batch("live.fine", m, 20.0);
    events.extend([at(40, "a", 5.0), at(59, "b", 6.0), at(60, "a", 7.0)]);
    client.ingest(&events).await;
    let update = frame(&mut socket).await;
    assert_eq!(update["type"], "update", "{update}");
    let second = |s: i64, host: &str| (host.to_owned(), rfc3339(m + time::Duration::seconds(s)));
    let mut want = vec![
        second(10, "a"),
        second(11, "b"),
        second(40, "a"),
        second(59, "b"),
        second(60, "a"),
    ];
    want.sort();
    assert_eq!(keys(&update), want);
    apply(&mut chart, &update);
    assert_eq!(chart, fresh_in(&client, "live.fine", 1).await);
}

#[tokio::test]
async fn an_event_ingested_through_one_gateway_reaches_a_chart_on_another_replica() {
    let system = system!();
    let analytics_2 = system.spawn_analytics("analytics-2", &[]);
    let gateway_2 = system.spawn_gateway("gateway-2", &analytics_2);
    let token = system.token("acme", "alice");
    let client = Client::new(&system, "acme");

    // Gateway 2 reaches analytics 2; the event goes in through gateway 1 (analytics 1).
    let mut socket = socket_at(&format!("ws://{}/api/v1/ws", gateway_2.addr), &token).await;
    subscribe(&mut socket, &spec("replicated"), None).await;
    assert_eq!(frame(&mut socket).await["type"], "snapshot");
    client.ingest(&batch("replicated", minute(3), 5.0)).await;
    let update = frame(&mut socket).await;
    assert_eq!(update["type"], "update", "{update}");
    let m3 = rfc3339(minute(3));
    assert_eq!(keys(&update), [("a".into(), m3.clone()), ("b".into(), m3)]);

    // Read-your-writes across replicas: a query on analytics 2 (whose cache
    // holds the answer from before) sees what went in through analytics 1.
    let query_2 = |at: OffsetDateTime| {
        let (http, url, token) = (
            system.http.clone(),
            format!("http://{}/api/v1/metrics/query", gateway_2.addr),
            token.clone(),
        );
        async move {
            let body = json!({
                "metric": "replicated", "aggregations": ["count"], "bucket_seconds": 60,
                "start": rfc3339(at - time::Duration::hours(1)), "end": rfc3339(at),
            });
            let answer: Value = http
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            answer["series"][0]["buckets"]
                .as_array()
                .map_or(0, |b| b.iter().map(|b| b["count"].as_u64().unwrap()).sum::<u64>())
        }
    };
    let at = minute(0);
    assert_eq!(query_2(at).await, 2);
    client.ingest(&batch("replicated", minute(4), 7.0)).await;
    assert_eq!(
        query_2(at).await,
        4,
        "the write through the other replica is visible at once"
    );

    // And the other way round.
    let mut socket_1 = socket_at(&system.ws_url("/api/v1/ws"), &token).await;
    subscribe(&mut socket_1, &spec("replicated"), None).await;
    assert_eq!(frame(&mut socket_1).await["type"], "snapshot");
    let status = system
        .http
        .post(format!("http://{}/api/v1/events", gateway_2.addr))
        .bearer_auth(&token)
        .json(&json!({ "events": batch("replicated", minute(2), 6.0) }))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let update = frame(&mut socket_1).await;
    assert_eq!(update["type"], "update", "{update}");
    assert_eq!(keys(&update)[0].1, rfc3339(minute(2)));
}

#[tokio::test]
async fn a_tenant_never_sees_another_tenants_live_updates() {
    let system = system!(TestSystem::builder().analytics_env("SEXTANT_ANALYTICS__LIVE__POLL", "200ms"));
    let acme = Client::new(&system, "acme");
    let globex = Client::new(&system, "globex");
    acme.ingest(&batch("same.name", minute(9), 1.0)).await;
    let mut watcher = socket_at(&system.ws_url("/api/v1/ws"), &system.token("globex", "bob")).await;
    subscribe(&mut watcher, &spec("same.name"), None).await;
    let snapshot = frame(&mut watcher).await;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(
        snapshot["series"],
        json!([]),
        "acme's events are not globex's: {snapshot}"
    );
    acme.ingest(&batch("same.name", minute(8), 2.0)).await;
    quiet(&mut watcher, Duration::from_millis(800)).await;
    globex.ingest(&batch("same.name", minute(7), 3.0)).await;
    let update = frame(&mut watcher).await;
    let m7 = rfc3339(minute(7));
    assert_eq!(keys(&update), [("a".into(), m7.clone()), ("b".into(), m7)]);
    assert_eq!(update["series"][0]["buckets"][0]["count"], 1);
}

/// The next frame, which must be a refusal of op `id` naming `topic`.
async fn refusal(socket: &mut Socket, id: i64, topic: &str) -> Value {
    let refusal = frame(socket).await;
    assert_eq!(
        refusal["type"], "error",
        "a refusal comes instead of `subscribed`: {refusal}"
    );
    assert_eq!(
        (refusal["id"].as_i64(), refusal["topic"].as_str()),
        (Some(id), Some(topic)),
        "{refusal}"
    );
    refusal
}

#[tokio::test]
async fn a_refused_subscription_is_one_error_naming_the_topic_asked_for() {
    let system = system!();
    let client = Client::new(&system, "acme");
    client.ingest(&batch("live.refused", minute(5), 1.0)).await;
    let mut socket = socket_at(&system.ws_url("/api/v1/ws"), &system.token("acme", "alice")).await;
    let subscribe = |id: i64, query: &Value| json!({"op": "subscribe", "id": id, "topic": "metric", "query": query});
    // The canonical name, fields in the documented order.
    let name = |query: &Value| {
        let fields = [
            "metric",
            "aggregations",
            "bucket_seconds",
            "window_seconds",
            "filters",
            "group_by",
        ];
        let json: Vec<String> = fields
            .iter()
            .map(|f| {
                let value = match (*f, query.get(*f)) {
                    (_, Some(value)) => value.clone(),
                    ("filters", None) => json!([]),
                    _ => Value::Null,
                };
                format!("{}:{value}", json!(f))
            })
            .collect();
        format!("metric:{{{}}}", json.join(","))
    };

    // Refused by the analytics service: the topic's canonical name.
    let mut refused = spec("live.refused");
    refused["window_seconds"] = json!(86_400);
    refused["bucket_seconds"] = json!(1);
    ws::send_json(&mut socket, &subscribe(1, &refused)).await;
    let error = refusal(&mut socket, 1, &name(&refused)).await;
    assert_eq!(error["code"], "invalid_argument");
    assert!(error["message"].as_str().unwrap().contains("86701"), "{error}");
    // A NUL in a filter value is refused alike.
    let mut nul = spec("live.refused");
    nul["filters"] = json!([{"label": "host", "op": "in", "values": ["a\u{0}"]}]);
    ws::send_json(&mut socket, &subscribe(2, &nul)).await;
    let error = refusal(&mut socket, 2, &name(&nul)).await;
    assert!(error["message"].as_str().unwrap().contains("U+0000"), "{error}");
    // Unreadable at the gateway: the topic as sent.
    let mut unknown = spec("live.refused");
    unknown["aggregations"] = json!(["p42"]);
    ws::send_json(&mut socket, &subscribe(3, &unknown)).await;
    assert_eq!(refusal(&mut socket, 3, "metric").await["code"], "invalid_argument");

    // None of them is a subscription: the socket has none and lives on.
    for (id, topic) in [(4, name(&refused)), (5, name(&nul))] {
        ws::send_json(&mut socket, &json!({"op": "unsubscribe", "id": id, "topic": topic})).await;
        assert_eq!(frame(&mut socket).await["code"], "not_found");
    }
    let topic = subscribe_ok(&mut socket, &spec("live.refused")).await;
    assert_eq!(frame(&mut socket).await["type"], "snapshot", "{topic}");
}

async fn subscribe_ok(socket: &mut Socket, query: &Value) -> String {
    subscribe(socket, query, None).await
}
