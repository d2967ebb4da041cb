//! The Prometheus query API as its clients call it: Grafana's Prometheus
//! data source (its requests replayed byte for byte: the health check, the
//! pickers, `series`, form-bodied `query_range`) and promtool (with the
//! token as basic auth's password, as Grafana Mimir takes it). A token of
//! another tenant never sees this tenant's series.

use prost::Message as _;
use serde_json::{Value, json};
use sextant_proto::prometheus as prom;

use crate::metrics::Client;
use crate::remote_write::{PROTOBUF, body, series, write};
use crate::system;

const GRAFANA_AGENT: &str = "Grafana/11.3.0";
const FORM: &str = "application/x-www-form-urlencoded";

/// A request as Grafana sends it; the status and JSON answer.
async fn grafana(
    client: &Client<'_>,
    method: reqwest::Method,
    path_and_query: &str,
    form: Option<&str>,
) -> (u16, Value) {
    let mut request = client
        .system
        .http
        .request(method, client.system.url(&format!("/prometheus{path_and_query}")))
        .bearer_auth(&client.token)
        .header("user-agent", GRAFANA_AGENT)
        .header("x-grafana-org-id", "1")
        .header("accept", "application/json, text/plain, */*");
    if let Some(form) = form {
        request = request.header("content-type", FORM).body(form.to_owned());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn promtool(args: &[&str]) -> String {
    let output = std::process::Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool (Debian's prometheus package) must be installed");
    assert!(
        output.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn grafana_and_promtool_get_the_answers_they_parse() {
    let system = system!();
    let acme = Client::new(&system, "prom-api-acme");
    let other = Client::new(&system, "prom-api-other");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let t0 = (now - 600) / 60 * 60;
    let ms = |s: i64| s * 1000;
    let counter: Vec<(i64, f64)> = (0..5).map(|i| (ms(t0 + 15 * i), 100.0 + 30.0 * i as f64)).collect();
    let request = body(vec![
        series(
            &[
                ("__name__", "grafana_requests_total"),
                ("instance", "a"),
                ("job", "api"),
            ],
            &counter,
        ),
        series(
            &[("__name__", "grafana_temp"), ("room", "a")],
            &[(ms(t0), 21.0), (ms(t0 + 60), 22.5)],
        ),
    ]);
    assert_eq!(write(&acme, request, PROTOBUF).await.0, 204);
    let metadata = prom::WriteRequest {
        timeseries: Vec::new(),
        metadata: vec![prom::MetricMetadata {
            r#type: prom::metric_metadata::MetricType::Counter as i32,
            metric_family_name: "grafana_requests_total".into(),
            help: "Requests served.".into(),
            unit: String::new(),
        }],
    };
    let compressed = snap::raw::Encoder::new()
        .compress_vec(&metadata.encode_to_vec())
        .unwrap();
    assert_eq!(write(&acme, compressed, PROTOBUF).await.0, 204);
    // Another tenant's series of the same name, and one of its own.
    let theirs = body(vec![
        series(
            &[("__name__", "grafana_requests_total"), ("job", "other")],
            &[(ms(t0), 5.0)],
        ),
        series(&[("__name__", "grafana_secret_total")], &[(ms(t0), 1.0)]),
    ]);
    assert_eq!(write(&other, theirs, PROTOBUF).await.0, 204);

    let (start, end) = (t0 - 300, t0 + 300);
    let span = format!("start={start}&end={end}");

    // The data source's health check.
    let (status, answer) = grafana(
        &acme,
        reqwest::Method::POST,
        "/api/v1/query",
        Some("query=1%2B1&time=4"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"status": "success", "data": {"resultType": "scalar", "result": [4, "2"]}})
    );

    let (status, answer) = grafana(&acme, reqwest::Method::GET, "/api/v1/status/buildinfo", None).await;
    assert_eq!(status, 200);
    assert!(
        answer["data"]["version"].as_str().unwrap().starts_with("2."),
        "{answer}"
    );

    // The metric picker, the label pickers, the series browser.
    let (status, answer) = grafana(
        &acme,
        reqwest::Method::GET,
        &format!("/api/v1/label/__name__/values?{span}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["data"],
        json!(["grafana_requests_total", "grafana_temp"]),
        "{answer}"
    );
    let (_, answer) = grafana(
        &acme,
        reqwest::Method::GET,
        &format!("/api/v1/labels?match%5B%5D=grafana_requests_total&{span}"),
        None,
    )
    .await;
    assert_eq!(answer["data"], json!(["__name__", "instance", "job"]), "{answer}");
    let (_, answer) = grafana(
        &acme,
        reqwest::Method::POST,
        "/api/v1/labels",
        Some(&format!("match%5B%5D=%7B__name__%3D%22grafana_temp%22%7D&{span}")),
    )
    .await;
    assert_eq!(answer["data"], json!(["__name__", "room"]), "{answer}");
    let (_, answer) = grafana(
        &acme,
        reqwest::Method::GET,
        &format!("/api/v1/label/job/values?match%5B%5D=%7B__name__%3D%22grafana_requests_total%22%7D&{span}"),
        None,
    )
    .await;
    assert_eq!(answer["data"], json!(["api"]), "{answer}");
    let (_, answer) = grafana(
        &acme,
        reqwest::Method::GET,
        &format!("/api/v1/series?match%5B%5D=grafana_requests_total&{span}"),
        None,
    )
    .await;
    assert_eq!(
        answer["data"],
        json!([{"__name__": "grafana_requests_total", "instance": "a", "job": "api"}]),
        "{answer}"
    );
    let (_, answer) = grafana(&acme, reqwest::Method::GET, "/api/v1/metadata", None).await;
    assert_eq!(
        answer["data"],
        json!({"grafana_requests_total": [{"type": "counter", "help": "Requests served.", "unit": ""}]})
    );

    // A panel's range query, as a form body with a numeric step.
    let form = format!(
        "query=rate%28grafana_requests_total%5B1m%5D%29&start={}&end={}&step=15",
        t0 + 60,
        t0 + 60
    );
    let (status, answer) = grafana(&acme, reqwest::Method::POST, "/api/v1/query_range", Some(&form)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["data"]["resultType"], "matrix");
    let result = answer["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 1, "{answer}");
    assert_eq!(result[0]["metric"], json!({"instance": "a", "job": "api"}));
    // Five samples 15 s apart rising 30 each: 2/s, extrapolated over the minute's edges as Prometheus does.
    assert_eq!(result[0]["values"], json!([[t0 + 60, "2"]]), "{answer}");

    let (status, answer) = grafana(
        &acme,
        reqwest::Method::GET,
        &format!("/api/v1/query_exemplars?query=grafana_temp&{span}"),
        None,
    )
    .await;
    assert_eq!((status, answer["data"].clone()), (200, json!([])));
    let (status, answer) = grafana(&acme, reqwest::Method::GET, "/api/v1/rules", None).await;
    assert_eq!((status, answer["data"].clone()), (200, json!({"groups": []})));

    // Errors in Prometheus' envelope.
    let (status, answer) = grafana(&acme, reqwest::Method::POST, "/api/v1/query", Some("query=sum(&time=4")).await;
    assert_eq!(status, 400);
    assert_eq!(answer["status"], "error");
    assert_eq!(answer["errorType"], "bad_data", "{answer}");
    let (status, answer) = grafana(
        &acme,
        reqwest::Method::POST,
        "/api/v1/query",
        Some("query=predict_linear(grafana_temp%5B5m%5D%2C60)&time=4"),
    )
    .await;
    assert_eq!(
        (status, answer["errorType"].clone()),
        (422, json!("execution")),
        "{answer}"
    );
    let (status, answer) = grafana(
        &acme,
        reqwest::Method::POST,
        "/api/v1/query_range",
        Some("query=up&start=10&end=5&step=1"),
    )
    .await;
    assert_eq!(
        (status, answer["errorType"].clone()),
        (400, json!("bad_data")),
        "{answer}"
    );

    // A name no metric can have is no metric, not an outage.
    let (status, answer) = grafana(&acme, reqwest::Method::GET, "/api/v1/metadata?metric=%00", None).await;
    assert_eq!((status, answer["data"].clone()), (200, json!({})), "{answer}");
    let (status, answer) = grafana(
        &acme,
        reqwest::Method::POST,
        "/api/v1/query",
        Some("query=%7B__name__%3D%22%5Cx00%22%7D&time=4"),
    )
    .await;
    assert_eq!((status, answer["data"]["result"].clone()), (200, json!([])), "{answer}");

    // The other tenant sees only its own.
    let (_, answer) = grafana(
        &other,
        reqwest::Method::GET,
        &format!("/api/v1/label/__name__/values?{span}"),
        None,
    )
    .await;
    assert_eq!(
        answer["data"],
        json!(["grafana_requests_total", "grafana_secret_total"]),
        "{answer}"
    );
    let (_, answer) = grafana(
        &other,
        reqwest::Method::POST,
        "/api/v1/query",
        Some(&format!("query=grafana_requests_total&time={}", t0 + 1)),
    )
    .await;
    assert_eq!(answer["data"]["result"][0]["metric"]["job"], "other", "{answer}");
    assert_eq!(answer["data"]["result"].as_array().unwrap().len(), 1, "{answer}");
    let (_, answer) = grafana(&other, reqwest::Method::GET, "/api/v1/metadata", None).await;
    assert_eq!(answer["data"], json!({}));

    // promtool, with the token as basic auth's password.
    let base = system.url("/prometheus");
    let server = base.replacen("http://", &format!("http://promtool:{}@", acme.token), 1);
    let out = promtool(&[
        "query",
        "instant",
        "--time",
        &(t0 + 60).to_string(),
        &server,
        "grafana_temp",
    ]);
    assert_eq!(out.trim(), format!("grafana_temp{{room=\"a\"}} => 22.5 @[{}]", t0 + 60));
    let out = promtool(&[
        "query",
        "range",
        "--start",
        &t0.to_string(),
        "--end",
        &(t0 + 60).to_string(),
        "--step",
        "30s",
        &server,
        "grafana_temp",
    ]);
    assert!(out.contains("21 @[") && out.contains("22.5 @["), "{out}");
    let out = promtool(&["query", "labels", &server, "job"]);
    assert_eq!(out.trim(), "api");
    let out = promtool(&["query", "series", "--match", "grafana_requests_total", &server]);
    assert!(
        out.contains("grafana_requests_total") && out.contains("job=\"api\"") && !out.contains("other"),
        "{out}"
    );
    let out = std::process::Command::new("promtool")
        .args(["query", "instant", &base, "grafana_temp"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "promtool without a token must be refused");
}
