//! Exports through the gateway, as a frontend uses them: an analysis whose
//! title, rule, label values and annotations carry script and formula
//! payloads is exported in every format, downloaded, and each file checked by
//! an independent reader (the SARIF schema, calamine, a CSV parser, an HTML
//! parser, the ZIP's manifest); the payloads are inert in every file. Download
//! headers and `Range`; bad requests refused with nothing created or taken
//! from the rate limit; tenant isolation.

use std::io::{Cursor, Read};

use calamine::{Data, Reader, Xlsx};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use sextant_e2e::TestSystem;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::alerts::{alerting, next_half_second};
use crate::metrics::{Client, rfc3339};
use crate::system;

pub(crate) const TITLE: &str = "=HYPERLINK(\"http://evil.example\",\"x\") <script>alert(1)</script>";
const RULE_NAME: &str = "\"><img src=x onerror=alert(2)> rule";
const HOST: &str = "\"><img src=x onerror=alert(3)>";
const SUMMARY: &str = "=HYPERLINK(\"http://evil.example\",\"click\")";
const RUNBOOK: &str = "+cmd|' /C calc'!A0";
const NOTE: &str = "@SUM(A1:A9)";

/// A client of one gateway (the system's, or another) as one user.
pub(crate) struct Gateway<'a> {
    pub system: &'a TestSystem,
    pub base: String,
    pub token: String,
}

pub(crate) struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub bytes: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

impl<'a> Gateway<'a> {
    pub fn new(system: &'a TestSystem, tenant: &str, user: &str) -> Self {
        Self {
            system,
            base: format!("http://{}", system.gateway.addr),
            token: system.token(tenant, user),
        }
    }

    pub fn at(mut self, gateway: &sextant_e2e::process::ServiceProcess) -> Self {
        self.base = format!("http://{}", gateway.addr);
        self
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = self
            .system
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}\n{}", self.system.all_logs()));
        Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            bytes: response.bytes().await.unwrap().to_vec(),
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send(reqwest::Method::POST, path, Some(body), &[]).await
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.send(reqwest::Method::GET, path, None, headers).await
    }

    /// Creates an export of one format; asserts it rendered at once.
    pub async fn export(&self, analysis: &str, format: Value) -> Value {
        let answer = self
            .post(&format!("/api/v1/analyses/{analysis}/exports"), &format)
            .await;
        assert_eq!(answer.status, 201, "{format} → {}", answer.json());
        let export = answer.json();
        assert_eq!(export["status"], "ready", "{export}");
        export
    }
}

