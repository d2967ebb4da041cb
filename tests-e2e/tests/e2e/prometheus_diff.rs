//! The Prometheus surface against Prometheus itself: a real Prometheus
//! (Debian's package) scrapes a target this test serves every second and
//! remote-writes every sample to Sextant; then a corpus of PromQL queries
//! is asked of both, as instant and as range queries, and the answers must
//! match: same series, same timestamps, values equal to 1e-9 relative.
//! One series leaves the target halfway, so Prometheus writes a staleness
//! marker, and both must stop returning it at the same step.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use sextant_e2e::prometheus::PrometheusServer;

use crate::system;

/// The corpus: every construct of the subset docs/prometheus.md lists.
const QUERIES: &[&str] = &[
    "diff_temperature",
    r#"diff_temperature{room="kitchen"}"#,
    r#"diff_temperature{room!="kitchen"}"#,
    r#"diff_temperature{room=~"k.*|hall"}"#,
    r#"diff_temperature{room!~"k.*"}"#,
    r#"{__name__=~"diff_requests_.*", code="500"}"#,
    "diff_requests_total",
    "diff_ephemeral",
    "up",
    "diff_temperature offset 7s",
    "rate(diff_requests_total[10s])",
    "rate(diff_requests_total[5s] offset 3s)",
    "irate(diff_requests_total[10s])",
    "increase(diff_requests_total[15s])",
    "delta(diff_temperature[20s])",
    "avg_over_time(diff_temperature[15s])",
    "sum_over_time(diff_temperature[15s])",
    "min_over_time(diff_temperature[15s])",
    "max_over_time(diff_temperature[15s])",
    "count_over_time(diff_temperature[15s])",
    "last_over_time(diff_temperature[15s])",
    "quantile_over_time(0.9, diff_temperature[20s])",
    "sum(rate(diff_requests_total[10s]))",
    "sum by (code) (rate(diff_requests_total[10s]))",
    "sum without (method) (diff_requests_total)",
    "avg(diff_temperature)",
    "min(diff_temperature)",
    "max by (room) (diff_temperature)",
    "count(diff_requests_total)",
    "topk(2, diff_temperature)",
    "bottomk(1, diff_temperature)",
    "quantile(0.5, diff_temperature)",
    "diff_temperature * 2 + 1",
    "diff_temperature > 20",
    "diff_temperature > bool 20",
    "1 - diff_temperature / 100",
    "diff_temperature - diff_temperature offset 5s",
    "diff_requests_total / on(code, method) (diff_requests_total offset 10s)",
    "sum by (code) (rate(diff_requests_total[10s])) / sum by (code) (diff_requests_total)",
    "sum by (code) (diff_requests_total) > bool on(code) sum by (code) (diff_requests_total offset 5s)",
    "histogram_quantile(0.9, rate(diff_latency_seconds_bucket[15s]))",
    "histogram_quantile(0.5, sum by (le) (rate(diff_latency_seconds_bucket[15s])))",
    "abs(diff_temperature - 20)",
    "ceil(diff_temperature)",
    "floor(diff_temperature)",
    "round(diff_temperature, 0.5)",
    "clamp_min(diff_temperature, 19.5)",
    "clamp_max(diff_temperature, 20.5)",
    r#"absent(diff_nonexistent{job="diff"})"#,
    "absent(diff_temperature)",
    "time()",
    "vector(1)",
    "scalar(sum(diff_temperature))",
    r#"label_replace(diff_temperature, "place", "$1-x", "room", "(k.*)")"#,
    "diff_requests_total and diff_requests_total > 10",
    "1 + 1",
];

/// Queries outside the subset: Sextant answers 422 naming the feature.
const UNSUPPORTED: &[&str] = &[
    "rate(diff_requests_total[10s])[30s:5s]",
    "predict_linear(diff_temperature[10s], 60)",
    "count_values(\"v\", diff_temperature)",
];

/// The scrape target: a counter by code and method, a gauge per room, a
/// classic histogram, and a series that leaves after `EPHEMERAL_SCRAPES`.
struct Target {
    scrapes: AtomicU64,
}

const EPHEMERAL_SCRAPES: u64 = 12;

