//! Dashboards through the gateway, as the console stores them: create,
//! read, list, replace and delete with optimistic concurrency (a stale body
//! version is 409, a stale If-Match 412); each bad body refused naming its
//! field with nothing saved; another tenant's dashboards are 404.

use serde_json::{Value, json};

use crate::metrics::Client;
use crate::system;

fn dashboard() -> Value {
    json!({
        "title": "Checkout",
        "description": "what the shop sees",
        "range_seconds": 86_400,
        "panels": [
            {
                "title": "latency",
                "kind": "line",
                "query": {
                    "metric": "http.latency_ms",
                    "aggregations": ["avg", "p95"],
                    "bucket_seconds": 60,
                    "filters": [{"label": "route", "op": "in", "values": ["/pay", "<img src=x onerror=alert(1)>"]}],
                    "group_by": "route"
                },
                "x": 0, "y": 0, "width": 6, "height": 4
            },
            {
                "kind": "stat",
                "query": {"metric": "orders", "aggregations": ["count"], "bucket_seconds": 3600},
                "x": 6, "y": 0, "width": 6, "height": 2
            }
        ]
    })
}

/// `body` with `pointer`'s value replaced.
fn with(body: &Value, pointer: &str, value: Value) -> Value {
    let mut body = body.clone();
    *body.pointer_mut(pointer).unwrap_or_else(|| panic!("{pointer}")) = value;
    body
}

/// `body` with a top-level field added.
fn plus(body: &Value, field: &str, value: Value) -> Value {
    let mut body = body.clone();
    body[field] = value;
    body
}

