//! Webhook notifications of alert rules: a receiver started here gets the
//! firing and the resolved notification, each once, signed with the rule's
//! secret; a receiver that fails twice gets it on the third attempt (the
//! queue's retries), with the delivery visible as a job; a target off the
//! allow-list is refused when the rule is saved.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::alerts::{alerting, next_half_second, rule};
use crate::metrics::Client;
use crate::system;

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Delivery {
    signature: String,
    delivery: String,
    attempt: String,
    body: String,
}

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Delivery>>>,
    /// Requests to answer 500 before answering 200.
    failures: Arc<Mutex<usize>>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    r.got.lock().unwrap().push(Delivery {
        signature: header("x-sextant-signature"),
        delivery: header("x-sextant-delivery"),
        attempt: header("x-sextant-attempt"),
        body: String::from_utf8(body.to_vec()).unwrap(),
    });
    let mut failures = r.failures.lock().unwrap();
    if *failures > 0 {
        *failures -= 1;
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

async fn start(failures: usize) -> (Receiver, SocketAddr) {
    let receiver = Receiver {
        failures: Arc::new(Mutex::new(failures)),
        ..Default::default()
    };
    let app = Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (receiver, addr)
}

fn signed(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Waits until the receiver holds `n` requests (or 20 s pass); returns them.
async fn wait_for(receiver: &Receiver, n: usize) -> Vec<Delivery> {
    for _ in 0..100 {
        if receiver.got.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    receiver.got.lock().unwrap().clone()
}

const SECRET: &str = "a-secret-of-24-characters";

#[tokio::test]
async fn firing_and_resolved_are_delivered_once_each_signed_and_retried_until_taken() {
    let system = system!(alerting());
    let client = Client::new(&system, "acme");
    let (steady, steady_addr) = start(0).await;
    let (flaky, flaky_addr) = start(2).await;
    let hooked = |metric: &str, addr: SocketAddr| {
        rule(
            metric,
            json!({"webhook": {"url": format!("http://{addr}/hook"), "secret": SECRET},
                   "annotations": {"summary": "too hot"}}),
        )
    };
    let created = client.create_rule(&hooked("hook.steady", steady_addr)).await;
    assert_eq!(
        created["webhook"],
        json!({"url": format!("http://{steady_addr}/hook")}),
        "no secret in answers"
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let flaky_rule = client.create_rule(&hooked("hook.flaky", flaky_addr)).await;

    // Both fire (a value above 80 for 2 s), then the steady one resolves.
    for _ in 0..4 {
        let ts = next_half_second().await;
        client.send("hook.steady", ts, 95.0, "a").await;
        client.send("hook.flaky", ts, 95.0, "a").await;
    }
    for _ in 0..8 {
        let ts = next_half_second().await;
        client.send("hook.steady", ts, 5.0, "a").await;
    }
    let got = wait_for(&steady, 2).await;
    // Nothing more arrives (no duplicate of either).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got_after = steady.got.lock().unwrap().clone();
    assert_eq!(got_after.len(), 2, "{got_after:#?}");
    let bodies: Vec<Value> = got.iter().map(|d| serde_json::from_str(&d.body).unwrap()).collect();
    // The first evaluation may come before or after the first event.
    let pairs: Vec<(&str, &str)> = bodies
        .iter()
        .map(|b| (b["from"].as_str().unwrap(), b["to"].as_str().unwrap()))
        .collect();
    assert!(
        matches!(pairs[..], [("no_data" | "inactive", "firing"), ("firing", "resolved")]),
        "{bodies:#?}"
    );
    for (d, b) in got.iter().zip(&bodies) {
        assert_eq!(d.signature, signed(SECRET, &d.body), "a valid signature");
        assert_ne!(d.signature, signed("another-secret-entirely", &d.body));
        assert_eq!(d.attempt, "1");
        assert_eq!(b["rule_id"], id.as_str());
        assert_eq!(b["rule_name"], "hook.steady too high");
        assert_eq!(b["annotations"], json!({"summary": "too hot"}));
    }
    assert_eq!(bodies[0]["value"], json!(95.0));
    assert_ne!(got[0].delivery, got[1].delivery, "one delivery per notification");
    // Each notification's delivery is a job, named in the history.
    let (_, history) = client.get(&format!("/api/v1/alerts/history?rule_id={id}")).await;
    let jobs: Vec<&str> = history["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["notification_job_id"].as_str())
        .collect();
    assert_eq!(jobs, [got[0].delivery.as_str(), got[1].delivery.as_str()], "{history}");

    // The flaky receiver: refused twice, taken on the third attempt. (Its
    // data stops after it fires, so the end of firing is delivered later.)
    let got: Vec<Delivery> = wait_for(&flaky, 3)
        .await
        .into_iter()
        .filter(|d| d.body.contains(r#""to":"firing""#))
        .collect();
    assert_eq!(
        got.iter().map(|d| d.attempt.as_str()).collect::<Vec<_>>(),
        ["1", "2", "3"],
        "{got:#?}"
    );
    assert!(
        got.iter()
            .all(|d| d.delivery == got[0].delivery && d.body == got[0].body)
    );
    assert!(got.iter().all(|d| d.signature == signed(SECRET, &d.body)));
    let job_id = &got[0].delivery;
    let mut job = Value::Null;
    for _ in 0..50 {
        let (_, j) = client.get(&format!("/api/v1/jobs/{job_id}")).await;
        job = j;
        if job["status"] == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        (job["kind"].as_str(), job["status"].as_str()),
        (Some("notify"), Some("succeeded")),
        "{job}"
    );
    assert_eq!(job["attempt"], 3, "{job}");
    assert_eq!(job["errors"].as_array().map(Vec::len), Some(2), "{job}");
    assert_eq!(job["result"], json!({"status": 204}));
    let (_, history) = client
        .get(&format!(
            "/api/v1/alerts/history?rule_id={}",
            flaky_rule["id"].as_str().unwrap()
        ))
        .await;
    let firing = history["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["to"] == "firing")
        .unwrap()
        .clone();
    assert_eq!(firing["notification_job_id"], job_id.as_str());
}

#[tokio::test]
async fn a_webhook_off_the_allow_list_or_without_a_secret_is_refused_and_nothing_is_saved() {
    let system = system!(alerting());
    let client = Client::new(&system, "acme");
    let with_hook = |hook: Value| rule("cpu", json!({"webhook": hook}));
    for (what, hook, needle) in [
        (
            "another host",
            json!({"url": "http://10.1.2.3/hook", "secret": SECRET}),
            "allow-list",
        ),
        (
            "a look-alike host",
            json!({"url": "http://127.0.0.1.nip.io/hook", "secret": SECRET}),
            "allow-list",
        ),
        (
            "localhost by name",
            json!({"url": "http://localhost:9/hook", "secret": SECRET}),
            "allow-list",
        ),
        (
            "not http",
            json!({"url": "file:///etc/passwd", "secret": SECRET}),
            "http",
        ),
        (
            "credentials",
            json!({"url": "http://u:p@127.0.0.1/hook", "secret": SECRET}),
            "credentials",
        ),
        ("no secret", json!({"url": "http://127.0.0.1:9/hook"}), "secret"),
        (
            "a short secret",
            json!({"url": "http://127.0.0.1:9/hook", "secret": "short"}),
            "secret",
        ),
        ("no url", json!({"secret": SECRET}), "url"),
    ] {
        let (status, problem) = client.post("/api/v1/alerts/rules", &with_hook(hook), None).await;
        assert_eq!(status, 400, "{what}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(needle),
            "{what}: {problem}"
        );
    }
    let (_, rules) = client.get("/api/v1/alerts/rules").await;
    assert_eq!(rules["rules"], json!([]));
    // Nor can a client send a notification itself: `notify` is internal.
    let notify = json!({"url": "http://127.0.0.1:9/hook", "body": "{}", "signature": "0".repeat(64)});
    for body in [
        json!({"kind": "notify", "payload": notify}),
        json!({"kind": "batch", "payload": {"children": [{"kind": "notify", "payload": notify}]}}),
    ] {
        let (status, problem) = client.post("/api/v1/jobs", &body, None).await;
        assert_eq!(status, 400, "{problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains("unknown kind"),
            "{problem}"
        );
    }
    // A rule with an allowed webhook; an update that leaves the secret out keeps it.
    let created = client
        .create_rule(&with_hook(json!({"url": "http://127.0.0.1:9/hook", "secret": SECRET})))
        .await;
    let mut update = with_hook(json!({"url": "http://127.0.0.1:10/hook"}));
    update["version"] = json!(1);
    let response = system
        .http
        .put(system.url(&format!("/api/v1/alerts/rules/{}", created["id"].as_str().unwrap())))
        .bearer_auth(&client.token)
        .json(&update)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let updated: Value = response.json().await.unwrap();
    assert_eq!(updated["webhook"], json!({"url": "http://127.0.0.1:10/hook"}));
}

#[tokio::test]
async fn a_firing_alert_whose_data_stops_keeps_firing_for_keep_firing_for_and_its_end_is_delivered() {
    let system = system!(alerting());
    let client = Client::new(&system, "acme");
    let (receiver, addr) = start(0).await;
    let spec = rule(
        "hook.silent",
        json!({"keep_firing_for_seconds": 3,
               "webhook": {"url": format!("http://{addr}/hook"), "secret": SECRET}}),
    );
    let id = client.create_rule(&spec).await["id"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        let ts = next_half_second().await;
        client.send("hook.silent", ts, 95.0, "a").await;
    }
    // Then nothing: the 2 s window empties, and 3 s later the alert ends.
    let got = wait_for(&receiver, 2).await;
    let bodies: Vec<Value> = got.iter().map(|d| serde_json::from_str(&d.body).unwrap()).collect();
    let pairs: Vec<(&str, &str)> = bodies
        .iter()
        .map(|b| (b["from"].as_str().unwrap(), b["to"].as_str().unwrap()))
        .collect();
    assert!(
        matches!(pairs[..], [(_, "firing"), ("firing", "no_data")]),
        "{bodies:#?}"
    );
    assert!(got.iter().all(|d| d.signature == signed(SECRET, &d.body)));
    assert_eq!(bodies[1]["value"], Value::Null);

    // The history agrees: it kept firing for keep_firing_for after the last event.
    let (_, history) = client.get(&format!("/api/v1/alerts/history?rule_id={id}")).await;
    let transitions = history["transitions"].as_array().unwrap();
    let ended = transitions
        .iter()
        .find(|t| t["to"] == "no_data" && t["from"] == "firing")
        .unwrap();
    let (_, instances) = client.get(&format!("/api/v1/alerts/instances?rule_id={id}")).await;
    assert_eq!(instances["instances"][0]["state"], "no_data", "{instances}");
    let last_event = bodies[0]["at"].as_str().unwrap().to_owned();
    let at = |s: &str| time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap();
    let kept = at(ended["at"].as_str().unwrap()) - at(&last_event);
    // Fired at T0; the window (2 s) held data until about T0 + 3 s; ended 3 s after that.
    assert!(
        kept >= time::Duration::seconds(5),
        "ended {kept} after firing: {history}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.got.lock().unwrap().len(), 2, "nothing more");
}

#[tokio::test]
async fn notifications_go_with_the_history_they_belong_to() {
    use sqlx::Connection as _;
    let system = system!(alerting().analytics_env("SEXTANT_ANALYTICS__RETENTION__CHECK_INTERVAL", "1s"));
    let client = Client::new(&system, "acme");
    let (receiver, addr) = start(0).await;
    let hooked = rule(
        "hook.old",
        json!({"webhook": {"url": format!("http://{addr}/hook"), "secret": SECRET}}),
    );
    client.create_rule(&hooked).await;
    let ts = next_half_second().await;
    client.send("hook.old", ts, 95.0, "a").await;
    wait_for(&receiver, 1).await;

    // The transitions grow old (as if 100 days passed): the upkeep prunes
    // them, and their notifications with them.
    let url = sextant_e2e::infra::database_url(&system.admin_url, &format!("e2e_{}_analytics", system.id));
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    let aged: Vec<i64> = sqlx::query_scalar(
        "UPDATE alert_history SET at = at - interval '100 days' WHERE tenant = 'acme' RETURNING version",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    // The aged transitions' rows left in (alert_history, alert_notifications).
    let left_of = async |db: &mut sqlx::PgConnection| {
        let mut left = [0i64; 2];
        for (i, table) in ["alert_history", "alert_notifications"].iter().enumerate() {
            left[i] = sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE version = ANY($1)"))
                .bind(&aged)
                .fetch_one(&mut *db)
                .await
                .unwrap();
        }
        (left[0], left[1])
    };
    let mut left = left_of(&mut db).await;
    assert!(left.1 >= 1, "a notification of an aged transition");
    for _ in 0..100 {
        left = left_of(&mut db).await;
        if left == (0, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, (0, 0), "(history, notifications) of the aged transitions left");
}