impl Target {
    fn exposition(&self) -> String {
        let n = self.scrapes.fetch_add(1, Ordering::SeqCst) + 1;
        let mut out = String::new();
        out.push_str("# HELP diff_requests_total Requests served.\n# TYPE diff_requests_total counter\n");
        for (code, method, per) in [("200", "get", 7), ("200", "post", 3), ("500", "get", 1)] {
            // The 500s reset once, as a restarted process's counter does.
            let value = if code == "500" && n > 20 {
                (n - 20) * per
            } else {
                n * per
            };
            out.push_str(&format!(
                "diff_requests_total{{code=\"{code}\",method=\"{method}\"}} {value}\n"
            ));
        }
        out.push_str("# HELP diff_temperature Degrees.\n# TYPE diff_temperature gauge\n");
        for (i, room) in ["kitchen", "hall", "kids"].iter().enumerate() {
            let v = 20.0 + ((n as f64) * 0.7 + i as f64).sin() * 1.3 + i as f64 * 0.25;
            out.push_str(&format!("diff_temperature{{room=\"{room}\"}} {v}\n"));
        }
        out.push_str("# TYPE diff_latency_seconds histogram\n");
        let mut cumulative = 0;
        for (le, per) in [("0.1", 5), ("0.5", 3), ("1", 2), ("+Inf", 1)] {
            cumulative += per * n + (n % 3);
            out.push_str(&format!("diff_latency_seconds_bucket{{le=\"{le}\"}} {cumulative}\n"));
        }
        out.push_str(&format!(
            "diff_latency_seconds_sum {}\ndiff_latency_seconds_count {cumulative}\n",
            n as f64 * 1.5
        ));
        if n <= EPHEMERAL_SCRAPES {
            out.push_str(&format!("diff_ephemeral {n}\n"));
        }
        out
    }
}

async fn serve_target() -> (u16, tokio::task::JoinHandle<()>) {
    let target = Arc::new(Target {
        scrapes: AtomicU64::new(0),
    });
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let target = target.clone();
            async move { target.exposition() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (port, task)
}

struct Apis<'a> {
    http: reqwest::Client,
    prometheus: &'a PrometheusServer,
    sextant: String,
    token: String,
}

impl Apis<'_> {
    /// The same form to both; (Prometheus' answer, Sextant's).
    async fn ask(&self, path: &str, form: &[(&str, String)]) -> ((u16, Value), (u16, Value)) {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        let reference = self
            .http
            .post(self.prometheus.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let reference = (reference.status().as_u16(), reference.json().await.unwrap());
        let ours = self
            .http
            .post(format!("{}{path}", self.sextant))
            .bearer_auth(&self.token)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let ours = (ours.status().as_u16(), ours.json().await.unwrap_or(Value::Null));
        (reference, ours)
    }
}

type Points = Vec<(f64, f64)>;

/// A result as label set → points, for comparison regardless of order.
fn normalise(data: &Value) -> (String, BTreeMap<String, Points>) {
    let kind = data["resultType"].as_str().unwrap_or_default().to_owned();
    let point = |p: &Value| {
        let t = p[0].as_f64().unwrap();
        let v = match p[1].as_str().unwrap() {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            s => s.parse().unwrap(),
        };
        (t, v)
    };
    let mut out = BTreeMap::new();
    match kind.as_str() {
        "scalar" | "string" => {
            out.insert(String::new(), vec![point(&data["result"])]);
        }
        _ => {
            for s in data["result"].as_array().into_iter().flatten() {
                let labels = s["metric"].to_string();
                let points = match s.get("values") {
                    Some(values) => values.as_array().unwrap().iter().map(point).collect(),
                    None => vec![point(&s["value"])],
                };
                out.insert(labels, points);
            }
        }
    }
    (kind, out)
}

fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || ((a - b).abs() <= 1e-9 * a.abs().max(b.abs()))
}

/// Why the two answers differ, if they do.
fn difference(reference: &Value, ours: &Value) -> Option<String> {
    let (kind_a, a) = normalise(&reference["data"]);
    let (kind_b, b) = normalise(&ours["data"]);
    if kind_a != kind_b {
        return Some(format!("result type {kind_a} vs {kind_b}"));
    }
    let keys_a: Vec<&String> = a.keys().collect();
    let keys_b: Vec<&String> = b.keys().collect();
    if keys_a != keys_b {
        return Some(format!("series {keys_a:?} vs {keys_b:?}"));
    }
    for (labels, points) in &a {
        let theirs = &b[labels];
        let ta: Vec<f64> = points.iter().map(|p| p.0).collect();
        let tb: Vec<f64> = theirs.iter().map(|p| p.0).collect();
        if ta != tb {
            return Some(format!("{labels}: timestamps {ta:?} vs {tb:?}"));
        }
        for (p, q) in points.iter().zip(theirs) {
            if !same(p.1, q.1) {
                return Some(format!("{labels} at {}: {} vs {}", p.0, p.1, q.1));
            }
        }
    }
    None
}

