//! Prometheus remote-write through the gateway, as Prometheus sends it
//! (snappy-compressed protobuf `WriteRequest`s, bearer token): samples
//! become ordinary Sextant metrics; each bad request is answered with the
//! status the specification gives and leaves the tenant's data as it was;
//! another tenant's token never reaches this tenant's series.

use prost::Message as _;
use serde_json::json;
use sextant_proto::prometheus as prom;
use time::OffsetDateTime;

use crate::metrics::{Client, rfc3339};
use crate::system;

const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

pub(crate) fn labels(pairs: &[(&str, &str)]) -> Vec<prom::Label> {
    pairs
        .iter()
        .map(|(name, value)| prom::Label {
            name: (*name).into(),
            value: (*value).into(),
        })
        .collect()
}

pub(crate) fn series(pairs: &[(&str, &str)], samples: &[(i64, f64)]) -> prom::TimeSeries {
    prom::TimeSeries {
        labels: labels(pairs),
        samples: samples
            .iter()
            .map(|&(timestamp, value)| prom::Sample { value, timestamp })
            .collect(),
        ..Default::default()
    }
}

pub(crate) fn body(timeseries: Vec<prom::TimeSeries>) -> Vec<u8> {
    let write = prom::WriteRequest {
        timeseries,
        metadata: Vec::new(),
    };
    snap::raw::Encoder::new().compress_vec(&write.encode_to_vec()).unwrap()
}

