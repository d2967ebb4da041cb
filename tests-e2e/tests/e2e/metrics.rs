//! Metrics through the gateway, as a dashboard uses them: ingest batches
//! (with per-item rejections), time-bucketed queries checked against values
//! computed here from the same events, the metric and label-value lists,
//! and tenant isolation.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sextant_e2e::TestSystem;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::system;

/// The sketch's documented relative error.
pub(crate) const RELATIVE_ERROR: f64 = 0.01;

pub(crate) struct Client<'a> {
    pub system: &'a TestSystem,
    pub token: String,
}

impl<'a> Client<'a> {
    pub fn new(system: &'a TestSystem, tenant: &str) -> Self {
        Self {
            system,
            token: system.token(tenant, "alice"),
        }
    }

    pub async fn post(&self, path: &str, body: &Value, key: Option<&str>) -> (u16, Value) {
        let mut request = self
            .system
            .http
            .post(self.system.url(path))
            .bearer_auth(&self.token)
            .json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .system
            .http
            .get(self.system.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Ingests and expects a 200; returns the answer.
    pub async fn ingest(&self, events: &[Value]) -> Value {
        let (status, body) = self.post("/api/v1/events", &json!({ "events": events }), None).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn query(&self, query: &Value) -> Value {
        let (status, body) = self.post("/api/v1/metrics/query", query, None).await;
        assert_eq!(status, 200, "{query} → {body}");
        body
    }

    /// Count of every stored event of `metric` in `[start, end)` (one bucket).
    pub async fn stored(&self, metric: &str, start: OffsetDateTime, end: OffsetDateTime) -> u64 {
        let body = self
            .query(&json!({
                "metric": metric, "aggregations": ["count"],
                "bucket_seconds": (end - start).whole_seconds(),
                "start": rfc3339(start), "end": rfc3339(end),
            }))
            .await;
        body["series"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["buckets"].as_array().unwrap().iter())
            .map(|b| b["count"].as_u64().unwrap())
            .sum()
    }
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

/// The top of the hour three hours ago: a base every ingest window accepts.
pub(crate) fn base() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    let hour = now.unix_timestamp() / 3600 * 3600;
    OffsetDateTime::from_unix_timestamp(hour - 3 * 3600).unwrap()
}

/// An event as the test keeps it.
#[derive(Debug, Clone)]
pub(crate) struct Ev {
    pub metric: String,
    pub ts: OffsetDateTime,
    pub value: f64,
    pub labels: BTreeMap<String, String>,
}

impl Ev {
    pub fn json(&self) -> Value {
        json!({ "name": self.metric, "ts": rfc3339(self.ts), "value": self.value, "labels": self.labels })
    }

    fn label(&self, key: &str) -> &str {
        self.labels.get(key).map_or("", String::as_str)
    }
}

/// `n` events of `metric` from `start`, spread over `span_s` seconds at
/// irregular instants, hosts a–c and regions eu/us, values over three decades.
pub(crate) fn events(metric: &str, start: OffsetDateTime, span_s: i64, n: usize) -> Vec<Ev> {
    (0..n)
        .map(|i| {
            let k = i as i64;
            let offset_ms = (k * span_s * 1000) / n as i64 + (k * 7919) % 997;
            let host = ["a", "b", "c"][i % 3];
            let region = ["eu", "us"][(i / 3) % 2];
            Ev {
                metric: metric.to_owned(),
                ts: start + time::Duration::milliseconds(offset_ms),
                value: ((k * 7907) % 1000) as f64 * 0.731 + 0.5 + (i % 7) as f64 * 100.0,
                labels: BTreeMap::from([("host".into(), host.into()), ("region".into(), region.into())]),
            }
        })
        .collect()
}

pub(crate) fn to_json(events: &[Ev]) -> Vec<Value> {
    events.iter().map(Ev::json).collect()
}

/// What a query must answer, computed from the events: per (group, bucket
/// start) the sorted values.
pub(crate) fn expected(
    events: &[Ev],
    start: OffsetDateTime,
    end: OffsetDateTime,
    bucket_s: i64,
    keep: impl Fn(&Ev) -> bool,
    group_by: Option<&str>,
) -> BTreeMap<(String, i64), Vec<f64>> {
    let mut out: BTreeMap<(String, i64), Vec<f64>> = BTreeMap::new();
    for e in events.iter().filter(|e| e.ts >= start && e.ts < end && keep(e)) {
        let micros = (e.ts.unix_timestamp_nanos() / 1000) as i64;
        let bucket = micros.div_euclid(bucket_s * 1_000_000) * bucket_s;
        let group = group_by.map(|g| e.label(g).to_owned()).unwrap_or_default();
        out.entry((group, bucket)).or_default().push(e.value);
    }
    for values in out.values_mut() {
        values.sort_by(f64::total_cmp);
    }
    out
}

pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[(q * (sorted.len() - 1) as f64) as usize]
}

/// Checks an answer against the expectation: same buckets, counts, sums,
/// mins and maxes exact (sums to float rounding), percentiles within the
/// documented error.
pub(crate) fn check(answer: &Value, want: &BTreeMap<(String, i64), Vec<f64>>) {
    let mut got = BTreeMap::new();
    for series in answer["series"].as_array().unwrap() {
        let group = series["group"].as_str().unwrap_or("").to_owned();
        for bucket in series["buckets"].as_array().unwrap() {
            let start = OffsetDateTime::parse(bucket["start"].as_str().unwrap(), &Rfc3339).unwrap();
            got.insert((group.clone(), start.unix_timestamp()), bucket.clone());
        }
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "buckets differ: {answer}"
    );
    for (key, values) in want {
        let bucket = &got[key];
        let v = &bucket["values"];
        let n = values.len() as f64;
        let sum: f64 = values.iter().sum();
        assert_eq!(bucket["count"].as_u64().unwrap(), values.len() as u64, "{key:?}");
        let close = |name: &str, want: f64, rel: f64| {
            if v.get(name).is_none() {
                return;
            }
            let got = v[name].as_f64().unwrap_or_else(|| panic!("{name} missing in {bucket}"));
            assert!(
                (got - want).abs() <= want.abs() * rel + 1e-9,
                "{key:?} {name}: got {got}, want {want} (±{rel})"
            );
        };
        close("count", n, 0.0);
        close("sum", sum, 1e-12);
        close("avg", sum / n, 1e-12);
        close("min", values[0], 0.0);
        close("max", values[values.len() - 1], 0.0);
        for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99)] {
            close(name, percentile(values, q), RELATIVE_ERROR);
        }
    }
}

