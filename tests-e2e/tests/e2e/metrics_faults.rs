//! Metrics survive their faults: the analytics service killed with
//! `kill -9` in the middle of ingest batches, RabbitMQ restarted under live
//! charts; and raw and rollup partitions expire on time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use sextant_e2e::TestSystem;
use sextant_e2e::local::{self, LocalRabbit};
use time::OffsetDateTime;

use crate::metrics::{Client, Ev, base, check, expected, rfc3339, to_json};
use crate::metrics_live::{frame, socket_at, subscribe};
use crate::system;

const BATCHES: usize = 24;
const PER_BATCH: usize = 1500;

/// Batch `b`: events of `ingest.fault`, each labelled with its batch.
fn fault_batch(b: usize, base: OffsetDateTime) -> Vec<Value> {
    (0..PER_BATCH)
        .map(|i| {
            Ev {
                metric: "ingest.fault".into(),
                ts: base + time::Duration::milliseconds((b * PER_BATCH + i) as i64 * 37),
                value: i as f64,
                labels: BTreeMap::from([("batch".into(), format!("{b:03}"))]),
            }
            .json()
        })
        .collect()
}

#[tokio::test]
async fn analytics_killed_mid_batch_loses_no_acknowledged_batch_and_retries_store_nothing_twice() {
    let mut system = system!();
    let base = base();
    let port = system.analytics.addr.port().to_string();
    let sent = Arc::new(AtomicUsize::new(0));
    // Two writers, each retrying its batch with the same key until it is answered.
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (http, url, token, sent) = (
                system.http.clone(),
                system.url("/api/v1/events"),
                system.token("acme", "alice"),
                sent.clone(),
            );
            tokio::spawn(async move {
                let mut replayed = 0;
                for b in (w..BATCHES).step_by(2) {
                    let body = json!({ "events": fault_batch(b, base) });
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
                    loop {
                        let response = http
                            .post(&url)
                            .bearer_auth(&token)
                            .header("Idempotency-Key", format!("fault-{b}"))
                            .json(&body)
                            .send()
                            .await;
                        if let Ok(response) = response
                            && response.status() == 200
                        {
                            let answer: Value = response.json().await.unwrap();
                            assert_eq!(answer["accepted"], PER_BATCH, "{answer}");
                            if answer["replayed"] == true {
                                replayed += 1;
                            }
                            sent.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        assert!(tokio::time::Instant::now() < deadline, "batch {b} never answered");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                replayed
            })
        })
        .collect();
    while sent.load(Ordering::SeqCst) < 6 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    system.analytics.signal(libc::SIGKILL);
    system.analytics.wait_exit(Duration::from_secs(5));
    let killed_at = sent.load(Ordering::SeqCst);
    assert!(killed_at < BATCHES, "the kill came while batches were still going in");
    system.analytics = system.spawn_analytics("analytics-restarted", &[("SEXTANT_ANALYTICS__GRPC__PORT", &port)]);
    let mut replayed = 0;
    for writer in writers {
        replayed += writer.await.unwrap();
    }
    // Every batch is there exactly once: whole, never partial, never twice.
    let client = Client::new(&system, "acme");
    let end = base + time::Duration::hours(1);
    let answer = client
        .query(&json!({
            "metric": "ingest.fault", "aggregations": ["count", "sum"], "bucket_seconds": 3600,
            "start": rfc3339(base), "end": rfc3339(end), "group_by": "batch",
        }))
        .await;
    let counts: BTreeMap<String, u64> = answer["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let count = s["buckets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["count"].as_u64().unwrap())
                .sum();
            (s["group"].as_str().unwrap().to_owned(), count)
        })
        .collect();
    let want: BTreeMap<String, u64> = (0..BATCHES).map(|b| (format!("{b:03}"), PER_BATCH as u64)).collect();
    assert_eq!(
        counts, want,
        "killed after {killed_at} batches, {replayed} answered from their key"
    );
}