/// Posts a body as Prometheus does; the status and the body's text.
pub(crate) async fn write(client: &Client<'_>, body: Vec<u8>, content_type: &str) -> (u16, String) {
    let response = client
        .system
        .http
        .post(client.system.url("/prometheus/api/v1/write"))
        .bearer_auth(&client.token)
        .header("content-type", content_type)
        .header("content-encoding", "snappy")
        .header("x-prometheus-remote-write-version", "0.1.0")
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

pub(crate) const PROTOBUF: &str = "application/x-protobuf";

/// A minute ten minutes ago, in milliseconds, and its start as a time.
fn minute() -> (i64, OffsetDateTime) {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let start = (now - 600) / 60 * 60;
    (start * 1000, OffsetDateTime::from_unix_timestamp(start).unwrap())
}

/// Every stored sample of the metrics this file writes, per metric, in the hour around `start`.
async fn counts(client: &Client<'_>, start: OffsetDateTime) -> Vec<u64> {
    let mut out = Vec::new();
    for metric in ["rw_requests_total", "rw_temperature", "rw_other"] {
        out.push(
            client
                .stored(metric, start - time::Duration::HOUR, start + time::Duration::HOUR)
                .await,
        );
    }
    out
}

#[tokio::test]
async fn remote_written_samples_are_ordinary_metrics_and_the_stale_marker_is_no_value() {
    let system = system!();
    let client = Client::new(&system, "rw-acme");
    let (t0, start) = minute();
    let request = body(vec![
        series(
            &[("__name__", "rw_requests_total"), ("code", "200"), ("job", "api")],
            &[(t0, 1.0), (t0 + 15_000, 4.0), (t0 + 30_000, 9.0)],
        ),
        series(
            &[
                ("__name__", "rw_requests_total"),
                ("code", "500"),
                ("empty", ""),
                ("job", "api"),
            ],
            &[(t0, 2.0), (t0 + 15_000, f64::from_bits(STALE_NAN))],
        ),
    ]);
    let (status, text) = write(&client, request, PROTOBUF).await;
    assert_eq!(status, 204, "{text}");

    // The stale marker is not a value: three samples plus one.
    let answer = client
        .query(&json!({
            "metric": "rw_requests_total", "aggregations": ["count", "sum"], "bucket_seconds": 60,
            "start": rfc3339(start), "end": rfc3339(start + time::Duration::MINUTE),
            "group_by": "code",
        }))
        .await;
    let series = answer["series"].as_array().unwrap();
    let by_code: Vec<(String, u64, f64)> = series
        .iter()
        .map(|s| {
            let bucket = &s["buckets"][0];
            (
                s["group"].as_str().unwrap().to_owned(),
                bucket["count"].as_u64().unwrap(),
                bucket["values"]["sum"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        by_code,
        vec![("200".into(), 3, 14.0), ("500".into(), 1, 2.0)],
        "{answer}"
    );
    // An empty label value is no label, as in Prometheus.
    let (status, keys) = client.get("/api/v1/metrics?prefix=rw_requests").await;
    assert_eq!(status, 200);
    assert_eq!(keys["metrics"][0]["label_keys"], json!(["code", "job"]), "{keys}");

    // A request of metadata alone is accepted.
    let metadata = prom::WriteRequest {
        timeseries: Vec::new(),
        metadata: vec![prom::MetricMetadata {
            r#type: prom::metric_metadata::MetricType::Counter as i32,
            metric_family_name: "rw_requests_total".into(),
            help: "Requests served.".into(),
            unit: String::new(),
        }],
    };
    let compressed = snap::raw::Encoder::new()
        .compress_vec(&metadata.encode_to_vec())
        .unwrap();
    let (status, text) = write(&client, compressed, PROTOBUF).await;
    assert_eq!(status, 204, "{text}");
}

#[tokio::test]
async fn bad_remote_writes_get_the_specified_status_and_change_nothing() {
    let system = system!(
        sextant_e2e::TestSystem::builder().analytics_env("SEXTANT_ANALYTICS__INGEST__MAX_SERIES_PER_METRIC", "3")
    );
    let client = Client::new(&system, "rw-bad");
    let (t0, start) = minute();
    let good = series(&[("__name__", "rw_temperature"), ("room", "a")], &[(t0, 21.5)]);
    let (status, text) = write(&client, body(vec![good.clone()]), PROTOBUF).await;
    assert_eq!(status, 204, "{text}");
    let before = counts(&client, start).await;
    assert_eq!(before, vec![0, 1, 0]);

    let year_2000 = 946_684_800_000;
    let mut histogram = series(&[("__name__", "rw_other")], &[]);
    histogram.histograms.push(prom::Histogram { timestamp: t0 });
    let too_many: Vec<prom::TimeSeries> = (0..10_001)
        .map(|i| series(&[("__name__", "rw_other")], &[(t0 + i, 1.0)]))
        .collect();
    let cases: Vec<(&str, Vec<u8>, &str, u16, &str)> = vec![
        (
            "corrupt snappy",
            b"\x20not snappy at all".to_vec(),
            PROTOBUF,
            400,
            "snappy",
        ),
        (
            "not a protobuf",
            snap::raw::Encoder::new().compress_vec(b"\x0a\xff\xff\xff").unwrap(),
            PROTOBUF,
            400,
            "protobuf",
        ),
        (
            "no __name__",
            body(vec![series(&[("room", "b")], &[(t0, 1.0)])]),
            PROTOBUF,
            400,
            "no __name__",
        ),
        (
            "duplicate labels",
            body(vec![series(
                &[("__name__", "rw_other"), ("room", "a"), ("room", "b")],
                &[(t0, 1.0)],
            )]),
            PROTOBUF,
            400,
            "appears twice",
        ),
        (
            "unsorted labels",
            body(vec![series(
                &[("__name__", "rw_other"), ("zone", "z"), ("room", "a")],
                &[(t0, 1.0)],
            )]),
            PROTOBUF,
            400,
            "not sorted",
        ),
        (
            "timestamp out of the window",
            body(vec![series(&[("__name__", "rw_other")], &[(year_2000, 1.0)])]),
            PROTOBUF,
            400,
            "older than the raw retention",
        ),
        (
            "not a number",
            body(vec![series(&[("__name__", "rw_other")], &[(t0, f64::NAN)])]),
            PROTOBUF,
            400,
            "finite",
        ),
        (
            "native histogram",
            body(vec![histogram]),
            PROTOBUF,
            400,
            "native histogram",
        ),
        ("too many samples", body(too_many), PROTOBUF, 400, "at most 10000"),
        (
            "remote-write 2.0",
            body(vec![good.clone()]),
            "application/x-protobuf;proto=io.prometheus.write.v2.Request",
            415,
            "not supported",
        ),
        ("JSON", b"{}".to_vec(), "application/json", 415, "not supported"),
        (
            "over the body limit",
            vec![0; 8 * 1024 * 1024 + 1],
            PROTOBUF,
            413,
            "exceeds",
        ),
    ];
    for (case, request, content_type, expected, says) in cases {
        let (status, text) = write(&client, request, content_type).await;
        assert_eq!(status, expected, "{case}: {text}");
        assert!(text.contains(says), "{case}: {text:?} does not say {says:?}");
        assert_eq!(counts(&client, start).await, before, "{case} changed the stored data");
    }

    // Series beyond the per-metric limit are refused; the request's other
    // samples are kept, and the answer says how many were refused.
    let rooms: Vec<prom::TimeSeries> = ["b", "c", "d"]
        .iter()
        .map(|room| series(&[("__name__", "rw_temperature"), ("room", room)], &[(t0 + 1000, 20.0)]))
        .collect();
    let (status, text) = write(&client, body(rooms), PROTOBUF).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("1 of 3 samples were refused"), "{text}");
    assert!(
        text.contains("rw_temperature{room=\\\"d\\\"}") || text.contains("room=\\\"d\\\""),
        "{text}"
    );
    assert_eq!(counts(&client, start).await, vec![0, 3, 0]);
}

#[tokio::test]
async fn another_tenants_token_never_reaches_this_tenants_series() {
    let system = system!();
    let acme = Client::new(&system, "rw-tenant-a");
    let other = Client::new(&system, "rw-tenant-b");
    let (t0, start) = minute();
    let sample = |value| {
        body(vec![series(
            &[("__name__", "rw_temperature"), ("room", "a")],
            &[(t0, value)],
        )])
    };
    assert_eq!(write(&acme, sample(1.0), PROTOBUF).await.0, 204);
    assert_eq!(write(&other, sample(100.0), PROTOBUF).await.0, 204);
    assert_eq!(write(&other, sample(200.0), PROTOBUF).await.0, 204);
    assert_eq!(counts(&acme, start).await, vec![0, 1, 0]);
    assert_eq!(counts(&other, start).await, vec![0, 2, 0]);

    // Without a token, nothing is written.
    let response = system
        .http
        .post(system.url("/prometheus/api/v1/write"))
        .header("content-type", PROTOBUF)
        .body(sample(5.0))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(counts(&acme, start).await, vec![0, 1, 0]);
}

/// A metric that came by remote-write is an ordinary Sextant metric: it
/// streams on a live metric topic, fires an alert rule, and appears in an
/// analysis with its alert.
#[tokio::test]
async fn a_remote_written_metric_streams_live_fires_an_alert_and_appears_in_an_analysis() {
    use crate::metrics_live::{frame, socket_at, subscribe};
    let system = system!(crate::alerts::alerting());
    let client = Client::new(&system, "rw-everywhere");
    let rule = client
        .create_rule(&crate::alerts::rule("rw_cpu", json!({"window_seconds": 60})))
        .await;
    let rule_id = rule["id"].as_str().unwrap().to_owned();

    let mut socket = socket_at(&system.ws_url("/api/v1/ws"), &client.token).await;
    let query = json!({"metric": "rw_cpu", "aggregations": ["max"], "bucket_seconds": 60, "window_seconds": 3600});
    subscribe(&mut socket, &query, None).await;
    assert_eq!(frame(&mut socket).await["type"], "snapshot");

    let now = OffsetDateTime::now_utc();
    let now_ms = i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap();
    let (status, text) = write(
        &client,
        body(vec![series(
            &[("__name__", "rw_cpu"), ("host", "a")],
            &[(now_ms, 95.0)],
        )]),
        PROTOBUF,
    )
    .await;
    assert_eq!(status, 204, "{text}");

    // Live: the update carries the remote-written value.
    let update = frame(&mut socket).await;
    assert_eq!(update["type"], "update", "{update}");
    assert!(update.to_string().contains("95"), "{update}");

    // Alerting: the rule's instance fires.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, body) = client
            .get(&format!("/api/v1/alerts/instances?rule_id={rule_id}&state=firing"))
            .await;
        if !body["instances"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the alert never fired: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }

    // Analysis: the metric is summarised and its alert is a finding.
    let minute = now.unix_timestamp() / 60 * 60;
    let (start, end) = (
        OffsetDateTime::from_unix_timestamp(minute - 600).unwrap(),
        OffsetDateTime::from_unix_timestamp(minute + 120).unwrap(),
    );
    let (status, job) = client
        .post(
            "/api/v1/analyses",
            &json!({"start": rfc3339(start), "end": rfc3339(end), "bucket_seconds": 60}),
            None,
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let job_id = job["id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let job = loop {
        let (_, job) = client.get(&format!("/api/v1/jobs/{job_id}")).await;
        if job["status"] == "succeeded" {
            break job;
        }
        assert!(
            job["status"] != "failed" && std::time::Instant::now() < deadline,
            "analysis job: {job}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let analysis_id = job["result"]["analysis_id"].as_str().unwrap();
    let (status, report) = client.get(&format!("/api/v1/analyses/{analysis_id}")).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["metrics"], json!(["rw_cpu"]), "{report}");
    assert_eq!(report["summaries"][0]["count"], 1);
    assert_eq!(report["summaries"][0]["max"], json!(95.0));
    let fired = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["kind"] == "alert_fired" && f["properties"]["rule_id"] == rule_id.as_str());
    assert!(fired, "{report}");
}
