//! Analyses through the gateway: one runs as an `analyze` job whose
//! progress a browser sees on the WebSocket; its report lists the anomaly
//! the test injected and the alert that fired on it, and its summaries equal
//! what the test computes from the events it sent. Tenants never see each
//! other's; bad requests are refused and start no job.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::alerts::{alerting, next_half_second, rule};
use crate::jobs_live::{events_until_final, following_jobs};
use crate::metrics::{Client, RELATIVE_ERROR, percentile, rfc3339};
use crate::system;

fn minute_floor(t: OffsetDateTime) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t.unix_timestamp() / 60 * 60).unwrap()
}

#[tokio::test]
async fn an_analysis_runs_as_a_job_and_reports_the_anomaly_the_alert_and_exact_summaries() {
    let system = system!(alerting());
    let client = Client::new(&system, "acme");
    let now = OffsetDateTime::now_utc();
    let start = minute_floor(now) - time::Duration::minutes(30);
    // 30 minutes of ordinary latency (about 100 ms) and of a second metric,
    // six events a minute, none yet in the current minute.
    let mut sent: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut batch = Vec::new();
    for minute in 0..30 {
        for k in 0..6 {
            let ts = start + time::Duration::seconds(minute * 60 + k * 10 + 3);
            let latency = 100.0 + ((minute * 7 + k * 3) % 11) as f64 - 5.0;
            let errors = ((minute + k) % 4) as f64;
            batch.push(json!({"name": "api.latency", "ts": rfc3339(ts), "value": latency, "labels": {"host": "a"}}));
            batch.push(json!({"name": "api.errors", "ts": rfc3339(ts), "value": errors, "labels": {"host": "a"}}));
            sent.entry("api.latency").or_default().push(latency);
            sent.entry("api.errors").or_default().push(errors);
        }
    }
    client.ingest(&batch).await;
    let created = client
        .create_rule(&rule("api.latency", json!({"threshold": 500.0})))
        .await;
    let rule_id = created["id"].as_str().unwrap().to_owned();
    // The spike, now: it fires the alert and makes its minute an anomaly.
    // Its events (one each half second, up to 6 s of them) all fall in one
    // minute: wait out the end of this one if it is near.
    while OffsetDateTime::now_utc().second() >= 50 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let mut fired = false;
    for _ in 0..12 {
        let ts = next_half_second().await;
        client.send("api.latency", ts, 900.0, "a").await;
        sent.entry("api.latency").or_default().push(900.0);
        let (_, body) = client
            .get(&format!("/api/v1/alerts/instances?rule_id={rule_id}&state=firing"))
            .await;
        if !body["instances"].as_array().unwrap().is_empty() {
            fired = true;
            break;
        }
    }
    assert!(fired, "the alert fired on the spike");
    let spike_minute = minute_floor(OffsetDateTime::now_utc());
    let end = spike_minute + time::Duration::minutes(1);

    // A browser follows the tenant's jobs; the analysis runs as one.
    let mut socket = following_jobs(&system, "acme").await;
    let (status, job) = client
        .post(
            "/api/v1/analyses",
            &json!({"title": "Checkout, last half hour", "start": rfc3339(start), "end": rfc3339(end), "bucket_seconds": 60}),
            None,
        )
        .await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["kind"], "analyze");
    let job_id = job["id"].as_str().unwrap().to_owned();
    let events = events_until_final(&mut socket, &job_id).await;
    let last = events.last().unwrap();
    assert_eq!(last["event"], "succeeded", "{events:#?}");
    let progress: Vec<(u64, u64)> = events
        .iter()
        .filter(|e| e["event"] == "progress")
        .map(|e| {
            let p = &e["job"]["progress"];
            (p["step"].as_u64().unwrap(), p["total_steps"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(progress, [(1, 2), (2, 2)], "progress per metric: {events:#?}");
    let analysis_id = last["job"]["result"]["analysis_id"].as_str().unwrap().to_owned();

    let (status, report) = client.get(&format!("/api/v1/analyses/{analysis_id}")).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["title"], "Checkout, last half hour");
    assert_eq!(
        report["metrics"],
        json!(["api.errors", "api.latency"]),
        "every metric with events"
    );
    assert_eq!(report["bucket_seconds"], 60);
    // Summaries: exact count, sum, min, max; percentiles within the sketch's error.
    for summary in report["summaries"].as_array().unwrap() {
        let metric = summary["metric"].as_str().unwrap();
        let mut values = sent[metric].clone();
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let sum: f64 = values.iter().sum();
        assert_eq!(summary["count"].as_u64(), Some(n as u64), "{metric}");
        assert!(
            (summary["sum"].as_f64().unwrap() - sum).abs() < 1e-6,
            "{metric} sum {summary}"
        );
        assert!(
            (summary["avg"].as_f64().unwrap() - sum / n as f64).abs() < 1e-9,
            "{metric} avg"
        );
        assert_eq!(summary["min"].as_f64(), Some(values[0]), "{metric}");
        assert_eq!(summary["max"].as_f64(), Some(values[n - 1]), "{metric}");
        for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99)] {
            let want = percentile(&values, q);
            let got = summary[name].as_f64().unwrap();
            assert!(
                (got - want).abs() <= want.abs() * RELATIVE_ERROR + 1e-9,
                "{metric} {name}: {got} vs {want}"
            );
        }
    }
    // Findings: the spike's minute is an anomaly of api.latency (and only
    // it), and the alert's firing is there.
    let findings = report["findings"].as_array().unwrap();
    let anomalies: Vec<&Value> = findings.iter().filter(|f| f["kind"] == "anomaly").collect();
    assert_eq!(anomalies.len(), 1, "{findings:#?}");
    assert_eq!(anomalies[0]["metric"], "api.latency");
    assert_eq!(anomalies[0]["at"], rfc3339(spike_minute));
    assert_eq!(anomalies[0]["value"], json!(900.0));
    assert_eq!(anomalies[0]["severity"], "error");
    assert_eq!(anomalies[0]["properties"]["direction"], "above");
    let alerts: Vec<&Value> = findings.iter().filter(|f| f["kind"] == "alert_fired").collect();
    assert_eq!(alerts.len(), 1, "{findings:#?}");
    assert_eq!(alerts[0]["properties"]["rule_id"], rule_id.as_str());
    assert_eq!(alerts[0]["metric"], "api.latency");
    assert_eq!(alerts[0]["value"], json!(900.0));
    // Charts: avg and p95 per metric, a bucket per minute with events.
    let series = report["series"].as_array().unwrap();
    assert_eq!(series.len(), 4);
    let latency_avg = series
        .iter()
        .find(|s| s["metric"] == "api.latency" && s["aggregation"] == "avg")
        .unwrap();
    assert_eq!(latency_avg["buckets"].as_array().unwrap().len(), 31);

    // Listed, newest first; another tenant sees none of it.
    let (_, list) = client.get("/api/v1/analyses").await;
    assert_eq!(list["analyses"][0]["id"], analysis_id.as_str());
    assert!(list["analyses"][0].get("summaries").is_none());
    let other = Client::new(&system, "globex");
    let (status, body) = other.get(&format!("/api/v1/analyses/{analysis_id}")).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let (_, list) = other.get("/api/v1/analyses").await;
    assert_eq!(list["analyses"], json!([]));
    let (status, _) = other.get(&format!("/api/v1/jobs/{job_id}")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn bad_analysis_requests_are_refused_and_start_no_job() {
    let system = system!();
    let client = Client::new(&system, "acme");
    let now = OffsetDateTime::now_utc();
    let good = json!({"start": rfc3339(now - time::Duration::hours(1)), "end": rfc3339(now), "bucket_seconds": 60});
    let with = |field: &str, value: Value| {
        let mut b = good.clone();
        b[field] = value;
        b
    };
    for (what, body, needle) in [
        (
            "start after end",
            with("start", json!(rfc3339(now + time::Duration::hours(1)))),
            "before",
        ),
        ("start equal to end", with("start", json!(rfc3339(now))), "before"),
        ("zero bucket", with("bucket_seconds", json!(0)), "bucket_seconds"),
        ("negative bucket", with("bucket_seconds", json!(-60)), "bucket_seconds"),
        ("too many buckets", with("bucket_seconds", json!(0.1)), "bucket_seconds"),
        (
            "too many buckets",
            with("start", json!(rfc3339(now - time::Duration::days(8)))),
            "buckets",
        ),
        ("bad metric", with("metrics", json!(["ok", "9bad"])), "metrics[1]"),
        ("a metric twice", with("metrics", json!(["a", "a"])), "twice"),
        ("not a time", with("end", json!("yesterday")), "end"),
        ("unknown field", with("format", json!("pdf")), "format"),
        ("long title", with("title", json!("x".repeat(201))), "title"),
    ] {
        let (status, problem) = client.post("/api/v1/analyses", &body, None).await;
        assert_eq!(status, 400, "{what}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(needle),
            "{what}: {problem}"
        );
    }
    let (_, jobs) = client.get("/api/v1/jobs").await;
    assert_eq!(jobs["jobs"], json!([]), "no job was started");
    let (_, list) = client.get("/api/v1/analyses").await;
    assert_eq!(list["analyses"], json!([]));
    for path in [
        "/api/v1/analyses/not-an-id",
        "/api/v1/analyses/0193a9d1-0000-7000-8000-000000000000",
    ] {
        let (status, body) = client.get(path).await;
        assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "{path}");
    }
}

/// What an `analyze` job relies on when its attempt is retried (a worker
/// died after the report was stored): the same run id answers the same
/// report, and no second one is stored.
#[tokio::test]
async fn a_retried_run_answers_the_report_the_first_run_stored() {
    use futures::StreamExt;
    use sextant_proto::analytics::v1 as pb;

    let system = system!();
    let client = Client::new(&system, "acme");
    let now = OffsetDateTime::now_utc();
    client
        .ingest(&[json!({"name": "retried", "ts": rfc3339(now - time::Duration::minutes(5)), "value": 1.0})])
        .await;
    let mut grpc = system.analytics_client("acme").await;
    let ts = |t: OffsetDateTime| prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: 0,
    };
    let request = pb::RunAnalysisRequest {
        analysis: Some(pb::CreateAnalysisRequest {
            title: "retried".into(),
            range: Some(sextant_proto::common::v1::TimeRange {
                start: Some(ts(now - time::Duration::hours(1))),
                end: Some(ts(now)),
            }),
            metrics: vec![],
            bucket: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
        }),
        run_id: "job-0193".into(),
    };
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut stream = grpc.run_analysis(request.clone()).await.unwrap().into_inner();
        let mut last = None;
        while let Some(message) = stream.next().await {
            last = message.unwrap().message;
        }
        match last {
            Some(pb::run_analysis_response::Message::Analysis(a)) => ids.push(a.id),
            other => panic!("the run ended with {other:?}"),
        }
    }
    assert_eq!(ids[0], ids[1], "one report per run id");
    let (_, list) = client.get("/api/v1/analyses").await;
    assert_eq!(list["analyses"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["analyses"][0]["id"], ids[0].as_str());
}
