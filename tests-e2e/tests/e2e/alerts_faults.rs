//! Alert evaluation survives losing its replica: with two analytics
//! replicas, the one evaluating a rule is killed with `kill -9`; the other
//! takes over, and the history is exactly what one evaluator that never
//! stopped would have written — every transition once, none missing.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::alerts::{alerting, next_half_second, rule};
use crate::metrics::{Client, rfc3339};
use crate::system;

const EVALUATIONS: &str = "sextant_analytics_alert_evaluations_total";

/// The state at T of a rule `max > 80` over a 1 s window, from the events sent
/// (one per half second, so the window [T − 1 s, T) holds the one at T − 0.5 s).
fn expected_state(sent: &BTreeMap<i128, f64>, t: i128) -> &'static str {
    match sent.get(&(t - 500_000_000)) {
        None => "no_data",
        Some(v) if *v > 80.0 => "firing",
        Some(_) => "ok",
    }
}

#[tokio::test]
async fn the_evaluating_replica_killed_mid_run_is_replaced_and_the_history_has_no_gap_or_repeat() {
    let system = system!(alerting());
    let second = system.spawn_analytics("analytics-2", &[("SEXTANT_ANALYTICS__ALERTS__INTERVAL", "1s")]);
    // Each replica behind a gateway of its own, so one is reachable whichever dies.
    let gateway_2 = system.spawn_gateway("gateway-2", &second);
    let client = Client::new(&system, "acme");
    let created = client.create_rule(&rule("flip", json!({"window_seconds": 1}))).await;
    let id = created["id"].as_str().unwrap().to_owned();

    // Values for 16 s, one every second at x.5: high, low and absent in turn,
    // through the gateway in front of a replica that is alive.
    let pattern = [
        Some(90.0),
        Some(90.0),
        Some(10.0),
        None,
        Some(95.0),
        Some(10.0),
        Some(10.0),
        None,
    ];
    let mut sent: BTreeMap<i128, f64> = BTreeMap::new();
    let mut killed = None;
    let mut gateway = system.gateway.addr.to_string();
    for step in 0..16 {
        let ts = next_half_second().await;
        if let Some(value) = pattern[step % pattern.len()] {
            let event = json!({"name": "flip", "ts": rfc3339(ts), "value": value, "labels": {"host": "a"}});
            let response = system
                .http
                .post(format!("http://{gateway}/api/v1/events"))
                .bearer_auth(&client.token)
                .json(&json!({ "events": [event] }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
            sent.insert(ts.unix_timestamp_nanos(), value);
        }
        if step == 6 {
            // Kill whichever replica has been evaluating.
            let first = system.metric(&system.analytics, EVALUATIONS).await;
            let other = system.metric(&second, EVALUATIONS).await;
            assert!(first + other > 0.0, "no replica evaluated the rule");
            if first > 0.0 {
                system.analytics.signal(libc::SIGKILL);
                killed = Some("analytics");
                gateway = gateway_2.addr.to_string();
            } else {
                second.signal(libc::SIGKILL);
                killed = Some("analytics-2");
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let killed = killed.unwrap();
    eprintln!("killed the evaluating replica: {killed}");
    let survivor = if killed == "analytics" {
        &second
    } else {
        &system.analytics
    };
    let get = |path: String| {
        let request = system
            .http
            .get(format!("http://{gateway}{path}"))
            .bearer_auth(&client.token);
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    // The survivor goes on: wait until it evaluated past the last event.
    let last_event = *sent.keys().last().unwrap();
    let mut history: Vec<Value> = Vec::new();
    let mut last_evaluated = 0i128;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Through the gateway in front of the survivor.
        let (status, body) = get(format!("/api/v1/alerts/instances?rule_id={id}")).await;
        if status != 200 {
            continue;
        }
        if let Some(at) = body["instances"][0]["last_evaluated_at"].as_str() {
            last_evaluated = OffsetDateTime::parse(at, &Rfc3339).unwrap().unix_timestamp_nanos();
        }
        if last_evaluated >= last_event + 2_500_000_000 {
            let (_, body) = get(format!("/api/v1/alerts/history?rule_id={id}")).await;
            history = body["transitions"].as_array().unwrap().clone();
            break;
        }
    }
    assert!(
        last_evaluated >= last_event + 2_500_000_000,
        "evaluation did not go on after the kill"
    );
    assert!(
        system.metric(survivor, EVALUATIONS).await > 0.0,
        "the survivor evaluated"
    );

    // What one evaluator would have written, T by T, from the first evaluation.
    let at = |t: &Value| {
        OffsetDateTime::parse(t["at"].as_str().unwrap(), &Rfc3339)
            .unwrap()
            .unix_timestamp_nanos()
    };
    let first_t = at(&history[0]);
    let mut want: Vec<(i128, String, String)> = Vec::new();
    let mut state = "inactive";
    let mut t = first_t;
    while t <= last_evaluated {
        let next = match (expected_state(&sent, t), state) {
            ("no_data", _) => "no_data",
            ("firing", _) => "firing",
            ("ok", "firing") => "resolved",
            ("ok", "resolved") => "resolved",
            ("ok", _) => "inactive",
            _ => unreachable!(),
        };
        if next != state {
            want.push((t, state.to_owned(), next.to_owned()));
            state = next;
        }
        t += 1_000_000_000;
    }
    let got: Vec<(i128, String, String)> = history
        .iter()
        .map(|h| {
            (
                at(h),
                h["from"].as_str().unwrap().to_owned(),
                h["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(got, want, "killed {killed}; history {history:#?}");
    assert!(got.len() >= 8, "the run crossed enough transitions: {got:?}");
}

#[tokio::test]
async fn rules_spread_over_the_replicas_and_the_one_left_takes_them_all() {
    const CLAIMED: &str = "sextant_analytics_alert_rules_claimed";
    let system = system!(alerting());
    let client = Client::new(&system, "acme");
    for i in 0..10 {
        client.create_rule(&rule(&format!("spread.{i}"), json!({}))).await;
    }
    let mut second = system.spawn_analytics("analytics-2", &[("SEXTANT_ANALYTICS__ALERTS__INTERVAL", "1s")]);
    // Within a few intervals each replica holds half the rules.
    let mut held = (0.0, 0.0);
    for _ in 0..100 {
        held = (
            system.metric(&system.analytics, CLAIMED).await,
            system.metric(&second, CLAIMED).await,
        );
        if held == (5.0, 5.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(held, (5.0, 5.0), "rules held by (the first, the second) replica");

    // The second stops: the first takes every rule over.
    second.terminate();
    assert!(second.wait_exit(Duration::from_secs(20)).is_some());
    let mut all = 0.0;
    for _ in 0..100 {
        all = system.metric(&system.analytics, CLAIMED).await;
        if all == 10.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(all, 10.0, "the replica left holds every rule");
}
