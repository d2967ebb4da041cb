//! The Grafana dashboard (`deploy/grafana/sextant.json`) against a real
//! Prometheus scraping a running system: after a little of everything (a
//! job, events and a refused one, an alert rule evaluated, an export, a
//! WebSocket subscriber the server closes), every metric a panel names has series, and every
//! panel's query runs.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use sextant_e2e::prometheus::PrometheusServer;
use sextant_e2e::ws;
use time::OffsetDateTime;

use crate::alerts::{alerting, rule};
use crate::exports::{Gateway, plain_analysis};
use crate::metrics::{Client, rfc3339};
use crate::system;

fn dashboard() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana/sextant.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every panel's queries, with Grafana's `$__rate_interval` made concrete.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| {
            panel["targets"].as_array().into_iter().flatten().map(move |target| {
                (
                    panel["title"].as_str().unwrap().to_owned(),
                    target["expr"].as_str().unwrap().replace("$__rate_interval", "30s"),
                )
            })
        })
        .collect()
}

/// The metric names a query reads (series names, with their suffixes).
fn metric_names(query: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = query.as_bytes();
    let mut i = 0;
    while let Some(at) = query[i..].find("sextant_") {
        let start = i + at;
        let end = start
            + query[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(query.len() - start);
        if start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            names.insert(query[start..end].to_owned());
        }
        i = end;
    }
    names
}

#[tokio::test]
async fn every_panel_of_the_grafana_dashboard_reads_metrics_the_services_export() {
    if std::process::Command::new(sextant_e2e::prometheus::binary())
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(std::env::var("CI").map_or(true, |v| v != "true"), "needs prometheus");
        eprintln!("SKIPPED: needs prometheus (apt-get install prometheus)");
        return;
    }
    let system = system!(alerting());
    let targets: Vec<String> = [&system.analytics, &system.jobs, &system.exports]
        .iter()
        .map(|s| s.metrics_addr().to_string())
        .chain([system.gateway.addr.to_string()])
        .collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sextant\n    static_configs:\n      - targets: {}\n",
        serde_json::to_string(&targets).unwrap()
    );
    let prometheus = PrometheusServer::start(&config, &[]).await.unwrap();

    // A little of everything.
    let client = Client::new(&system, "acme");
    let mut socket = ws::connect(
        &system.ws_url("/api/v1/ws"),
        ws::Auth::Header(&system.token("acme", "viewer")),
    )
    .await
    .unwrap();
    assert_eq!(ws::next_json(&mut socket).await["type"], "hello");
    crate::alerts::subscribe(&mut socket, "jobs", None).await;
    let (status, _) = client
        .post("/api/v1/jobs", &json!({"kind": "noop", "payload": {}}), None)
        .await;
    assert_eq!(status, 201);
    client
        .create_rule(&rule("grafana.heat", json!({"window_seconds": 1})))
        .await;
    let now = OffsetDateTime::now_utc();
    let (status, answer) = client
        .post(
            "/api/v1/events",
            &json!({"events": [
                {"name": "grafana.heat", "ts": rfc3339(now), "value": 90.0, "labels": {"host": "a"}},
                {"name": "grafana.heat", "ts": rfc3339(now + time::Duration::hours(2)), "value": 1.0},
            ]}),
            None,
        )
        .await;
    assert_eq!((status, answer["accepted"].clone()), (200, json!(1)), "{answer}");
    let analysis = plain_analysis(&system, "acme").await;
    Gateway::new(&system, "acme", "alice")
        .export(&analysis, json!({"format": "csv"}))
        .await;
    // The job's events reach the subscriber; then it leaves.
    loop {
        let frame = ws::next_json(&mut socket).await;
        if frame["type"] == "event" && frame["event"] == "succeeded" {
            break;
        }
    }
    // A frame over max_frame_bytes: the server closes with 1009, counted.
    ws::send_text(&mut socket, &"x".repeat(70_000)).await;
    let (code, _) = ws::expect_close(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(code, 1009);

    // Each metric a panel names has series once scraped; each query runs.
    let http = reqwest::Client::new();
    let query = |q: String| {
        let http = http.clone();
        let url = prometheus.url("/api/v1/query");
        async move {
            let url = url::Url::parse_with_params(&url, [("query", q.as_str())]).unwrap();
            let answer: Value = http.get(url).send().await.unwrap().json().await.unwrap();
            answer
        }
    };
    let panels = queries(&dashboard());
    assert!(panels.len() >= 20, "{panels:?}");
    let names: BTreeSet<String> = panels.iter().flat_map(|(_, q)| metric_names(q)).collect();
    let mut missing: BTreeSet<String> = names.clone();
    for _ in 0..60 {
        let mut still = BTreeSet::new();
        for name in &missing {
            let answer = query(format!("count({{__name__=\"{name}\"}})")).await;
            if answer["data"]["result"].as_array().is_none_or(Vec::is_empty) {
                still.insert(name.clone());
            }
        }
        missing = still;
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        missing.is_empty(),
        "metrics no service exported: {missing:?} (of {names:?})"
    );
    for (title, q) in &panels {
        let answer = query(q.clone()).await;
        assert_eq!(answer["status"], "success", "{title}: {q} → {answer}");
    }
}