#[tokio::test]
async fn live_charts_miss_nothing_across_a_rabbitmq_restart() {
    if !local::available() {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "needs local server packages"
        );
        eprintln!("SKIPPED: needs root and a local RabbitMQ server package");
        return;
    }
    let rabbit = LocalRabbit::start().await.expect("starting a throwaway RabbitMQ");
    let system = system!(
        TestSystem::builder()
            .amqp(rabbit.url())
            .database(
                std::env::var(sextant_e2e::infra::DATABASE_URL_ENV)
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
            )
            .analytics_env("SEXTANT_ANALYTICS__LIVE__POLL", "500ms")
    );
    // The chart is on the second replica; events go in through the first.
    let analytics_2 = system.spawn_analytics("analytics-2", &[]);
    let gateway_2 = system.spawn_gateway("gateway-2", &analytics_2);
    let token = system.token("acme", "alice");
    let client = Client::new(&system, "acme");
    let spec = json!({
        "metric": "through.restart", "aggregations": ["count", "sum"], "bucket_seconds": 60,
        "window_seconds": 3600,
    });
    let mut socket = socket_at(&format!("ws://{}/api/v1/ws", gateway_2.addr), &token).await;
    subscribe(&mut socket, &spec, None).await;
    assert_eq!(frame(&mut socket).await["type"], "snapshot");

    let minute = |back: i64| {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        OffsetDateTime::from_unix_timestamp(now / 60 * 60 - back * 60).unwrap()
    };
    let one = |m: OffsetDateTime, v: f64| json!({"name": "through.restart", "ts": rfc3339(m + time::Duration::seconds(5)), "value": v});
    let mut chart: BTreeMap<String, Value> = BTreeMap::new();
    let mut version = 0;
    let mut take = async |socket: &mut sextant_e2e::ws::Socket, until: u64, chart: &mut BTreeMap<String, Value>| {
        while version < until {
            let update = frame(socket).await;
            assert_eq!(update["type"], "update", "{update}");
            let v = update["version"].as_u64().unwrap();
            assert!(v > version);
            version = v;
            for bucket in update["series"][0]["buckets"].as_array().unwrap() {
                chart.insert(bucket["start"].as_str().unwrap().to_owned(), bucket.clone());
            }
        }
    };
    client.ingest(&[one(minute(20), 1.0)]).await;
    take(&mut socket, 1, &mut chart).await;

    rabbit.stop().await.unwrap();
    // Ingest does not need the broker; the chart catches up by polling.
    client.ingest(&[one(minute(15), 2.0)]).await;
    client.ingest(&[one(minute(20), 3.0)]).await;
    take(&mut socket, 3, &mut chart).await;

    rabbit.start_again().await.unwrap();
    client.ingest(&[one(minute(10), 4.0)]).await;
    take(&mut socket, 4, &mut chart).await;

    let now = OffsetDateTime::now_utc();
    let answer = client
        .query(&json!({
            "metric": "through.restart", "aggregations": ["count", "sum"], "bucket_seconds": 60,
            "start": rfc3339(now - time::Duration::hours(1)), "end": rfc3339(now + time::Duration::minutes(1)),
        }))
        .await;
    let fresh: BTreeMap<String, Value> = answer["series"][0]["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["start"].as_str().unwrap().to_owned(), b.clone()))
        .collect();
    assert_eq!(chart, fresh, "the chart holds every change");
    drop(analytics_2);
}

