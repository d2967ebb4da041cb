//! OTLP/HTTP metrics through the gateway: OpenTelemetry's Python SDK
//! exports a counter, a gauge and a histogram (protobuf, plain and gzip);
//! the values read back through the Prometheus API and `POST
//! /api/v1/metrics/query` equal what was recorded, named and labelled as
//! the OpenTelemetry ↔ Prometheus compatibility specification says. An
//! OTLP/JSON export with points Sextant refuses gets a partial success
//! naming them, and its other points are stored; a body that does not
//! decode changes nothing.

use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::metrics::{Client, rfc3339};
use crate::system;

fn python() -> String {
    std::env::var("SEXTANT_OTEL_PYTHON")
        .expect("SEXTANT_OTEL_PYTHON: run the tests through `make test` (scripts/test.sh)")
}

fn export_with_the_sdk(client: &Client<'_>, gzip: bool) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/otlp/export.py");
    let endpoint = client.system.url("/otlp/v1/metrics");
    let mut command = std::process::Command::new(python());
    command.arg(script).arg(&endpoint).arg(&client.token);
    if gzip {
        command.arg("gzip");
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains(r#""flushed": true"#),
        "the SDK's export failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn promql(client: &Client<'_>, query: &str) -> Vec<(Value, String)> {
    let response = client
        .system
        .http
        .post(client.system.url("/prometheus/api/v1/query"))
        .bearer_auth(&client.token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "query={}",
            url::form_urlencoded::byte_serialize(query.as_bytes()).collect::<String>()
        ))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "success", "{query}: {body}");
    let mut out: Vec<(Value, String)> = body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["metric"].clone(), s["value"][1].as_str().unwrap().to_owned()))
        .collect();
    out.sort_by_key(|(m, _)| m.to_string());
    out
}

#[tokio::test]
async fn an_sdks_counters_gauges_and_histograms_read_back_as_sent() {
    let system = system!();
    for (tenant, gzip) in [("otlp-proto", false), ("otlp-gzip", true)] {
        let client = Client::new(&system, tenant);
        export_with_the_sdk(&client, gzip);
        let resource = |extra: Value| {
            let mut labels = json!({"job": "shop/checkout", "instance": "pod-1"});
            for (k, v) in extra.as_object().unwrap() {
                labels[k] = v.clone();
            }
            labels
        };
        let with_name = |name: &str, extra: Value| {
            let mut labels = resource(extra);
            labels["__name__"] = json!(name);
            labels
        };
        assert_eq!(
            promql(&client, "otlp_requests_total").await,
            vec![
                (
                    with_name("otlp_requests_total", json!({"http_route": "/cart"})),
                    "2".to_owned()
                ),
                (
                    with_name("otlp_requests_total", json!({"http_route": "/pay"})),
                    "12".to_owned()
                ),
            ],
            "{tenant}"
        );
        assert_eq!(
            promql(&client, "otlp_queue_depth").await,
            vec![(
                with_name("otlp_queue_depth", json!({"queue": "emails"})),
                "42.5".to_owned()
            )]
        );
        let buckets: Vec<(String, String)> = promql(&client, "otlp_latency_bucket")
            .await
            .into_iter()
            .map(|(m, v)| (m["le"].as_str().unwrap().to_owned(), v))
            .collect();
        let mut buckets = buckets;
        buckets.sort();
        assert_eq!(
            buckets,
            vec![
                ("+Inf".into(), "4".into()),
                ("0.1".into(), "1".into()),
                ("1".into(), "3".into())
            ]
        );
        assert_eq!(promql(&client, "otlp_latency_count").await[0].1, "4");
        assert_eq!(promql(&client, "otlp_latency_sum").await[0].1, "3.25");

        // Through Sextant's own query: the same values.
        let now = OffsetDateTime::now_utc();
        let hour = OffsetDateTime::from_unix_timestamp(now.unix_timestamp() / 3600 * 3600).unwrap();
        let answer = client
            .query(&json!({
                "metric": "otlp_queue_depth", "aggregations": ["max", "count"], "bucket_seconds": 7200,
                "start": rfc3339(hour - time::Duration::HOUR), "end": rfc3339(hour + time::Duration::HOUR),
            }))
            .await;
        let bucket = &answer["series"][0]["buckets"][0];
        assert_eq!(
            (bucket["values"]["max"].as_f64(), bucket["count"].as_u64()),
            (Some(42.5), Some(1)),
            "{answer}"
        );

        // The description travels as metadata.
        let (_, metadata) = client
            .get("/prometheus/api/v1/metadata?metric=otlp_requests_total")
            .await;
        assert_eq!(
            metadata["data"]["otlp_requests_total"][0],
            json!({"type": "counter", "help": "Requests served.", "unit": "1"}),
            "{metadata}"
        );
    }
}