#[tokio::test]
async fn promql_answers_match_prometheus_on_the_samples_it_remote_wrote() {
    let system = system!();
    let token = system.token("prom-diff", "grafana");
    let (target_port, _target) = serve_target().await;
    let config = format!(
        r#"
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: diff
    static_configs:
      - targets: ["127.0.0.1:{target_port}"]
remote_write:
  - url: {url}
    authorization:
      credentials: {token}
    queue_config:
      batch_send_deadline: 500ms
      max_samples_per_send: 2000
    metadata_config:
      send_interval: 2s
"#,
        url = system.url("/prometheus/api/v1/write"),
    );
    let prometheus = PrometheusServer::start(&config, &[]).await.expect("prometheus");
    let apis = Apis {
        http: reqwest::Client::new(),
        prometheus: &prometheus,
        sextant: system.url("/prometheus"),
        token,
    };

    // Thirty scrapes; the ephemeral series leaves after twelve.
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    // A whole second three seconds back: scraped, and soon written.
    let at = now - 3;
    let start = now - 28;

    // Wait until Sextant holds every sample up to `at`.
    let probe = [
        (
            "query",
            "sum(count_over_time(diff_temperature[1m])) + sum(count_over_time(diff_requests_total[1m])) \
             + sum(count_over_time(diff_latency_seconds_bucket[1m]))"
                .to_owned(),
        ),
        ("time", at.to_string()),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ((_, reference), (status, ours)) = apis.ask("/api/v1/query", &probe).await;
        if status == 200 && difference(&reference, &ours).is_none() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Sextant never caught up with Prometheus: {reference} vs {ours} ({:?} since start)\n{}",
            started.elapsed(),
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let mut failures = Vec::new();
    let mut points = 0;
    for query in QUERIES {
        let instant = [("query", (*query).to_owned()), ("time", at.to_string())];
        let range = [
            ("query", (*query).to_owned()),
            ("start", start.to_string()),
            ("end", at.to_string()),
            ("step", "2".to_owned()),
        ];
        for (kind, path, form) in [
            ("instant", "/api/v1/query", &instant[..]),
            ("range", "/api/v1/query_range", &range[..]),
        ] {
            let ((status_a, reference), (status_b, ours)) = apis.ask(path, form).await;
            assert_eq!(status_a, 200, "Prometheus refused {kind} {query}: {reference}");
            let (_, series) = normalise(&reference["data"]);
            // absent() of a present series, and the series gone stale at
            // the instant, are the corpus's empty answers.
            assert!(
                !series.is_empty()
                    || query.starts_with("absent(diff_temperature")
                    || (kind == "instant" && *query == "diff_ephemeral"),
                "{kind} {query} has no data in Prometheus, so it tests nothing: {reference}"
            );
            points += series.values().map(Vec::len).sum::<usize>();
            if status_a != status_b {
                failures.push(format!(
                    "{kind} {query}: status {status_a} vs {status_b}: {reference} / {ours}"
                ));
            } else if status_a == 200
                && let Some(why) = difference(&reference, &ours)
            {
                failures.push(format!("{kind} {query}: {why}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} answers differ:\n{}",
        failures.len(),
        QUERIES.len() * 2,
        failures.join("\n")
    );
    eprintln!(
        "{} queries, {} answers, {points} points compared",
        QUERIES.len(),
        QUERIES.len() * 2
    );

    for query in UNSUPPORTED {
        let form = [("query", (*query).to_owned()), ("time", at.to_string())];
        let (_, (status, ours)) = apis.ask("/api/v1/query", &form).await;
        assert_eq!(status, 422, "{query}: {ours}");
        assert_eq!(ours["errorType"], "execution", "{ours}");
        assert!(ours["error"].as_str().unwrap().contains("not supported"), "{ours}");
    }
}