/// Partitions of the analytics database's `parent`, by name.
async fn partitions(system: &TestSystem, parent: &str) -> Vec<String> {
    use sqlx::Connection;
    let url = sextant_e2e::infra::database_url(&system.admin_url, &format!("e2e_{}_analytics", system.id));
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = $1::regclass ORDER BY 1",
    )
    .bind(parent)
    .fetch_all(&mut conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn expired_partitions_are_dropped_and_the_remaining_range_answers_correctly() {
    let hourly = [
        ("SEXTANT_ANALYTICS__RETENTION__RAW_PARTITION", "1h"),
        ("SEXTANT_ANALYTICS__RETENTION__ROLLUP_PARTITION", "1h"),
        ("SEXTANT_ANALYTICS__RETENTION__CHECK_INTERVAL", "1s"),
    ];
    let mut builder = TestSystem::builder()
        .analytics_env("SEXTANT_ANALYTICS__RETENTION__RAW", "4h")
        .analytics_env("SEXTANT_ANALYTICS__RETENTION__ROLLUP", "5h");
    for (k, v) in hourly {
        builder = builder.analytics_env(k, v);
    }
    let mut system = system!(builder);
    let client = Client::new(&system, "acme");
    let now = OffsetDateTime::now_utc();
    let hour = OffsetDateTime::from_unix_timestamp(now.unix_timestamp() / 3600 * 3600).unwrap();
    let h = |n: i64| hour - time::Duration::hours(n);
    // Events 3, 2 and 1 hours back (and this hour), 40 each.
    let mut all = Vec::new();
    for back in [3, 2, 1, 0] {
        let start = h(back) + time::Duration::minutes(1);
        let span = if back == 0 {
            ((now - start).whole_seconds() - 5).clamp(1, 50)
        } else {
            50
        };
        all.extend(crate::metrics::events("kept", start, span, 40));
    }
    assert_eq!(client.ingest(&to_json(&all)).await["accepted"], 160);
    let raw = |from: OffsetDateTime| {
        json!({
            "metric": "kept", "aggregations": ["count", "sum", "min", "max"], "bucket_seconds": 10,
            "start": rfc3339(from), "end": rfc3339(now + time::Duration::minutes(1)),
        })
    };
    let rolled = |from: OffsetDateTime| {
        json!({
            "metric": "kept", "aggregations": ["count", "sum", "min", "max", "p50"], "bucket_seconds": 60,
            "start": rfc3339(from), "end": rfc3339(now + time::Duration::minutes(1)),
        })
    };
    let end = now + time::Duration::minutes(1);
    check(
        &client.query(&raw(h(4))).await,
        &expected(&all, h(4), end, 10, |_| true, None),
    );
    check(
        &client.query(&rolled(h(4))).await,
        &expected(&all, h(4), end, 60, |_| true, None),
    );
    let before = partitions(&system, "events").await;
    assert!(before.len() >= 4, "{before:?}");
    drop(client);

    // Shorter retention: raw 1 h, rollups 2 h.
    let port = system.analytics.addr.port().to_string();
    system.analytics.terminate();
    system.analytics.wait_exit(Duration::from_secs(10));
    let mut settings = vec![
        ("SEXTANT_ANALYTICS__GRPC__PORT", port.as_str()),
        ("SEXTANT_ANALYTICS__RETENTION__RAW", "1h"),
        ("SEXTANT_ANALYTICS__RETENTION__ROLLUP", "2h"),
    ];
    settings.extend(hourly);
    system.analytics = system.spawn_analytics("analytics-short", &settings);
    let client = Client::new(&system, "acme");

    let raw_left = partitions(&system, "events").await;
    let first_kept = format!("events_p{}", h(1).unix_timestamp());
    assert!(
        raw_left.iter().all(|p| *p >= first_kept),
        "raw partitions ending an hour ago or earlier are gone: {raw_left:?}"
    );
    let rollups_left = partitions(&system, "rollups_1m").await;
    let first_rollup = format!("rollups_1m_p{}", h(2).unix_timestamp());
    assert!(rollups_left.iter().all(|p| *p >= first_rollup), "{rollups_left:?}");
    // What remains answers exactly: raw from an hour back, rollups from two.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let answer = loop {
        let (status, body) = client.post("/api/v1/metrics/query", &raw(h(4)), None).await;
        if status == 200 {
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    check(&answer, &expected(&all, h(1), end, 10, |_| true, None));
    check(
        &client.query(&rolled(h(4))).await,
        &expected(&all, h(2), end, 60, |_| true, None),
    );
}
