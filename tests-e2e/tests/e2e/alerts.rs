//! Alert rules through the gateway, as a dashboard uses them: an instance
//! going inactive → pending → firing → resolved (and no_data when its
//! window is empty), seen live on the WebSocket and in the history, with
//! `for` and `keep_firing_for` held to within one evaluation interval; one
//! instance per group; a resume that misses nothing; tenant isolation; and
//! bad rules refused without changing anything.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use sextant_e2e::TestSystem;
use sextant_e2e::ws::{self, Socket};
use time::OffsetDateTime;

use crate::metrics::{Client, rfc3339};
use crate::metrics_live::{frame, socket_at};
use crate::system;

/// The evaluation interval these tests run with.
pub(crate) const INTERVAL: f64 = 1.0;

pub(crate) fn alerting() -> sextant_e2e::system::TestSystemBuilder {
    TestSystem::builder().analytics_env("SEXTANT_ANALYTICS__ALERTS__INTERVAL", "1s")
}

pub(crate) fn rule(metric: &str, extra: Value) -> Value {
    let mut rule = json!({
        "name": format!("{metric} too high"), "metric": metric, "aggregation": "max",
        "window_seconds": 2, "comparator": "gt", "threshold": 80.0,
    });
    for (k, v) in extra.as_object().unwrap() {
        rule[k] = v.clone();
    }
    rule
}

impl Client<'_> {
    pub(crate) async fn create_rule(&self, rule: &Value) -> Value {
        let (status, body) = self.post("/api/v1/alerts/rules", rule, None).await;
        assert_eq!(status, 201, "{rule} → {body}");
        body
    }

    /// One event of `metric` at `ts`.
    pub(crate) async fn send(&self, metric: &str, ts: OffsetDateTime, value: f64, host: &str) {
        self.ingest(&[json!({"name": metric, "ts": rfc3339(ts), "value": value, "labels": {"host": host}})])
            .await;
    }
}

/// Sleeps until the next half second of the wall clock and returns it: an
/// event stamped then lands mid-interval, well before the next evaluation.
pub(crate) async fn next_half_second() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    let nanos = now.unix_timestamp_nanos();
    let half = 500_000_000i128;
    let target = (nanos / half + 1) * half;
    let mut at = OffsetDateTime::from_unix_timestamp_nanos(target).unwrap();
    if at.unix_timestamp_nanos() % 1_000_000_000 == 0 {
        at += time::Duration::milliseconds(500);
    }
    let wait = at - now;
    tokio::time::sleep(Duration::from_secs_f64(wait.as_seconds_f64().max(0.0))).await;
    at
}

fn seconds_between(a: &Value, b: &Value) -> f64 {
    let parse =
        |v: &Value| OffsetDateTime::parse(v.as_str().unwrap(), &time::format_description::well_known::Rfc3339).unwrap();
    (parse(b) - parse(a)).as_seconds_f64()
}