fn percent_decoded(text: &str) -> String {
    let mut out = Vec::new();
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex: String = [bytes.next().unwrap(), bytes.next().unwrap()]
                .iter()
                .map(|&c| c as char)
                .collect();
            out.push(u8::from_str_radix(&hex, 16).unwrap());
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A small analysis of `tenant`: 30 minutes of one metric with a spike.
pub(crate) async fn plain_analysis(system: &TestSystem, tenant: &str) -> String {
    let client = Client::new(system, tenant);
    let now = OffsetDateTime::now_utc();
    let events: Vec<Value> = (0..30)
        .map(|i| {
            json!({"name": "api.latency", "ts": rfc3339(now - time::Duration::minutes(40) + time::Duration::minutes(i)),
                   "value": 10.0 + (i % 5) as f64 + if i == 20 { 500.0 } else { 0.0 }, "labels": {"host": "a"}})
        })
        .collect();
    client.ingest(&events).await;
    run_analysis(&client, "plain", now - time::Duration::hours(1), now, 60).await
}

/// Runs an analysis through the gateway and waits for its id.
pub(crate) async fn run_analysis(
    client: &Client<'_>,
    title: &str,
    start: OffsetDateTime,
    end: OffsetDateTime,
    bucket_seconds: u64,
) -> String {
    let (status, job) = client
        .post(
            "/api/v1/analyses",
            &json!({"title": title, "start": rfc3339(start), "end": rfc3339(end), "bucket_seconds": bucket_seconds}),
            None,
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    for _ in 0..600 {
        let (_, job) = client.get(&format!("/api/v1/jobs/{id}")).await;
        if job["status"] == "succeeded" {
            return job["result"]["analysis_id"].as_str().unwrap().to_owned();
        }
        assert!(job["status"] != "failed", "{job}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the analysis job did not succeed");
}

/// An analysis whose every user-supplied string is hostile: the title; an
/// alert rule's name and annotations, and the label value it groups by,
/// which reach the report through the `alert_fired` finding. (Metric names
/// cannot carry such text: ingest accepts only `[a-zA-Z_][a-zA-Z0-9_.:]*`.)
async fn hostile_analysis(system: &TestSystem) -> String {
    let client = Client::new(system, "acme");
    let now = OffsetDateTime::now_utc();
    let start = now - time::Duration::minutes(30);
    let events: Vec<Value> = (0..25)
        .map(|i| {
            json!({"name": "api.latency", "ts": rfc3339(start + time::Duration::minutes(i)),
                   "value": 100.0 + (i % 7) as f64, "labels": {"host": HOST}})
        })
        .collect();
    client.ingest(&events).await;
    let rule = json!({
        "name": RULE_NAME, "metric": "api.latency", "aggregation": "max", "window_seconds": 2,
        "comparator": "gt", "threshold": 500.0, "group_by": "host",
        "annotations": {"summary": SUMMARY, "runbook": RUNBOOK, "note": NOTE},
    });
    let rule_id = client.create_rule(&rule).await["id"].as_str().unwrap().to_owned();
    let mut fired = false;
    for _ in 0..12 {
        let ts = next_half_second().await;
        client.send("api.latency", ts, 900.0, HOST).await;
        let (_, body) = client
            .get(&format!("/api/v1/alerts/instances?rule_id={rule_id}&state=firing"))
            .await;
        if !body["instances"].as_array().unwrap().is_empty() {
            fired = true;
            break;
        }
    }
    assert!(fired, "the alert fired");
    run_analysis(
        &client,
        TITLE,
        start,
        OffsetDateTime::now_utc() + time::Duration::seconds(1),
        60,
    )
    .await
}

/// Every hostile string as it was sent.
const PAYLOADS: [&str; 6] = [TITLE, RULE_NAME, HOST, SUMMARY, RUNBOOK, NOTE];

/// A spreadsheet would run a cell starting like this.
fn live_formula(cell: &str) -> bool {
    cell.starts_with(['=', '+', '-', '@', '\t', '\r']) && cell.parse::<f64>().is_err()
}

fn check_csv(bytes: &[u8], analysis: &Value) {
    let mut reader = csv::Reader::from_reader(bytes);
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_owned).collect();
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>().unwrap();
    for row in &rows {
        assert_eq!(row.len(), header.len(), "every record has every column");
        for cell in row {
            assert!(!live_formula(cell), "a live formula: {cell:?}");
        }
    }
    let cells: Vec<&str> = rows.iter().flat_map(|r| r.iter()).collect();
    for payload in PAYLOADS {
        assert!(cells.iter().any(|c| c.contains(payload)), "{payload} is there, as text");
    }
    let title = rows
        .iter()
        .find(|r| &r[0] == "summary" && &r[column("field")] == "title")
        .unwrap();
    assert_eq!(
        &title[column("value")],
        format!("'{TITLE}"),
        "a title a spreadsheet would run, neutralised"
    );
    // The metrics section: the analysis's summary, numbers as numbers.
    let summary = &analysis["summaries"][0];
    let metric = rows.iter().find(|r| &r[0] == "metrics").unwrap();
    assert_eq!(&metric[column("metric")], "api.latency");
    assert_eq!(
        metric[column("count")].parse::<u64>().unwrap(),
        summary["count"].as_u64().unwrap()
    );
    let max: f64 = metric[column("max")].parse().unwrap();
    assert_eq!(max, summary["max"].as_f64().unwrap());
    let series = rows.iter().filter(|r| &r[0] == "series").count();
    let buckets: usize = analysis["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["buckets"].as_array().unwrap().len())
        .sum();
    assert_eq!(series, buckets, "one row per bucket of every series");
}

fn check_xlsx(bytes: Vec<u8>, analysis: &Value) {
    let mut book: Xlsx<_> = Xlsx::new(Cursor::new(bytes)).unwrap();
    assert_eq!(
        book.sheet_names(),
        ["summary", "metrics", "findings", "series", "charts", "chart_data"]
    );
    let summary = book.worksheet_range("summary").unwrap();
    let title = summary
        .rows()
        .find(|r| r[0] == Data::String("title".into()))
        .expect("a title row");
    assert_eq!(title[1], Data::String(TITLE.into()), "the title, as a string");
    let metrics = book.worksheet_range("metrics").unwrap();
    assert_eq!(metrics.get_value((1, 0)), Some(&Data::String("api.latency".into())));
    assert_eq!(
        metrics.get_value((1, 1)),
        Some(&Data::Float(analysis["summaries"][0]["count"].as_f64().unwrap()))
    );
    let findings = book.worksheet_range("findings").unwrap();
    let cells: Vec<String> = findings
        .rows()
        .flat_map(|r| r.iter().map(|c| c.to_string()).collect::<Vec<_>>())
        .collect();
    for payload in [RULE_NAME, SUMMARY, RUNBOOK, NOTE] {
        assert!(
            cells.iter().any(|c| c.contains(payload)),
            "{payload} is in a findings cell"
        );
    }
    let series = book.worksheet_range("series").unwrap();
    let buckets: usize = analysis["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["buckets"].as_array().unwrap().len())
        .sum();
    assert_eq!(series.height(), buckets + 1, "a header and a row per bucket");
    for name in ["summary", "metrics", "findings", "series"] {
        let formulas = book.worksheet_formula(name).unwrap();
        assert!(
            formulas.used_cells().all(|(_, _, f)| f.is_empty()),
            "no formula in {name}"
        );
    }
}

fn check_html(bytes: &[u8]) {
    let page = String::from_utf8(bytes.to_vec()).unwrap();
    let document = scraper::Html::parse_document(&page);
    let all = scraper::Selector::parse("*").unwrap();
    let mut text = String::new();
    for element in document.select(&all) {
        let name = element.value().name();
        assert!(
            !matches!(name, "script" | "img" | "iframe" | "object" | "embed" | "link"),
            "a <{name}> element"
        );
        for (attribute, value) in element.value().attrs() {
            assert!(!attribute.starts_with("on"), "an event handler: {attribute}={value}");
            let lower = value.to_ascii_lowercase();
            if matches!(attribute, "href" | "src" | "action" | "xlink:href" | "srcset" | "style") {
                assert!(
                    !lower.contains("http:")
                        && !lower.contains("https:")
                        && !lower.contains("//")
                        && !lower.contains("url("),
                    "an external reference: {attribute}={value}"
                );
            }
        }
        text.extend(element.text());
    }
    let csp = scraper::Selector::parse(r#"meta[http-equiv="Content-Security-Policy"]"#).unwrap();
    let policy = document
        .select(&csp)
        .next()
        .expect("a CSP meta")
        .value()
        .attr("content")
        .unwrap();
    assert!(policy.contains("default-src 'none'"), "{policy}");
    for payload in PAYLOADS {
        assert!(text.contains(payload), "{payload} is shown as text");
    }
    let style = scraper::Selector::parse("style").unwrap();
    for css in document.select(&style) {
        let css: String = css.text().collect();
        assert!(!css.contains("url(") && !css.contains("@import"), "CSS loads nothing");
    }
    assert!(
        document
            .select(&scraper::Selector::parse("svg").unwrap())
            .next()
            .is_some(),
        "a chart"
    );
}

fn check_sarif(bytes: &[u8]) {
    let doc: Value = serde_json::from_slice(bytes).unwrap();
    let schema: Value = serde_json::from_str(include_str!(
        "../../../crates/exports/tests/data/sarif-schema-2.1.0.json"
    ))
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let results = doc["runs"][0]["results"].as_array().unwrap();
    assert!(results.iter().any(|r| r["ruleId"] == "alert_fired"), "{results:#?}");
    for r in results {
        assert!(r["partialFingerprints"].as_object().is_some_and(|f| !f.is_empty()));
        assert!(!r["locations"].as_array().unwrap().is_empty());
    }
    assert_json_without_markup(bytes, &doc);
}

/// Every string in a JSON document, keys and values.
fn strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        Value::Object(map) => map.iter().for_each(|(k, v)| {
            out.push(k.clone());
            strings(v, out);
        }),
        _ => {}
    }
}

/// The file holds no `<`, `>` or `&` (they are escaped as `\u003c`…), yet
/// reads back with every payload intact.
fn assert_json_without_markup(bytes: &[u8], doc: &Value) {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(!text.contains(['<', '>', '&']), "no markup in the file");
    let mut all = Vec::new();
    strings(doc, &mut all);
    for payload in PAYLOADS {
        assert!(all.iter().any(|s| s.contains(payload)), "{payload} is in the document");
    }
}

#[tokio::test]
async fn every_format_downloads_through_the_gateway_and_reads_back_with_payloads_inert() {
    let system = system!(alerting());
    let analysis_id = hostile_analysis(&system).await;
    let gateway = Gateway::new(&system, "acme", "alice");
    let analysis = gateway
        .get(&format!("/api/v1/analyses/{analysis_id}"), &[])
        .await
        .json();
    assert_eq!(analysis["title"], TITLE);

    for (format, content_type, extension) in [
        (json!({"format": "csv"}), "text/csv; charset=utf-8", "csv"),
        (json!({"format": "json"}), "application/json", "json"),
        (json!({"format": "sarif"}), "application/sarif+json", "sarif"),
        (json!({"format": "html"}), "text/html; charset=utf-8", "html"),
        (
            json!({"format": "xlsx"}),
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "xlsx",
        ),
    ] {
        let export = gateway.export(&analysis_id, format.clone()).await;
        let id = export["id"].as_str().unwrap();
        let download = gateway.get(&format!("/api/v1/exports/{id}/download"), &[]).await;
        assert_eq!(download.status, 200, "{format}");
        assert_eq!(download.header("content-type"), content_type);
        assert_eq!(download.header("content-length"), download.bytes.len().to_string());
        assert_eq!(export["size_bytes"], download.bytes.len());
        assert_eq!(download.header("etag"), format!("\"{}\"", sha256(&download.bytes)));
        assert_eq!(export["sha256"], sha256(&download.bytes));
        let filename = format!("analysis-{analysis_id}.{extension}");
        let disposition = download.header("content-disposition");
        let (plain, extended) = disposition
            .split_once("; filename*=UTF-8''")
            .unwrap_or_else(|| panic!("{disposition}"));
        assert_eq!(plain, format!("attachment; filename=\"{filename}\""));
        assert_eq!(percent_decoded(extended), filename, "RFC 8187 encoded");
        match extension {
            "csv" => check_csv(&download.bytes, &analysis),
            "json" => {
                let doc: Value = serde_json::from_slice(&download.bytes).unwrap();
                assert_eq!(doc["analysis"]["id"], analysis_id.as_str());
                assert_eq!(doc["analysis"]["title"], TITLE, "JSON carries the string as data");
                assert_json_without_markup(&download.bytes, &doc);
            }
            "sarif" => check_sarif(&download.bytes),
            "html" => check_html(&download.bytes),
            "xlsx" => check_xlsx(download.bytes.clone(), &analysis),
            _ => unreachable!(),
        }
    }

    // One CSV section.
    let findings = gateway
        .export(&analysis_id, json!({"format": "csv", "csv_section": "findings"}))
        .await;
    assert_eq!(
        findings["formats"],
        json!([{"format": "csv", "csv_section": "findings"}])
    );
    let bytes = gateway
        .get(
            &format!("/api/v1/exports/{}/download", findings["id"].as_str().unwrap()),
            &[],
        )
        .await
        .bytes;
    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    assert_eq!(reader.headers().unwrap().iter().next(), Some("id"));
    let kinds: Vec<String> = reader.records().map(|r| r.unwrap()[1].to_owned()).collect();
    assert!(kinds.contains(&"alert_fired".to_owned()), "{kinds:?}");

    // A batch: one ZIP whose files match its manifest.
    let answer = gateway
        .post(
            &format!("/api/v1/analyses/{analysis_id}/exports/batch"),
            &json!({"formats": [{"format": "sarif"}, {"format": "csv", "csv_section": "series"}, {"format": "html"}]}),
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.json());
    let batch = answer.json();
    assert_eq!(batch["content_type"], "application/zip");
    let zip_bytes = gateway
        .get(
            &format!("/api/v1/exports/{}/download", batch["id"].as_str().unwrap()),
            &[],
        )
        .await
        .bytes;
    let mut zip = zip::ZipArchive::new(Cursor::new(zip_bytes)).unwrap();
    let mut manifest = String::new();
    zip.by_name("manifest.json")
        .unwrap()
        .read_to_string(&mut manifest)
        .unwrap();
    let manifest: Value = serde_json::from_str(&manifest).unwrap();
    let files = manifest["files"].as_array().unwrap();
    assert_eq!(files.len(), 3);
    assert_eq!(zip.len(), 4, "three files and the manifest");
    for file in files {
        let mut content = Vec::new();
        zip.by_name(file["name"].as_str().unwrap())
            .unwrap()
            .read_to_end(&mut content)
            .unwrap();
        assert_eq!(file["size"], content.len());
        assert_eq!(file["sha256"], sha256(&content).as_str());
        if file["name"].as_str().unwrap().ends_with(".sarif") {
            check_sarif(&content);
        }
    }

    // Range: a middle slice, a suffix, one past the end; If-None-Match.
    let csv_export = gateway.export(&analysis_id, json!({"format": "csv"})).await;
    let path = format!("/api/v1/exports/{}/download", csv_export["id"].as_str().unwrap());
    let whole = gateway.get(&path, &[]).await.bytes;
    let size = whole.len();
    let part = gateway.get(&path, &[("range", "bytes=10-99")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.bytes, whole[10..100]);
    assert_eq!(part.header("content-range"), format!("bytes 10-99/{size}"));
    assert_eq!(part.header("content-length"), "90");
    let tail = gateway.get(&path, &[("range", "bytes=-25")]).await;
    assert_eq!((tail.status, tail.bytes.as_slice()), (206, &whole[size - 25..]));
    let resumed = gateway.get(&path, &[("range", &format!("bytes={}-", size - 7))]).await;
    assert_eq!(resumed.bytes, whole[size - 7..]);
    let stale = gateway
        .get(&path, &[("range", "bytes=0-9"), ("if-range", "\"other\"")])
        .await;
    assert_eq!(
        (stale.status, stale.bytes.len()),
        (200, size),
        "If-Range mismatch: the whole file"
    );
    let past = gateway.get(&path, &[("range", &format!("bytes={size}-"))]).await;
    assert_eq!(past.status, 416);
    assert_eq!(past.header("content-range"), format!("bytes */{size}"));
    assert_eq!(past.json()["code"], "range_not_satisfiable");
    let etag = format!("\"{}\"", sha256(&whole));
    let cached = gateway.get(&path, &[("if-none-match", &etag)]).await;
    assert_eq!((cached.status, cached.bytes.len()), (304, 0));

    // The lists: the analysis's, and all of the tenant's.
    let listed = gateway
        .get(&format!("/api/v1/analyses/{analysis_id}/exports"), &[])
        .await
        .json();
    assert_eq!(listed["exports"].as_array().unwrap().len(), 8, "{listed}");
    let page = gateway.get("/api/v1/exports?page_size=5", &[]).await.json();
    assert_eq!(page["exports"].as_array().unwrap().len(), 5);
    let rest = gateway
        .get(
            &format!("/api/v1/exports?cursor={}", page["next_cursor"].as_str().unwrap()),
            &[],
        )
        .await
        .json();
    assert_eq!(rest["exports"].as_array().unwrap().len(), 3);
}

/// What is wrong, path, body, headers, the status and a part of the detail.
type Case<'a> = (&'a str, &'a str, Value, &'a [(&'a str, &'a str)], u16, &'a str);

#[tokio::test]
async fn bad_export_requests_are_clear_problems_that_create_and_take_nothing() {
    let system = system!();
    let analysis_id = plain_analysis(&system, "acme").await;
    let gateway = Gateway::new(&system, "acme", "alice");
    let first = gateway
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/analyses/{analysis_id}/exports"),
            Some(&json!({"format": "json"})),
            &[("idempotency-key", "k-1")],
        )
        .await;
    assert_eq!(first.status, 201);
    assert_eq!(first.header("ratelimit-remaining"), "9");
    let exports = format!("/api/v1/analyses/{analysis_id}/exports");
    let batch = format!("/api/v1/analyses/{analysis_id}/exports/batch");
    let missing = "/api/v1/analyses/0193a9d1-0000-7000-8000-000000000000/exports";
    let cases: Vec<Case<'_>> = vec![
        (
            "unknown format",
            &exports,
            json!({"format": "pdf"}),
            &[],
            400,
            "format \"pdf\" is unknown",
        ),
        (
            "zip alone",
            &exports,
            json!({"format": "zip"}),
            &[],
            400,
            "zip is a batch",
        ),
        (
            "csv section on json",
            &exports,
            json!({"format": "json", "csv_section": "findings"}),
            &[],
            400,
            "csv_section applies only to the csv format",
        ),
        (
            "unknown csv section",
            &exports,
            json!({"format": "csv", "csv_section": "all"}),
            &[],
            400,
            "csv_section \"all\" is unknown",
        ),
        (
            "an unknown field",
            &exports,
            json!({"format": "csv", "sheet": 1}),
            &[],
            400,
            "unknown field",
        ),
        (
            "empty batch",
            &batch,
            json!({"formats": []}),
            &[],
            400,
            "formats must name 1 to 16 formats",
        ),
        (
            "duplicate formats",
            &batch,
            json!({"formats": [{"format": "csv"}, {"format": "html"}, {"format": "csv", "csv_section": "combined"}]}),
            &[],
            400,
            "formats[2]: csv:combined is named twice",
        ),
        (
            "csv section in a batch",
            &batch,
            json!({"formats": [{"format": "html", "csv_section": "series"}]}),
            &[],
            400,
            "formats[0].csv_section applies only",
        ),
        (
            "missing analysis",
            missing,
            json!({"format": "csv"}),
            &[],
            404,
            "no such analysis",
        ),
        (
            "malformed analysis id",
            "/api/v1/analyses/not-an-id/exports",
            json!({"format": "csv"}),
            &[],
            404,
            "no such analysis",
        ),
        (
            "reused key",
            &exports,
            json!({"format": "csv"}),
            &[("idempotency-key", "k-1")],
            409,
            "idempotency key already used",
        ),
    ];
    for (what, path, body, headers, status, detail) in cases {
        let answer = gateway.send(reqwest::Method::POST, path, Some(&body), headers).await;
        assert_eq!(answer.status, status, "{what}: {}", answer.json());
        assert_eq!(answer.header("content-type"), "application/problem+json", "{what}");
        let problem = answer.json();
        assert!(
            problem["detail"].as_str().unwrap().contains(detail),
            "{what}: {problem}"
        );
    }
    for path in [
        "/api/v1/exports/not-an-id".to_owned(),
        "/api/v1/exports/not-an-id/download".to_owned(),
        "/api/v1/exports/0193a9d1-0000-7000-8000-000000000000/download".to_owned(),
        missing.to_owned(),
    ] {
        let answer = gateway.get(&path, &[]).await;
        assert_eq!(answer.status, 404, "{path}: {}", answer.json());
        assert_eq!(answer.json()["code"], "not_found");
    }
    // Nothing was created, and nothing was taken from the rate limit.
    let listed = gateway.get("/api/v1/exports", &[]).await.json();
    assert_eq!(listed["exports"].as_array().unwrap().len(), 1, "{listed}");
    let replay = gateway
        .send(
            reqwest::Method::POST,
            &exports,
            Some(&json!({"format": "json"})),
            &[("idempotency-key", "k-1")],
        )
        .await;
    assert_eq!(replay.status, 200, "a replay answers the same export");
    assert_eq!(replay.json()["id"], first.json()["id"]);
    let next = gateway.post(&exports, &json!({"format": "csv"})).await;
    assert_eq!(next.status, 201);
    assert_eq!(next.header("ratelimit-remaining"), "8", "only the two creates counted");
}

#[tokio::test]
async fn a_tenant_never_sees_another_tenants_analyses_or_exports() {
    let system = system!();
    let analysis_id = plain_analysis(&system, "acme").await;
    let acme = Gateway::new(&system, "acme", "alice");
    let export = acme.export(&analysis_id, json!({"format": "csv"})).await;
    let id = export["id"].as_str().unwrap();
    let globex = Gateway::new(&system, "globex", "alice");
    let refused = [
        globex
            .post(
                &format!("/api/v1/analyses/{analysis_id}/exports"),
                &json!({"format": "csv"}),
            )
            .await,
        globex
            .post(
                &format!("/api/v1/analyses/{analysis_id}/exports/batch"),
                &json!({"formats": [{"format": "csv"}]}),
            )
            .await,
        globex
            .get(&format!("/api/v1/analyses/{analysis_id}/exports"), &[])
            .await,
        globex.get(&format!("/api/v1/analyses/{analysis_id}"), &[]).await,
        globex.get(&format!("/api/v1/exports/{id}"), &[]).await,
        globex.get(&format!("/api/v1/exports/{id}/download"), &[]).await,
        globex
            .get(&format!("/api/v1/exports/{id}/download"), &[("range", "bytes=0-9")])
            .await,
    ];
    for (i, answer) in refused.iter().enumerate() {
        assert_eq!(answer.status, 404, "request {i}: {}", answer.json());
        assert_eq!(answer.json()["code"], "not_found");
    }
    let listed = globex.get("/api/v1/exports", &[]).await.json();
    assert_eq!(listed["exports"], json!([]));
    // Acme's export is untouched.
    let mine = acme.get(&format!("/api/v1/exports/{id}/download"), &[]).await;
    assert_eq!(mine.status, 200);
}

#[tokio::test]
async fn a_download_takes_a_weak_etag_and_head_reads_no_file() {
    let system = system!();
    let analysis_id = plain_analysis(&system, "acme").await;
    let gateway = Gateway::new(&system, "acme", "alice");
    let export = gateway.export(&analysis_id, json!({"format": "csv"})).await;
    let path = format!("/api/v1/exports/{}/download", export["id"].as_str().unwrap());
    let whole = gateway.get(&path, &[]).await;
    assert_eq!(whole.status, 200);
    let etag = whole.header("etag").to_owned();

    // If-None-Match compares weakly: a weak tag, in a list, matches.
    let weak = format!("W/{etag}");
    for tags in [weak.as_str(), &format!("\"other\", {weak}"), "*"] {
        let cached = gateway.get(&path, &[("if-none-match", tags)]).await;
        assert_eq!((cached.status, cached.bytes.len()), (304, 0), "{tags}");
        assert_eq!(cached.header("etag"), etag);
    }
    let changed = gateway.get(&path, &[("if-none-match", "W/\"other\"")]).await;
    assert_eq!((changed.status, changed.bytes.len()), (200, whole.bytes.len()));
    // If-Range compares strongly: a weak tag sends the whole file.
    let range = gateway.get(&path, &[("range", "bytes=0-9"), ("if-range", &weak)]).await;
    assert_eq!((range.status, range.bytes.len()), (200, whole.bytes.len()));

    // HEAD: the GET's headers, its length included, no body.
    let head = gateway.send(reqwest::Method::HEAD, &path, None, &[]).await;
    assert_eq!(head.status, 200);
    assert!(head.bytes.is_empty());
    for header in [
        "content-length",
        "content-type",
        "content-disposition",
        "etag",
        "accept-ranges",
    ] {
        assert_eq!(head.header(header), whole.header(header), "{header}");
    }
    let part = gateway
        .send(reqwest::Method::HEAD, &path, None, &[("range", "bytes=10-19")])
        .await;
    assert_eq!((part.status, part.header("content-length")), (206, "10"));
    assert_eq!(
        part.header("content-range"),
        format!("bytes 10-19/{}", whole.bytes.len())
    );
}