async fn send(
    client: &Client<'_>,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
    if_match: Option<&str>,
) -> (u16, Option<String>, Value) {
    let mut request = client
        .system
        .http
        .request(method, client.system.url(path))
        .bearer_auth(&client.token);
    if let Some(body) = body {
        request = request.json(body);
    }
    if let Some(v) = if_match {
        request = request.header("if-match", v);
    }
    let response = request.send().await.unwrap();
    let etag = response.headers().get("etag").map(|v| v.to_str().unwrap().to_owned());
    (
        response.status().as_u16(),
        etag,
        response.json::<Value>().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_dashboard_is_created_read_listed_replaced_and_deleted_by_version() {
    let system = system!();
    let client = Client::new(&system, "acme");
    let (status, etag, created) = send(
        &client,
        reqwest::Method::POST,
        "/api/v1/dashboards",
        Some(&dashboard()),
        None,
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!((created["version"].as_u64(), etag.as_deref()), (Some(1), Some("\"1\"")));
    let id = created["id"].as_str().unwrap().to_owned();
    // What was written comes back, with the defaults filled in.
    let mut expected = dashboard();
    expected["panels"][1]["title"] = json!("");
    expected["panels"][1]["query"]["filters"] = json!([]);
    expected["panels"][1]["query"]["group_by"] = Value::Null;
    for field in ["title", "description", "range_seconds", "panels"] {
        assert_eq!(created[field], expected[field], "{field}");
    }
    let path = format!("/api/v1/dashboards/{id}");
    let (status, read) = client.get(&path).await;
    assert_eq!((status, &read), (200, &created));
    let (_, list) = client.get("/api/v1/dashboards").await;
    assert_eq!(list, json!({"dashboards": [created.clone()], "next_cursor": null}));

    // Replaced from version 1, by body version or by If-Match.
    let renamed = with(&dashboard(), "/title", json!("Checkout (EU)"));
    let (status, etag, v2) = send(
        &client,
        reqwest::Method::PUT,
        &path,
        Some(&plus(&renamed, "version", json!(1))),
        None,
    )
    .await;
    assert_eq!(
        (status, etag.as_deref(), v2["title"].as_str()),
        (200, Some("\"2\""), Some("Checkout (EU)")),
        "{v2}"
    );
    let stale_body = plus(&with(&dashboard(), "/title", json!("lost")), "version", json!(1));
    let (status, _, problem) = send(&client, reqwest::Method::PUT, &path, Some(&stale_body), None).await;
    assert_eq!((status, problem["code"].as_str()), (409, Some("conflict")), "{problem}");
    let (status, _, problem) = send(&client, reqwest::Method::PUT, &path, Some(&dashboard()), Some("\"1\"")).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (412, Some("precondition_failed")),
        "{problem}"
    );
    let (_, read) = client.get(&path).await;
    assert_eq!(read, v2, "stale updates changed nothing");
    let (status, _, v3) = send(
        &client,
        reqwest::Method::PUT,
        &path,
        Some(&dashboard()),
        Some("W/\"2\""),
    )
    .await;
    assert_eq!((status, v3["version"].as_u64()), (200, Some(3)));

    // A delete with a stale If-Match deletes nothing; a current one does.
    let (status, _, problem) = send(&client, reqwest::Method::DELETE, &path, None, Some("\"2\"")).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (412, Some("precondition_failed")),
        "{problem}"
    );
    assert_eq!(client.get(&path).await.0, 200);
    let (status, _, _) = send(&client, reqwest::Method::DELETE, &path, None, Some("\"3\"")).await;
    assert_eq!(status, 204);
    let (status, _, problem) = send(&client, reqwest::Method::DELETE, &path, None, None).await;
    assert_eq!((status, problem["code"].as_str()), (404, Some("not_found")));
    let (_, list) = client.get("/api/v1/dashboards").await;
    assert_eq!(list["dashboards"], json!([]));
}

#[tokio::test]
async fn bad_dashboards_are_refused_naming_the_field_and_nothing_is_saved() {
    let system = system!();
    let client = Client::new(&system, "acme");
    let good = dashboard();
    let mut too_many = good.clone();
    too_many["panels"] = json!(vec![good["panels"][1].clone(); 25]);
    let cases: Vec<(&str, Value, &str)> = vec![
        ("blank title", with(&good, "/title", json!("   ")), "title"),
        ("title too long", with(&good, "/title", json!("t".repeat(201))), "title"),
        (
            "NUL in the description",
            with(&good, "/description", json!("a\u{0}b")),
            "description",
        ),
        ("range too short", with(&good, "/range_seconds", json!(59)), "range"),
        (
            "unknown panel kind",
            with(&good, "/panels/0/kind", json!("pie")),
            "kind",
        ),
        (
            "unknown aggregation",
            with(&good, "/panels/0/query/aggregations", json!(["p42"])),
            "aggregations",
        ),
        (
            "bad metric name",
            with(&good, "/panels/1/query/metric", json!("9lives")),
            "panels[1].query.metric",
        ),
        (
            "panel past the 12 columns",
            with(&good, "/panels/1/width", json!(7)),
            "panels[1].x and width",
        ),
        (
            "zero height",
            with(&good, "/panels/0/height", json!(0)),
            "panels[0].height",
        ),
        (
            "more buckets than a query may hold",
            with(&good, "/panels/0/query/bucket_seconds", json!(1)),
            "panels[0].query.bucket",
        ),
        ("too many panels", too_many, "panels holds at most 24"),
        (
            "empty group_by",
            with(&good, "/panels/0/query/group_by", json!("")),
            "panels[0].query.group_by",
        ),
        ("unknown field", plus(&good, "owner", json!("bob")), "owner"),
        ("version on create", plus(&good, "version", json!(1)), "version"),
    ];
    for (what, body, field) in &cases {
        let (status, problem) = client.post("/api/v1/dashboards", body, None).await;
        assert_eq!(status, 400, "{what}: {problem}");
        assert!(
            matches!(problem["code"].as_str(), Some("invalid_argument" | "malformed_request")),
            "{what}: {problem}"
        );
        assert!(problem["detail"].as_str().unwrap().contains(field), "{what}: {problem}");
    }
    let (_, list) = client.get("/api/v1/dashboards").await;
    assert_eq!(list["dashboards"], json!([]), "nothing saved");

    // The same refusals on a replace leave the dashboard as it was.
    let (_, _, created) = send(&client, reqwest::Method::POST, "/api/v1/dashboards", Some(&good), None).await;
    let path = format!("/api/v1/dashboards/{}", created["id"].as_str().unwrap());
    for (what, body, _) in cases.iter().filter(|(what, ..)| *what != "version on create") {
        let (status, _, problem) = send(&client, reqwest::Method::PUT, &path, Some(body), Some("\"1\"")).await;
        assert_eq!(status, 400, "{what}: {problem}");
    }
    let (status, _, problem) = send(&client, reqwest::Method::PUT, &path, Some(&good), None).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (400, Some("invalid_argument")),
        "no version: {problem}"
    );
    let (status, _, problem) = send(
        &client,
        reqwest::Method::PUT,
        &path,
        Some(&plus(&good, "version", json!(2))),
        Some("\"1\""),
    )
    .await;
    assert_eq!(status, 400, "If-Match and version disagree: {problem}");
    let (_, read) = client.get(&path).await;
    assert_eq!(read, created, "refused replaces changed nothing");
}

#[tokio::test]
async fn another_tenants_dashboards_are_not_found_and_not_listed() {
    let system = system!();
    let acme = Client::new(&system, "acme");
    let globex = Client::new(&system, "globex");
    let (_, _, created) = send(
        &acme,
        reqwest::Method::POST,
        "/api/v1/dashboards",
        Some(&dashboard()),
        None,
    )
    .await;
    let path = format!("/api/v1/dashboards/{}", created["id"].as_str().unwrap());
    let (status, body) = globex.get(&path).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let versioned = plus(&with(&dashboard(), "/title", json!("taken")), "version", json!(1));
    let (status, _, _) = send(&globex, reqwest::Method::PUT, &path, Some(&versioned), None).await;
    assert_eq!(status, 404);
    let (status, _, _) = send(&globex, reqwest::Method::DELETE, &path, None, None).await;
    assert_eq!(status, 404);
    let (_, list) = globex.get("/api/v1/dashboards").await;
    assert_eq!(list["dashboards"], json!([]));
    let (status, read) = acme.get(&path).await;
    assert_eq!((status, read), (200, created), "the owner's dashboard is untouched");
    for path in [
        "/api/v1/dashboards/not-a-uuid",
        "/api/v1/dashboards/0193a9d1-0000-7000-8000-000000000000",
    ] {
        assert_eq!(acme.get(path).await.0, 404, "{path}");
    }
}