async fn post(client: &Client<'_>, content_type: &str, body: Vec<u8>) -> (u16, String, Vec<u8>) {
    let response = client
        .system
        .http
        .post(client.system.url("/otlp/v1/metrics"))
        .bearer_auth(&client.token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, kind, response.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn refused_points_get_a_partial_success_and_nothing_else_is_lost() {
    let system = system!();
    let client = Client::new(&system, "otlp-json");
    let now_ns = OffsetDateTime::now_utc().unix_timestamp_nanos();
    let now = now_ns.to_string();
    let year_2000 = "946684800000000000";
    let body = json!({"resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "billing"}}]},
        "scopeMetrics": [{"metrics": [
            {"name": "json.temperature", "gauge": {"dataPoints": [
                {"timeUnixNano": now, "asDouble": 21.5, "attributes": [{"key": "room", "value": {"stringValue": "a"}}]},
                {"timeUnixNano": year_2000, "asDouble": 19.0, "attributes": [{"key": "room", "value": {"stringValue": "b"}}]}
            ]}},
            {"name": "json.deltas", "sum": {"aggregationTemporality": 1, "isMonotonic": true, "dataPoints": [
                {"timeUnixNano": now, "asInt": "3"}
            ]}},
            {"name": "json.exponential", "exponentialHistogram": {"aggregationTemporality": 2, "dataPoints": [
                {"timeUnixNano": now, "count": "1", "scale": 0, "zeroCount": "0", "positive": {"offset": 0, "bucketCounts": ["1"]}}
            ]}}
        ]}]
    }]});
    let (status, kind, answer) = post(&client, "application/json", serde_json::to_vec(&body).unwrap()).await;
    assert_eq!(
        (status, kind.as_str()),
        (200, "application/json"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    let partial = &answer["partialSuccess"];
    let rejected = partial["rejectedDataPoints"]
        .as_i64()
        .or_else(|| partial["rejectedDataPoints"].as_str().and_then(|s| s.parse().ok()));
    assert_eq!(rejected, Some(3), "{answer}");
    let message = partial["errorMessage"].as_str().unwrap();
    for says in [
        "delta temporality",
        "exponential histograms",
        "older than the raw retention",
    ] {
        assert!(message.contains(says), "{message:?} does not say {says:?}");
    }
    // The valid point is stored; nothing of the refused ones is.
    let (start, end) = (
        OffsetDateTime::now_utc() - time::Duration::HOUR,
        OffsetDateTime::now_utc() + time::Duration::MINUTE,
    );
    assert_eq!(client.stored("json_temperature", start, end).await, 1);
    let (_, metrics) = client.get("/api/v1/metrics").await;
    let names: Vec<&str> = metrics["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["json_temperature"], "{metrics}");

    // Bodies that do not decode: 400 with a google.rpc.Status, nothing stored.
    let (status, kind, body) = post(&client, "application/x-protobuf", b"\x0a\xff\xff\xff".to_vec()).await;
    assert_eq!((status, kind.as_str()), (400, "application/x-protobuf"));
    assert!(String::from_utf8_lossy(&body).contains("not a protobuf"), "{body:?}");
    let (status, _, body) = post(&client, "application/json", b"{\"resourceMetrics\": 7}".to_vec()).await;
    assert_eq!(status, 400);
    let status_body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status_body["code"], 3, "{status_body}");
    let (status, _, body) = post(&client, "application/json", b"[]".to_vec()).await;
    assert_eq!(
        status,
        400,
        "a JSON array is not a request: {}",
        String::from_utf8_lossy(&body)
    );
    let (status, _, _) = post(&client, "text/plain", b"x".to_vec()).await;
    assert_eq!(status, 415);
    assert_eq!(client.stored("json_temperature", start, end).await, 1);
    let (_, after) = client.get("/api/v1/metrics").await;
    assert_eq!(after["metrics"].as_array().unwrap().len(), 1);
}