/// Which events a filter keeps.
type Keep = Box<dyn Fn(&Ev) -> bool>;

const ALL: [&str; 9] = ["count", "sum", "avg", "min", "max", "p50", "p90", "p95", "p99"];

#[tokio::test]
async fn a_batch_with_bad_items_stores_the_good_ones_and_queries_answer_exactly() {
    let system = system!();
    let client = Client::new(&system, "acme");
    let base = base();
    let good = events("http.latency", base, 30 * 60, 900);
    let now = OffsetDateTime::now_utc();
    // Events of the right shape that fail a check, each with the rejection
    // it must get (field, code). A NUL in a label value is refused alike.
    let bad: Vec<(Value, &str, &str)> = vec![
        (
            json!({"name": "9bad", "ts": rfc3339(base), "value": 1}),
            "name",
            "invalid_argument",
        ),
        (
            json!({"name": "ok", "ts": rfc3339(now - time::Duration::days(31)), "value": 1}),
            "ts",
            "out_of_range",
        ),
        (
            json!({"name": "ok", "ts": rfc3339(now + time::Duration::hours(1)), "value": 1}),
            "ts",
            "out_of_range",
        ),
        (
            json!({"name": "ok", "ts": rfc3339(base), "value": 1, "labels": {"bad-key": "x"}}),
            "labels",
            "invalid_argument",
        ),
        (
            json!({"name": "ok", "ts": rfc3339(base), "value": 1, "labels": {"host": ""}}),
            "labels.host",
            "invalid_argument",
        ),
        (
            json!({"name": "ok", "ts": rfc3339(base), "value": 1, "labels": {"host": "x".repeat(201)}}),
            "labels.host",
            "invalid_argument",
        ),
        (
            json!({"name": "ok", "ts": rfc3339(base), "value": 1, "labels": {"host": "a\u{0}b"}}),
            "labels.host",
            "invalid_argument",
        ),
        (
            json!({"name": "ok", "ts": rfc3339(base), "value": 1,
                   "labels": (0..17).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()}),
            "labels",
            "invalid_argument",
        ),
    ];
    // Interleave: a bad item after every 60 good ones.
    let mut batch = Vec::new();
    let mut want_rejected = Vec::new();
    let mut bad_items = bad.iter();
    for (i, e) in good.iter().enumerate() {
        if i % 60 == 0
            && let Some((item, field, code)) = bad_items.next()
        {
            want_rejected.push((batch.len(), *field, *code));
            batch.push(item.clone());
        }
        batch.push(e.json());
    }
    assert!(bad_items.next().is_none(), "every bad item is in the batch");
    let answer = client.ingest(&batch).await;
    assert_eq!(answer["accepted"], 900, "{answer}");
    assert_eq!(answer["replayed"], false);
    let rejected: Vec<(usize, String, String)> = answer["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert!(!r["message"].as_str().unwrap().is_empty(), "{r}");
            (
                r["index"].as_u64().unwrap() as usize,
                r["field"].as_str().unwrap().to_owned(),
                r["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: Vec<(usize, String, String)> = want_rejected
        .iter()
        .map(|(i, f, c)| (*i, (*f).to_owned(), (*c).to_owned()))
        .collect();
    assert_eq!(rejected, want);
    // Nothing of the bad items was stored: the metric `ok` does not exist.
    let (_, metrics) = client.get("/api/v1/metrics").await;
    let names: Vec<&str> = metrics["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["http.latency"]);
    assert_eq!(metrics["metrics"][0]["label_keys"], json!(["host", "region"]));

    let end = base + time::Duration::minutes(30);
    let query = |extra: Value| {
        let mut q = json!({
            "metric": "http.latency", "aggregations": ALL, "bucket_seconds": 60,
            "start": rfc3339(base), "end": rfc3339(end),
        });
        q.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        q
    };
    // Every aggregation, one series, from the rollups.
    let answer = client.query(&query(json!({}))).await;
    assert_eq!(answer["aggregations"], json!(ALL));
    assert_eq!(answer["series"].as_array().unwrap().len(), 1);
    assert_eq!(answer["series"][0]["group"], Value::Null);
    check(&answer, &expected(&good, base, end, 60, |_| true, None));

    // Each filter op, and a group-by.
    let cases: Vec<(Value, Keep)> = vec![
        (
            json!({"label": "host", "op": "eq", "values": ["a"]}),
            Box::new(|e| e.label("host") == "a"),
        ),
        (
            json!({"label": "host", "op": "neq", "values": ["a"]}),
            Box::new(|e| e.label("host") != "a"),
        ),
        (
            json!({"label": "host", "op": "in", "values": ["a", "c"]}),
            Box::new(|e| ["a", "c"].contains(&e.label("host"))),
        ),
        (
            json!({"label": "region", "op": "not_in", "values": ["eu"]}),
            Box::new(|e| e.label("region") != "eu"),
        ),
        // A label no series has matches as "".
        (json!({"label": "zone", "op": "eq", "values": [""]}), Box::new(|_| true)),
    ];
    for (filter, keep) in cases {
        let answer = client
            .query(&query(json!({"filters": [filter], "group_by": "host"})))
            .await;
        check(&answer, &expected(&good, base, end, 60, keep, Some("host")));
    }
    let answer = client
        .query(&query(json!({
            "filters": [{"label": "region", "op": "eq", "values": ["us"]}], "group_by": "host"
        })))
        .await;
    let groups: Vec<&str> = answer["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["group"].as_str().unwrap())
        .collect();
    assert_eq!(groups, ["a", "b", "c"]);

    // Finer than the rollups: read from raw events.
    let (from, to) = (base + time::Duration::minutes(1), base + time::Duration::minutes(4));
    let answer = client
        .query(&json!({
            "metric": "http.latency", "aggregations": ALL, "bucket_seconds": 10,
            "start": rfc3339(from), "end": rfc3339(to), "group_by": "region",
        }))
        .await;
    check(&answer, &expected(&good, from, to, 10, |_| true, Some("region")));

    // A range off the minute: partial minutes at the ends read raw events.
    let (from, to) = (
        base + time::Duration::seconds(95),
        base + time::Duration::seconds(7 * 60 + 20),
    );
    let answer = client
        .query(&json!({
            "metric": "http.latency", "aggregations": ALL, "bucket_seconds": 120,
            "start": rfc3339(from), "end": rfc3339(to),
        }))
        .await;
    check(&answer, &expected(&good, from, to, 120, |_| true, None));

    // A late event lands in its bucket, and only there.
    let late = Ev {
        metric: "http.latency".into(),
        ts: base + time::Duration::seconds(5 * 60 + 1),
        value: 1e6,
        labels: BTreeMap::from([("host".into(), "b".into()), ("region".into(), "eu".into())]),
    };
    client.ingest(&[late.json()]).await;
    let mut all = good.clone();
    all.push(late);
    let answer = client.query(&query(json!({}))).await;
    check(&answer, &expected(&all, base, end, 60, |_| true, None));
    let late_bucket = answer["series"][0]["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["values"]["max"] == json!(1e6))
        .expect("the late event's bucket");
    assert_eq!(late_bucket["start"], json!(rfc3339(base + time::Duration::minutes(5))));

    // Label values for a filter dropdown.
    let (status, values) = client.get("/api/v1/metrics/http.latency/labels/host/values").await;
    assert_eq!(status, 200);
    assert_eq!(values["values"], json!(["a", "b", "c"]));
    let (_, page) = client
        .get("/api/v1/metrics/http.latency/labels/host/values?page_size=2")
        .await;
    assert_eq!(page["values"], json!(["a", "b"]));
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = client
        .get(&format!(
            "/api/v1/metrics/http.latency/labels/host/values?page_size=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(rest["values"], json!(["c"]));
    assert_eq!(rest["next_cursor"], Value::Null);
}

#[tokio::test]
async fn minutes_rolled_up_before_the_per_metric_rollups_existed_are_merged_per_series() {
    use sqlx::Connection as _;
    let system = system!();
    let client = Client::new(&system, "acme");
    let base = base();
    let minutes = |m| base + time::Duration::minutes(m);
    let before = events("legacy", base, 20 * 60, 600);
    assert_eq!(client.ingest(&to_json(&before)).await["accepted"], 600);
    // What migration 0011 leaves for a metric it found data of: no
    // per-metric rollups, and the minute they start at.
    let url = sextant_e2e::infra::database_url(&system.admin_url, &format!("e2e_{}_analytics", system.id));
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("DELETE FROM metric_rollups_1m WHERE tenant = 'acme' AND metric = 'legacy'")
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query("INSERT INTO metric_rollups_since (tenant, metric, since) VALUES ('acme', 'legacy', $1)")
        .bind(minutes(20))
        .execute(&mut db)
        .await
        .unwrap();
    let after = events("legacy", minutes(20), 10 * 60, 300);
    assert_eq!(client.ingest(&to_json(&after)).await["accepted"], 300);
    // A late event before the split: in its series' rollup (read) and in a
    // per-metric row of that minute alone (not read).
    let late = Ev {
        value: 5e5,
        ..before[10].clone()
    };
    client.ingest(&[late.json()]).await;
    let mut all = [before, after].concat();
    all.push(late);
    let end = minutes(30);
    let query = |bucket_s: i64| {
        json!({
            "metric": "legacy", "aggregations": ALL, "bucket_seconds": bucket_s,
            "start": rfc3339(base), "end": rfc3339(end),
        })
    };
    // One-minute buckets, and 15-minute ones of which one spans the split.
    for bucket_s in [60, 900] {
        let answer = client.query(&query(bucket_s)).await;
        check(&answer, &expected(&all, base, end, bucket_s, |_| true, None));
    }
    // Grouped or filtered, every minute is merged per series: the same data.
    let answer = client
        .query(&json!({
            "metric": "legacy", "aggregations": ALL, "bucket_seconds": 900,
            "start": rfc3339(base), "end": rfc3339(end), "group_by": "host",
        }))
        .await;
    check(&answer, &expected(&all, base, end, 900, |_| true, Some("host")));
}

#[tokio::test]
async fn a_long_grouped_query_read_over_several_statements_answers_exactly() {
    let system = system!();
    let client = Client::new(&system, "acme");
    // 60 series × 400 minutes: 24,000 events, one a series-minute; the
    // query's ~23,800 rollup rows are read in two time slices by concurrent
    // statements (`read::ROWS_PER_READER` is 10,000).
    let start = base() - time::Duration::hours(4);
    let all: Vec<Ev> = (0..24_000i64)
        .map(|i| {
            let (series, minute) = (i % 60, i / 60);
            Ev {
                metric: "wide".into(),
                ts: start + time::Duration::seconds(minute * 60 + (i * 7) % 60),
                value: ((i * 7907) % 1000) as f64 * 0.25 + series as f64,
                labels: BTreeMap::from([
                    ("host".into(), format!("h{}", series % 10)),
                    ("region".into(), format!("r{}", series / 10)),
                ]),
            }
        })
        .collect();
    for batch in all.chunks(6_000) {
        assert_eq!(client.ingest(&to_json(batch)).await["accepted"], 6_000);
    }
    // Off the minute at both ends (raw edges beside the slices), in buckets
    // of one minute and of 15 (an edge shares its bucket with a slice).
    let (from, to) = (
        start + time::Duration::seconds(95),
        start + time::Duration::seconds(400 * 60 - 25),
    );
    for (bucket_s, group_by) in [(900, "host"), (60, "region")] {
        let answer = client
            .query(&json!({
                "metric": "wide", "aggregations": ALL, "bucket_seconds": bucket_s,
                "start": rfc3339(from), "end": rfc3339(to), "group_by": group_by,
            }))
            .await;
        check(&answer, &expected(&all, from, to, bucket_s, |_| true, Some(group_by)));
    }
}

#[tokio::test]
async fn bad_requests_get_a_clear_problem_and_change_nothing() {
    let system = system!(
        TestSystem::builder()
            .analytics_env("SEXTANT_ANALYTICS__INGEST__MAX_SERIES_PER_METRIC", "3")
            .analytics_env("SEXTANT_ANALYTICS__QUERY__MAX_GROUPS", "2")
            .analytics_env("SEXTANT_ANALYTICS__QUERY__MAX_RAW_EVENTS", "20")
    );
    let client = Client::new(&system, "acme");
    let base = base();
    let end = base + time::Duration::hours(1);
    let seed: Vec<Ev> = events("cpu", base, 600, 60)
        .into_iter()
        .filter(|e| e.labels["region"] == "eu")
        .collect();
    assert_eq!(client.ingest(&to_json(&seed)).await["accepted"], 30);
    let stored = || client.stored("cpu", base, end);
    assert_eq!(stored().await, 30);

    // Bodies that are not a batch: problem+json, nothing stored.
    let http = &system.http;
    let post_raw = |body: &'static str, content_type: &'static str| {
        http.post(system.url("/api/v1/events"))
            .bearer_auth(&client.token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    for (body, content_type, status, code) in [
        ("{\"events\": [", "application/json", 400, "malformed_request"),
        ("[]", "application/json", 400, "invalid_argument"),
        (
            "{\"events\": [], \"x\": 1}",
            "application/json",
            400,
            "invalid_argument",
        ),
        ("{\"events\": {}}", "application/json", 400, "invalid_argument"),
        ("{\"events\": []}", "text/plain", 415, "unsupported_media_type"),
        // An event of the wrong shape makes the whole body malformed.
        (
            r#"{"events": [{"name": "cpu", "ts": "2026-11-22T00:00:00Z", "value": "abc"}]}"#,
            "application/json",
            400,
            "invalid_argument",
        ),
        (
            r#"{"events": [{"name": "cpu", "value": 1}]}"#,
            "application/json",
            400,
            "invalid_argument",
        ),
        (
            r#"{"events": [{"name": "cpu", "ts": "yesterday", "value": 1}]}"#,
            "application/json",
            400,
            "invalid_argument",
        ),
        (
            r#"{"events": [{"name": "cpu", "ts": "2026-11-22T00:00:00Z", "value": 1, "labels": {"host": 5}}]}"#,
            "application/json",
            400,
            "invalid_argument",
        ),
        (
            r#"{"events": [{"name": "cpu", "ts": "2026-11-22T00:00:00Z", "value": 1, "extra": true}]}"#,
            "application/json",
            400,
            "invalid_argument",
        ),
        (
            r#"{"events": ["not an object"]}"#,
            "application/json",
            400,
            "invalid_argument",
        ),
        (
            r#"{"events": [{"name": "cpu", "ts": "2026-11-22T00:00:00Z", "value": 1e400}]}"#,
            "application/json",
            400,
            "malformed_request",
        ),
    ] {
        let response = post_raw(body, content_type).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{body}");
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], code, "{body}: {problem}");
    }
    let too_many: Vec<Value> = (0..10_001).map(|_| seed[0].json()).collect();
    let (status, problem) = client
        .post("/api/v1/events", &json!({ "events": too_many }), None)
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (400, Some("invalid_argument")),
        "{problem}"
    );
    assert!(problem["detail"].as_str().unwrap().contains("10000"), "{problem}");
    let huge = format!("{{\"events\": [], \"pad\": \"{}\"}}", "x".repeat(9 << 20));
    let response = http
        .post(system.url("/api/v1/events"))
        .bearer_auth(&client.token)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    let (status, problem) = client
        .post(
            "/api/v1/events",
            &json!({"events": [seed[0].json()]}),
            Some(&"k".repeat(201)),
        )
        .await;
    assert_eq!((status, problem["code"].as_str()), (400, Some("invalid_argument")));
    assert_eq!(stored().await, 30);

    // The cardinality limit refuses new series only; known ones still go in.
    let mut mixed = Vec::new();
    for (i, host) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        let mut e = seed[0].clone();
        e.labels.insert("host".into(), (*host).into());
        e.ts = base + time::Duration::seconds(700 + i as i64);
        mixed.push(e.json());
    }
    let answer = client.ingest(&mixed).await;
    // a, b and c exist (eu): d and e would be series 4 and 5.
    assert_eq!(answer["accepted"], 3, "{answer}");
    let codes: Vec<(u64, &str, &str)> = answer["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                r["code"].as_str().unwrap(),
                r["field"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        codes,
        [(3, "cardinality_limit", "labels"), (4, "cardinality_limit", "labels")]
    );
    assert_eq!(stored().await, 33);

    // Queries that cannot be answered name the problem or the limit.
    let q = |extra: Value| {
        let mut q = json!({
            "metric": "cpu", "aggregations": ["avg"], "bucket_seconds": 60,
            "start": rfc3339(base), "end": rfc3339(end),
        });
        q.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        q
    };
    for (query, needle) in [
        (q(json!({"aggregations": ["median"]})), "aggregations"),
        (q(json!({"aggregations": []})), "aggregation"),
        (q(json!({"aggregations": ["avg", "avg"]})), "twice"),
        (q(json!({"bucket_seconds": 0})), "bucket"),
        (q(json!({"bucket_seconds": 1.5})), "bucket_seconds"),
        (q(json!({"start": rfc3339(end + time::Duration::hours(1))})), "after"),
        (q(json!({"metric": "no such name!"})), "metric"),
        (
            q(json!({"filters": [{"label": "host", "op": "eq", "values": ["a", "b"]}]})),
            "exactly one",
        ),
        (
            q(json!({"filters": [{"label": "host", "op": "in", "values": []}]})),
            "empty",
        ),
        (
            q(json!({"filters": [{"label": "host", "op": "like", "values": ["a"]}]})),
            "op",
        ),
        (q(json!({"group_by": "bad-label"})), "group_by"),
        (
            q(json!({"filters": [{"label": "host", "op": "in", "values": ["h1", "a\u{0}"]}]})),
            "U+0000",
        ),
        (
            q(json!({"bucket_seconds": 1, "end": rfc3339(base + time::Duration::days(1))})),
            "max_buckets",
        ),
        (q(json!({"group_by": "host"})), "max_groups"),
        (q(json!({"bucket_seconds": 10})), "max_raw_events"),
        (q(json!({"extra": 1})), "extra"),
    ] {
        let (status, problem) = client.post("/api/v1/metrics/query", &query, None).await;
        assert_eq!(status, 400, "{query} → {problem}");
        assert_eq!(problem["code"], "invalid_argument", "{problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(needle),
            "{needle} not in {problem}"
        );
    }
    // A metric with no events is an empty answer, not an error.
    let answer = client.query(&q(json!({"metric": "never.seen"}))).await;
    assert_eq!(answer["series"], json!([]));
    assert_eq!(stored().await, 33);
}

#[tokio::test]
async fn a_retried_batch_with_its_idempotency_key_is_stored_once() {
    let system = system!();
    let client = Client::new(&system, "acme");
    let base = base();
    let batch = json!({ "events": to_json(&events("orders", base, 60, 20)) });
    let (status, first) = client.post("/api/v1/events", &batch, Some("batch-1")).await;
    assert_eq!(
        (status, &first["accepted"], &first["replayed"]),
        (200, &json!(20), &json!(false))
    );
    let (status, again) = client.post("/api/v1/events", &batch, Some("batch-1")).await;
    assert_eq!(status, 200);
    assert_eq!((&again["accepted"], &again["replayed"]), (&json!(20), &json!(true)));
    let end = base + time::Duration::minutes(5);
    assert_eq!(client.stored("orders", base, end).await, 20);
    // The same key for other events is refused, and stores nothing.
    let other = json!({ "events": to_json(&events("orders", base, 60, 5)) });
    let (status, problem) = client.post("/api/v1/events", &other, Some("batch-1")).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (409, Some("already_exists")),
        "{problem}"
    );
    assert_eq!(client.stored("orders", base, end).await, 20);
    // Keys are per tenant: another tenant's batch under the same key is its own.
    let other_tenant = Client::new(&system, "globex");
    let (status, answer) = other_tenant.post("/api/v1/events", &other, Some("batch-1")).await;
    assert_eq!((status, &answer["replayed"]), (200, &json!(false)));
}

#[tokio::test]
async fn a_tenant_never_sees_another_tenants_metrics_series_or_label_values() {
    let system = system!();
    let acme = Client::new(&system, "acme");
    let globex = Client::new(&system, "globex");
    let base = base();
    acme.ingest(&to_json(&events("shared.name", base, 60, 30))).await;
    let mut theirs = events("shared.name", base, 60, 10);
    for e in &mut theirs {
        e.labels.insert("host".into(), "globex-host".into());
    }
    globex.ingest(&to_json(&theirs)).await;
    globex.ingest(&to_json(&events("globex.only", base, 60, 5))).await;

    let end = base + time::Duration::minutes(5);
    assert_eq!(acme.stored("shared.name", base, end).await, 30);
    assert_eq!(globex.stored("shared.name", base, end).await, 10);
    assert_eq!(acme.stored("globex.only", base, end).await, 0);
    let (_, list) = acme.get("/api/v1/metrics").await;
    assert_eq!(list["metrics"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["metrics"][0]["name"], "shared.name");
    let (_, values) = acme.get("/api/v1/metrics/shared.name/labels/host/values").await;
    assert_eq!(values["values"], json!(["a", "b", "c"]));
    let (_, values) = globex.get("/api/v1/metrics/shared.name/labels/host/values").await;
    assert_eq!(values["values"], json!(["globex-host"]));
    let (_, values) = acme.get("/api/v1/metrics/globex.only/labels/host/values").await;
    assert_eq!(values["values"], json!([]));
}

#[tokio::test]
async fn a_series_whose_data_expired_no_longer_counts_against_the_cardinality_limit() {
    use sqlx::Connection as _;
    let system = system!(
        TestSystem::builder()
            .analytics_env("SEXTANT_ANALYTICS__INGEST__MAX_SERIES_PER_METRIC", "2")
            .analytics_env("SEXTANT_ANALYTICS__RETENTION__CHECK_INTERVAL", "1s")
    );
    let client = Client::new(&system, "acme");
    let now = OffsetDateTime::now_utc();
    let event = |host: &str| json!({"name": "expiring", "ts": rfc3339(now), "value": 1.0, "labels": {"host": host}});
    let codes = |answer: &Value| -> Vec<String> {
        answer["rejected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["code"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(client.ingest(&[event("a"), event("b")]).await["accepted"], 2);
    assert_eq!(codes(&client.ingest(&[event("c")]).await), ["cardinality_limit"]);

    // Host a's data expires (its events' and rollups' partitions dropped, as
    // retention does); the upkeep deletes the series that holds nothing.
    let url = sextant_e2e::infra::database_url(&system.admin_url, &format!("e2e_{}_analytics", system.id));
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    let a: i64 = sqlx::query_scalar("SELECT id FROM series WHERE metric = 'expiring' AND labels->>'host' = 'a'")
        .fetch_one(&mut db)
        .await
        .unwrap();
    sqlx::query("UPDATE series SET created_at = created_at - interval '1 hour' WHERE id = $1")
        .bind(a)
        .execute(&mut db)
        .await
        .unwrap();
    for table in ["events", "rollups_1m"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE series_id = $1"))
            .bind(a)
            .execute(&mut db)
            .await
            .unwrap();
    }
    let mut left: i64 = 1;
    for _ in 0..100 {
        left = sqlx::query_scalar("SELECT count(*) FROM series WHERE id = $1")
            .bind(a)
            .fetch_one(&mut db)
            .await
            .unwrap();
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "the series without data is deleted");
    // Host b, which has data, stays.
    let b: i64 = sqlx::query_scalar("SELECT count(*) FROM series WHERE metric = 'expiring' AND labels->>'host' = 'b'")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(b, 1);

    // Its place is free: c goes in now.
    let answer = client.ingest(&[event("c")]).await;
    assert_eq!(
        (answer["accepted"].as_u64(), codes(&answer).len()),
        (Some(1), 0),
        "{answer}"
    );
    // The ingest replica had a's id cached: it does not write to the deleted
    // series, but counts a as new (refused now, b and c being two).
    assert_eq!(codes(&client.ingest(&[event("a")]).await), ["cardinality_limit"]);
    let orphans: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events e WHERE NOT EXISTS (SELECT 1 FROM series s WHERE s.id = e.series_id)",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(orphans, 0, "no event points at a deleted series");
}