fn at(v: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(
        v["at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

/// Reads frames until a transition arrives; returns it.
async fn transition(socket: &mut Socket) -> Value {
    loop {
        let f = frame(socket).await;
        if f["type"] == "transition" {
            return f;
        }
        assert_eq!(f["type"], "snapshot", "{f}");
    }
}

pub(crate) async fn subscribe(socket: &mut Socket, topic: &str, after: Option<u64>) -> Value {
    let mut op = json!({"op": "subscribe", "id": "a", "topic": topic});
    if let Some(after) = after {
        op["after_version"] = json!(after);
    }
    ws::send_json(socket, &op).await;
    let reply = ws::next_json(socket).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    reply
}

fn pair(t: &Value) -> (String, String) {
    (
        t["from"].as_str().unwrap().to_owned(),
        t["to"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn an_instance_goes_pending_firing_resolved_live_and_in_the_history() {
    let system = system!(alerting());
    let client = Client::new(&system, "acme");
    let rule = client
        .create_rule(&rule("cpu", json!({"for_seconds": 2, "keep_firing_for_seconds": 2})))
        .await;
    let id = rule["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (rule["version"].as_u64(), rule["enabled"].as_bool()),
        (Some(1), Some(true))
    );
    let mut socket = socket_at(&system.ws_url("/api/v1/ws"), &client.token).await;
    subscribe(&mut socket, &format!("alert:{id}"), None).await;
    let snapshot = frame(&mut socket).await;
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");

    // No events yet: the window is empty.
    let first = transition(&mut socket).await;
    assert_eq!(pair(&first), ("inactive".into(), "no_data".into()), "{first}");
    assert_eq!(first["value"], Value::Null);

    // Below the threshold, then above it for 5 s, then below again for 6 s.
    let sender = {
        let (system_url, token) = (system.url("/api/v1/events"), client.token.clone());
        let http = system.http.clone();
        tokio::spawn(async move {
            let mut sent = Vec::new();
            for (value, seconds) in [(50.0, 3.0), (90.0, 5.0), (50.0, 6.0)] {
                let started = OffsetDateTime::now_utc();
                while (OffsetDateTime::now_utc() - started).as_seconds_f64() < seconds {
                    let ts = next_half_second().await;
                    let event = json!({"name": "cpu", "ts": rfc3339(ts), "value": value, "labels": {"host": "a"}});
                    let response = http
                        .post(&system_url)
                        .bearer_auth(&token)
                        .json(&json!({ "events": [event] }))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200);
                    sent.push((ts, value));
                }
            }
            sent
        })
    };
    let mut seen = vec![first];
    for _ in 0..5 {
        seen.push(transition(&mut socket).await);
    }
    let sent = sender.await.unwrap();
    let pairs: Vec<(String, String)> = seen.iter().map(pair).collect();
    let want: Vec<(String, String)> = [
        ("inactive", "no_data"),
        ("no_data", "inactive"),
        ("inactive", "pending"),
        ("pending", "firing"),
        ("firing", "resolved"),
        ("resolved", "no_data"),
    ]
    .iter()
    .map(|(a, b)| ((*a).into(), (*b).into()))
    .collect();
    assert_eq!(pairs, want, "{seen:#?}");
    let versions: Vec<u64> = seen.iter().map(|t| t["version"].as_u64().unwrap()).collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    assert!(seen.iter().all(|t| t["rule_id"] == id.as_str() && t["group"] == ""));

    // `for`: pending held 2 s before firing (to within one interval).
    let held = seconds_between(&seen[2]["at"], &seen[3]["at"]);
    assert!((2.0..=2.0 + INTERVAL).contains(&held), "pending for {held} s");
    // Pending came with the first high value's first evaluation.
    let first_high = sent.iter().find(|(_, v)| *v == 90.0).unwrap().0;
    let to_pending = (at(&seen[2]) - first_high).as_seconds_f64();
    assert!(
        (0.0..=INTERVAL + 0.5).contains(&to_pending),
        "pending {to_pending} s after the first high value"
    );
    // `keep_firing_for`: the last high value leaves the 2 s window, then
    // the alert keeps firing 2 s more before it resolves.
    let last_high = sent.iter().rev().find(|(_, v)| *v == 90.0).unwrap().0;
    let to_resolved = (at(&seen[4]) - last_high).as_seconds_f64();
    assert!(
        (4.0..=4.0 + INTERVAL + 0.5).contains(&to_resolved),
        "resolved {to_resolved} s after the last high value"
    );
    assert_eq!(seen[3]["value"], json!(90.0));

    // The history says the same.
    let (status, history) = client.get(&format!("/api/v1/alerts/history?rule_id={id}")).await;
    assert_eq!(status, 200, "{history}");
    let from_history: Vec<Value> = history["transitions"].as_array().unwrap().clone();
    let strip = |t: &Value| {
        let mut t = t.clone();
        let o = t.as_object_mut().unwrap();
        o.remove("type");
        o.remove("topic");
        t
    };
    assert_eq!(
        from_history,
        seen.iter().map(strip).collect::<Vec<_>>(),
        "history and live frames agree"
    );
    let (_, instances) = client.get(&format!("/api/v1/alerts/instances?rule_id={id}")).await;
    let instances = instances["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 1, "{instances:?}");
    assert_eq!(instances[0]["state"], "no_data");
    assert_eq!(instances[0]["version"], seen[5]["version"]);

    // A subscriber that saw up to `firing` resumes with exactly the rest.
    drop(socket);
    let mut socket = socket_at(&system.ws_url("/api/v1/ws"), &client.token).await;
    subscribe(&mut socket, "alerts", seen[3]["version"].as_u64()).await;
    let rest = [transition(&mut socket).await, transition(&mut socket).await];
    assert_eq!(
        rest.iter().map(strip).collect::<Vec<_>>(),
        [strip(&seen[4]), strip(&seen[5])]
    );
}

#[tokio::test]
async fn a_group_by_rule_keeps_one_instance_per_group() {
    let system = system!(alerting());
    let client = Client::new(&system, "acme");
    let rule = client.create_rule(&rule("load", json!({"group_by": "host"}))).await;
    let id = rule["id"].as_str().unwrap();
    let mut states = BTreeMap::new();
    for _ in 0..20 {
        let ts = next_half_second().await;
        client
            .ingest(&[
                json!({"name": "load", "ts": rfc3339(ts), "value": 95.0, "labels": {"host": "web-1"}}),
                json!({"name": "load", "ts": rfc3339(ts), "value": 10.0, "labels": {"host": "web-2"}}),
            ])
            .await;
        let (_, body) = client.get(&format!("/api/v1/alerts/instances?rule_id={id}")).await;
        states = body["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["group"].as_str().unwrap().to_owned(),
                    i["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        if states.get("web-1").map(String::as_str) == Some("firing")
            && states.get("web-2").map(String::as_str) == Some("inactive")
        {
            break;
        }
    }
    assert_eq!(
        states,
        BTreeMap::from([("web-1".into(), "firing".into()), ("web-2".into(), "inactive".into())])
    );
    // Filtered by state.
    let (status, body) = client
        .get(&format!("/api/v1/alerts/instances?rule_id={id}&state=firing,pending"))
        .await;
    assert_eq!(status, 200, "{body}");
    let groups: Vec<&str> = body["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["group"].as_str().unwrap())
        .collect();
    assert_eq!(groups, ["web-1"]);
}

#[tokio::test]
async fn a_tenant_never_sees_another_tenants_rules_instances_history_or_frames() {
    let system = system!(alerting());
    let a = Client::new(&system, "acme");
    let b = Client::new(&system, "globex");
    let rule = a.create_rule(&rule("secret.cpu", json!({}))).await;
    let id = rule["id"].as_str().unwrap().to_owned();
    let mut b_socket = socket_at(&system.ws_url("/api/v1/ws"), &b.token).await;
    subscribe(&mut b_socket, "alerts", None).await;
    let snapshot = frame(&mut b_socket).await;
    assert_eq!(snapshot["instances"], json!([]), "{snapshot}");
    // A's rule goes no_data, then firing.
    let mut a_socket = socket_at(&system.ws_url("/api/v1/ws"), &a.token).await;
    subscribe(&mut a_socket, &format!("alert:{id}"), None).await;
    assert_eq!(pair(&transition(&mut a_socket).await).1, "no_data");
    let ts = next_half_second().await;
    a.send("secret.cpu", ts, 99.0, "x").await;
    assert_eq!(pair(&transition(&mut a_socket).await).1, "firing");

    for path in [
        format!("/api/v1/alerts/rules/{id}"),
        format!("/api/v1/alerts/instances?rule_id={id}"),
        format!("/api/v1/alerts/history?rule_id={id}"),
    ] {
        let (status, body) = b.get(&path).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (404, Some("not_found")),
            "{path}: {body}"
        );
    }
    let put = system
        .http
        .put(system.url(&format!("/api/v1/alerts/rules/{id}")))
        .bearer_auth(&b.token)
        .json(&json!({"version": 1, "name": "mine", "metric": "x", "aggregation": "max", "window_seconds": 5, "comparator": "gt", "threshold": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 404);
    let delete = system
        .http
        .delete(system.url(&format!("/api/v1/alerts/rules/{id}")))
        .bearer_auth(&b.token)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 404);
    for path in [
        "/api/v1/alerts/rules",
        "/api/v1/alerts/instances",
        "/api/v1/alerts/history",
    ] {
        let (status, body) = b.get(path).await;
        assert_eq!(status, 200, "{body}");
        let items = body.as_object().unwrap().values().find_map(Value::as_array).unwrap();
        assert!(items.is_empty(), "{path}: {body}");
    }
    // B's socket heard nothing of A's transitions, and cannot follow A's rule.
    if let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(2), futures::StreamExt::next(&mut b_socket)).await
        && m.is_text()
    {
        panic!("tenant B got a frame: {m}");
    }
    ws::send_json(
        &mut b_socket,
        &json!({"op": "subscribe", "id": "x", "topic": format!("alert:{id}")}),
    )
    .await;
    let mut refusal = frame(&mut b_socket).await;
    if refusal["type"] == "subscribed" {
        refusal = frame(&mut b_socket).await;
    }
    assert_eq!(
        (refusal["type"].as_str(), refusal["code"].as_str()),
        (Some("error"), Some("not_found")),
        "{refusal}"
    );
    // A's rule is untouched.
    let (_, again) = a.get(&format!("/api/v1/alerts/rules/{id}")).await;
    assert_eq!(again, rule);
}

#[tokio::test]
async fn bad_rules_and_stale_updates_are_refused_and_change_nothing() {
    // A 5 s interval, so that a window can be shorter than it.
    let system = system!(TestSystem::builder().analytics_env("SEXTANT_ANALYTICS__ALERTS__INTERVAL", "5s"));
    let client = Client::new(&system, "acme");
    let good = rule(
        "disk",
        json!({"window_seconds": 60, "annotations": {"runbook": "https://wiki/disk"}}),
    );
    let created = client.create_rule(&good).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let with = |field: &str, value: Value| {
        let mut r = good.clone();
        r[field] = value;
        r
    };
    let without = |field: &str| {
        let mut r = good.clone();
        r.as_object_mut().unwrap().remove(field);
        r
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        ("unknown aggregation", with("aggregation", json!("p42")), "aggregation"),
        ("unknown comparator", with("comparator", json!("above")), "comparator"),
        (
            "window shorter than the interval",
            with("window_seconds", json!(2)),
            "window",
        ),
        ("zero window", with("window_seconds", json!(0)), "window"),
        (
            "window past the longest",
            with("window_seconds", json!(86_401)),
            "window",
        ),
        ("negative for", with("for_seconds", json!(-5)), "for_seconds"),
        (
            "negative keep_firing_for",
            with("keep_firing_for_seconds", json!(-1)),
            "keep_firing_for_seconds",
        ),
        ("for past a week", with("for_seconds", json!(604_801)), "for"),
        ("threshold not a number", with("threshold", json!("high")), "threshold"),
        ("threshold missing", with("threshold", Value::Null), "threshold"),
        ("bad metric name", with("metric", json!("9lives")), "metric"),
        ("empty name", with("name", json!("")), "name"),
        ("missing metric", without("metric"), "metric"),
        ("empty group_by", with("group_by", json!("")), "group_by"),
        ("bad group_by", with("group_by", json!("a b")), "group_by"),
        (
            "bad filter op",
            with("filters", json!([{"label": "host", "op": "like", "values": ["a"]}])),
            "op",
        ),
        (
            "filter without values",
            with("filters", json!([{"label": "host", "op": "in", "values": []}])),
            "values",
        ),
        (
            "bad annotation key",
            with("annotations", json!({"run book": "x"})),
            "annotations",
        ),
        ("unknown field", with("severity", json!("page")), "severity"),
        ("version on create", with("version", json!(1)), "version"),
    ];
    for (what, body, field) in &cases {
        let (status, problem) = client.post("/api/v1/alerts/rules", body, None).await;
        assert_eq!(status, 400, "{what}: {problem}");
        assert!(
            matches!(problem["code"].as_str(), Some("invalid_argument" | "malformed_request")),
            "{what}: {problem}"
        );
        assert!(problem["detail"].as_str().unwrap().contains(field), "{what}: {problem}");
    }
    // A malformed body stores nothing either.
    let response = system
        .http
        .post(system.url("/api/v1/alerts/rules"))
        .bearer_auth(&client.token)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let (_, rules) = client.get("/api/v1/alerts/rules").await;
    assert_eq!(rules["rules"], json!([created.clone()]), "only the good rule exists");

    // Updates: each bad one refused, the rule unchanged.
    let put = |body: Value, if_match: Option<&str>| {
        let mut request = system
            .http
            .put(system.url(&format!("/api/v1/alerts/rules/{id}")))
            .bearer_auth(&client.token)
            .json(&body);
        if let Some(v) = if_match {
            request = request.header("if-match", v);
        }
        async move {
            let response = request.send().await.unwrap();
            let etag = response.headers().get("etag").map(|v| v.to_str().unwrap().to_owned());
            (
                response.status().as_u16(),
                etag,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let renamed = with("name", json!("disk nearly full"));
    let (status, _, problem) = put(renamed.clone(), None).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (400, Some("invalid_argument")),
        "no version: {problem}"
    );
    let (status, _, problem) = put(with("window_seconds", json!(1)), Some("\"1\"")).await;
    assert_eq!(status, 400, "{problem}");
    let (_, unchanged) = client.get(&format!("/api/v1/alerts/rules/{id}")).await;
    assert_eq!(unchanged, created);
    // A good update moves the version on…
    let mut v1 = renamed.clone();
    v1["version"] = json!(1);
    let (status, etag, updated) = put(v1.clone(), None).await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!((updated["version"].as_u64(), etag.as_deref()), (Some(2), Some("\"2\"")));
    assert_eq!(updated["name"], "disk nearly full");
    // …and the same change made from version 1 again is stale.
    let mut stale = with("threshold", json!(1.0));
    stale["version"] = json!(1);
    let (status, _, problem) = put(stale, None).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("conflict")), "{problem}");
    let (status, _, problem) = put(with("threshold", json!(1.0)), Some("\"1\"")).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (412, Some("precondition_failed")),
        "{problem}"
    );
    let (_, now) = client.get(&format!("/api/v1/alerts/rules/{id}")).await;
    assert_eq!(now, updated, "stale updates changed nothing");
    let (status, _, _) = put(with("threshold", json!(1.0)), Some("W/\"2\"")).await;
    assert_eq!(status, 200);

    // Unknown and malformed ids are 404; deleting twice is 404 the second time.
    for path in [
        "/api/v1/alerts/rules/not-a-uuid",
        "/api/v1/alerts/rules/0193a9d1-0000-7000-8000-000000000000",
    ] {
        let (status, body) = client.get(path).await;
        assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "{path}");
    }
    let delete = || {
        system
            .http
            .delete(system.url(&format!("/api/v1/alerts/rules/{id}")))
            .bearer_auth(&client.token)
            .send()
    };
    assert_eq!(delete().await.unwrap().status(), 204);
    assert_eq!(delete().await.unwrap().status(), 404);
    let (status, _) = client.get(&format!("/api/v1/alerts/history?rule_id={id}")).await;
    assert_eq!(status, 404);
    // Bad list parameters.
    for path in [
        "/api/v1/alerts/instances?state=burning",
        "/api/v1/alerts/history?start=2026-01-02T00:00:00Z&end=2026-01-01T00:00:00Z",
        "/api/v1/alerts/rules?page_size=0",
        "/api/v1/alerts/history?cursor=abc",
    ] {
        let (status, body) = client.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
    }
}
