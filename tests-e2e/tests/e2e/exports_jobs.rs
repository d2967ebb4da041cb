//! Exports under load and faults: the per-user rate limit holds across two
//! gateways; a large export runs as an `export` job whose progress a browser
//! sees, can be cancelled mid-render leaving no file, and survives the
//! exports service killed mid-render (the retried job's file is whole, its
//! SHA-256 that of a fresh render); expired exports are deleted.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use sextant_e2e::TestSystem;
use sha2::Digest;
use time::OffsetDateTime;

use crate::exports::{Gateway, plain_analysis, run_analysis};
use crate::jobs_live::{events_until_final, following_jobs, frame};
use crate::metrics::{Client, rfc3339};
use crate::system;

/// Metrics and one-minute buckets of the large analysis: 2 series (avg and
/// p95) × 10 metrics × 10,000 buckets = 200,000 series rows: seconds of
/// rendering, time enough to cancel or kill it midway.
const METRICS: usize = 10;
const BUCKETS: i64 = 10_000;

/// Exports of more rows than this run as jobs in these tests.
fn with_jobs() -> sextant_e2e::system::TestSystemBuilder {
    TestSystem::builder().exports_env("SEXTANT_EXPORTS__JOB_THRESHOLD_ROWS", "1000")
}

/// An analysis of `BUCKETS` minutes of `METRICS` metrics, an event in each.
async fn large_analysis(system: &TestSystem) -> String {
    let client = Client::new(system, "acme");
    let end = OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp() / 60 * 60).unwrap();
    let start = end - time::Duration::minutes(BUCKETS);
    let mut batch = Vec::new();
    for minute in 0..BUCKETS {
        for m in 0..METRICS {
            let ts = start + time::Duration::minutes(minute) + time::Duration::seconds(7);
            batch.push(json!({"name": format!("m{m}"), "ts": rfc3339(ts), "value": (minute % 97) as f64 + m as f64}));
            if batch.len() == 5_000 {
                client.ingest(&batch).await;
                batch.clear();
            }
        }
    }
    client.ingest(&batch).await;
    run_analysis(&client, "large", start, end, 60).await
}

/// The files in a directory tree.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let path = e.path();
            if path.is_dir() { files(&path) } else { vec![path] }
        })
        .collect()
}

/// Progress events until the first that is part of the way.
async fn first_progress(socket: &mut sextant_e2e::ws::Socket, job_id: &str) -> Value {
    loop {
        let f = frame(socket).await;
        if f["job_id"] == job_id && f["event"] == "progress" {
            return f;
        }
        assert!(
            !(f["job_id"] == job_id && crate::jobs_live::is_final(&f)),
            "the job ended before any progress: {f}"
        );
    }
}

async fn export_when_final(gateway: &Gateway<'_>, id: &str) -> Value {
    for _ in 0..600 {
        let export = gateway.get(&format!("/api/v1/exports/{id}"), &[]).await.json();
        if matches!(export["status"].as_str(), Some("ready" | "failed")) {
            return export;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("export {id} never finished");
}

/// Creates an XLSX export of `analysis_id`, which must run as a job:
/// answers the export and its job's id.
async fn queued_export(gateway: &Gateway<'_>, analysis_id: &str) -> (Value, String) {
    let answer = gateway
        .post(
            &format!("/api/v1/analyses/{analysis_id}/exports"),
            &json!({"format": "xlsx"}),
        )
        .await;
    assert_eq!(answer.status, 202, "{}", answer.json());
    let export = answer.json();
    assert_eq!(export["status"], "pending", "{export}");
    let job_id = export["job_id"].as_str().expect("a job renders it").to_owned();
    (export, job_id)
}

#[tokio::test]
async fn a_large_export_runs_as_a_job_with_progress_and_a_cancelled_one_leaves_nothing() {
    let system = system!(with_jobs());
    let analysis_id = large_analysis(&system).await;
    let gateway = Gateway::new(&system, "acme", "alice");
    let mut socket = following_jobs(&system, "acme").await;

    let (export, job_id) = queued_export(&gateway, &analysis_id).await;
    let events = events_until_final(&mut socket, &job_id).await;
    assert_eq!(events.last().unwrap()["event"], "succeeded", "{events:#?}");
    let total = (2 * METRICS as u64) * BUCKETS as u64 + METRICS as u64 + 11;
    let progress: Vec<(u64, u64)> = events
        .iter()
        .filter(|e| e["event"] == "progress")
        .map(|e| {
            let p = &e["job"]["progress"];
            (p["step"].as_u64().unwrap(), p["total_steps"].as_u64().unwrap())
        })
        .collect();
    assert!(!progress.is_empty(), "{events:#?}");
    assert!(
        progress.iter().all(|&(_, t)| t >= total),
        "rows of the total: {progress:?}"
    );
    assert!(progress.windows(2).all(|w| w[0].0 < w[1].0), "rising: {progress:?}");
    assert!(progress[0].0 < progress[0].1, "part of the way first: {progress:?}");
    let id = export["id"].as_str().unwrap();
    let ready = export_when_final(&gateway, id).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    let file = gateway.get(&format!("/api/v1/exports/{id}/download"), &[]).await;
    assert_eq!(file.status, 200);
    assert_eq!(ready["size_bytes"], file.bytes.len());
    let job = gateway.get(&format!("/api/v1/jobs/{job_id}"), &[]).await.json();
    assert_eq!(job["result"]["sha256"], ready["sha256"], "{job}");

    // Another, cancelled once it is under way.
    let (cancelled, job_id) = queued_export(&gateway, &analysis_id).await;
    first_progress(&mut socket, &job_id).await;
    let answer = gateway.post(&format!("/api/v1/jobs/{job_id}/cancel"), &json!({})).await;
    assert_eq!(answer.status, 200, "{}", answer.json());
    let events = events_until_final(&mut socket, &job_id).await;
    assert_eq!(events.last().unwrap()["event"], "cancelled");
    let id = cancelled["id"].as_str().unwrap();
    let export = export_when_final(&gateway, id).await;
    assert_eq!(export["status"], "failed", "{export}");
    assert!(export["error"].as_str().unwrap().contains("stopped"), "{export}");
    assert_eq!(export["sha256"], Value::Null);
    let download = gateway.get(&format!("/api/v1/exports/{id}/download"), &[]).await;
    assert_eq!(download.status, 409, "{}", download.json());
    // No file of it anywhere: not in the store, not half-written in scratch.
    let dir = system.exports_dir();
    let stored = files(&dir.join("files"));
    assert!(!stored.iter().any(|p| p.to_string_lossy().contains(id)), "{stored:?}");
    assert_eq!(stored.len(), 1, "only the first export's file: {stored:?}");
    assert_eq!(files(&dir.join("scratch")), Vec::<std::path::PathBuf>::new());
}

#[tokio::test]
async fn an_export_cancelled_before_its_first_row_fails_at_once_and_leaves_no_file() {
    let system = system!(with_jobs());
    let analysis_id = large_analysis(&system).await;
    let gateway = Gateway::new(&system, "acme", "alice");
    let mut socket = following_jobs(&system, "acme").await;
    let (export, job_id) = queued_export(&gateway, &analysis_id).await;
    // Cancelled as soon as it starts: the render is still fetching the analysis.
    loop {
        let f = frame(&mut socket).await;
        if f["job_id"] == job_id.as_str() && f["event"] == "started" {
            break;
        }
    }
    let answer = gateway.post(&format!("/api/v1/jobs/{job_id}/cancel"), &json!({})).await;
    assert_eq!(answer.status, 200, "{}", answer.json());
    let events = events_until_final(&mut socket, &job_id).await;
    assert_eq!(events.last().unwrap()["event"], "cancelled");
    let cancelled_at = std::time::Instant::now();
    let id = export["id"].as_str().unwrap();
    let failed = loop {
        let export = gateway.get(&format!("/api/v1/exports/{id}"), &[]).await.json();
        if export["status"] == "failed" {
            break export;
        }
        assert!(
            cancelled_at.elapsed() < Duration::from_secs(3),
            "still {} 3 s after the cancel: {export}",
            export["status"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(failed["error"].as_str().unwrap().contains("stopped"), "{failed}");
    let download = gateway.get(&format!("/api/v1/exports/{id}/download"), &[]).await;
    assert_eq!(download.status, 409);
    let dir = system.exports_dir();
    assert_eq!(files(&dir.join("files")), Vec::<std::path::PathBuf>::new());
    assert_eq!(files(&dir.join("scratch")), Vec::<std::path::PathBuf>::new());
}

#[tokio::test]
async fn an_export_whose_job_was_never_submitted_is_queued_by_the_upkeep_and_rendered() {
    use sqlx::Connection as _;
    let system = system!(with_jobs().exports_env("SEXTANT_EXPORTS__SWEEP_INTERVAL", "200ms"));
    let analysis_id = crate::exports::plain_analysis(&system, "acme").await;
    let gateway = Gateway::new(&system, "acme", "alice");
    // What an exports service that stopped between committing a queued
    // export and submitting its job leaves: a pending record, no job.
    let url = sextant_e2e::infra::database_url(&system.admin_url, &format!("e2e_{}_exports", system.id));
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    let id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO exports (tenant, id, analysis_id, formats, batch, status, content_type, filename, object_key,
                              fingerprint, user_id, created_at)
         VALUES ('acme', $1, $2, '[\"csv:summary\"]', false, 'pending', 'text/csv; charset=utf-8', 'left.csv',
                 'acme/' || $1 || '/left.csv', 'f', 'alice', now() - interval '1 minute')",
    )
    .bind(id)
    .bind(&analysis_id)
    .execute(&mut db)
    .await
    .unwrap();
    let export = export_when_final(&gateway, &id.to_string()).await;
    assert_eq!(export["status"], "ready", "{export}");
    let job_id = export["job_id"].as_str().expect("the upkeep submitted its job");
    // The export is ready once its file is stored; its job finishes a moment later.
    let mut job = Value::Null;
    for _ in 0..100 {
        job = gateway.get(&format!("/api/v1/jobs/{job_id}"), &[]).await.json();
        if job["status"] == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        (job["kind"].as_str(), job["status"].as_str()),
        (Some("export"), Some("succeeded")),
        "{job}"
    );
    let file = gateway.get(&format!("/api/v1/exports/{id}/download"), &[]).await;
    assert_eq!(file.status, 200);
    assert!(String::from_utf8(file.bytes).unwrap().starts_with("field,value\r\n"));
}

#[tokio::test]
async fn an_export_jobs_last_progress_says_every_row_before_it_succeeds() {
    let system = system!(with_jobs());
    let analysis_id = large_analysis(&system).await;
    let gateway = Gateway::new(&system, "acme", "alice");
    let mut socket = following_jobs(&system, "acme").await;
    let (_, job_id) = queued_export(&gateway, &analysis_id).await;
    let events = events_until_final(&mut socket, &job_id).await;
    let (last, progress) = events.split_last().unwrap();
    assert_eq!(last["event"], "succeeded", "{events:#?}");
    let final_progress = progress
        .iter()
        .rev()
        .find(|e| e["event"] == "progress")
        .map(|e| e["job"]["progress"].clone())
        .expect("progress before the end");
    assert_eq!(
        final_progress["step"], final_progress["total_steps"],
        "{final_progress}"
    );
    assert_eq!(final_progress["percent"], 100.0, "{final_progress}");
    // The job as read afterwards says the same.
    let job = gateway.get(&format!("/api/v1/jobs/{job_id}"), &[]).await.json();
    assert_eq!(job["progress"]["percent"], 100.0, "{job}");
}

#[tokio::test]
async fn the_exports_service_killed_mid_render_is_retried_and_its_file_is_whole() {
    let system = system!(with_jobs());
    let analysis_id = large_analysis(&system).await;
    let gateway = Gateway::new(&system, "acme", "alice");
    let mut socket = following_jobs(&system, "acme").await;
    let (export, job_id) = queued_export(&gateway, &analysis_id).await;
    first_progress(&mut socket, &job_id).await;
    system.exports.signal(libc::SIGKILL);
    let _restarted = system.respawn_exports("exports-2");
    let events = events_until_final(&mut socket, &job_id).await;
    assert_eq!(events.last().unwrap()["event"], "succeeded", "{events:#?}");
    let job = gateway.get(&format!("/api/v1/jobs/{job_id}"), &[]).await.json();
    assert!(job["attempt"].as_u64().unwrap() >= 2, "retried: {job}");
    let id = export["id"].as_str().unwrap();
    let ready = export_when_final(&gateway, id).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    let file = gateway.get(&format!("/api/v1/exports/{id}/download"), &[]).await;
    assert_eq!(file.status, 200);
    assert_eq!(ready["size_bytes"], file.bytes.len(), "whole");
    let zip = zip::ZipArchive::new(std::io::Cursor::new(file.bytes.clone())).expect("a whole workbook");
    assert!(
        zip.index_for_name("xl/worksheets/sheet4.xml").is_some(),
        "the series sheet"
    );

    // A fresh render of the same analysis and format: the same bytes.
    let (fresh, _) = queued_export(&gateway, &analysis_id).await;
    let fresh = export_when_final(&gateway, fresh["id"].as_str().unwrap()).await;
    assert_eq!(fresh["status"], "ready", "{fresh}");
    assert_eq!(fresh["sha256"], ready["sha256"]);
    let digest = sha2::Sha256::digest(&file.bytes);
    assert_eq!(
        ready["sha256"],
        digest.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    // The killed render's scratch file is not in the store.
    let stored = files(&system.exports_dir().join("files"));
    assert_eq!(stored.len(), 2, "{stored:?}");
}

#[tokio::test]
async fn the_eleventh_export_in_a_minute_is_refused_on_either_gateway_until_retry_after() {
    let system = system!();
    let analysis_id = plain_analysis(&system, "acme").await;
    let second = system.spawn_gateway("gateway-2", &system.analytics);
    let one = Gateway::new(&system, "acme", "alice");
    let two = Gateway::new(&system, "acme", "alice").at(&second);
    let path = format!("/api/v1/analyses/{analysis_id}/exports");
    for i in 0..10 {
        let gateway = if i % 2 == 0 { &one } else { &two };
        let answer = gateway.post(&path, &json!({"format": "json"})).await;
        assert_eq!(answer.status, 201, "export {i}: {}", answer.json());
        assert_eq!(answer.header("ratelimit-limit"), "10");
        assert_eq!(answer.header("ratelimit-remaining"), (9 - i).to_string());
        assert_eq!(answer.header("ratelimit-policy"), "10;w=60");
    }
    let mut waits = Vec::new();
    for gateway in [&two, &one] {
        let refused = gateway.post(&path, &json!({"format": "json"})).await;
        assert_eq!(refused.status, 429, "{}", refused.json());
        assert_eq!(refused.json()["code"], "rate_limited");
        assert_eq!(refused.header("ratelimit-remaining"), "0");
        let wait: u64 = refused.header("retry-after").parse().unwrap();
        assert!((1..=6).contains(&wait), "{wait}");
        waits.push(wait);
    }
    // Another user of the tenant has a quota of their own; batches another limit.
    let bob = Gateway::new(&system, "acme", "bob");
    assert_eq!(bob.post(&path, &json!({"format": "json"})).await.status, 201);
    let batch = format!("/api/v1/analyses/{analysis_id}/exports/batch");
    for i in 0..5 {
        let gateway = if i % 2 == 0 { &two } else { &one };
        let answer = gateway.post(&batch, &json!({"formats": [{"format": "json"}]})).await;
        assert_eq!(answer.status, 201, "batch {i}: {}", answer.json());
    }
    let refused = one.post(&batch, &json!({"formats": [{"format": "json"}]})).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("ratelimit-limit"), "5");
    // Waiting as told lets the next one through, on either gateway.
    let refused = two.post(&path, &json!({"format": "json"})).await;
    let wait: u64 = refused.header("retry-after").parse().unwrap();
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let answer = two.post(&path, &json!({"format": "json"})).await;
    assert_eq!(answer.status, 201, "after Retry-After: {}", answer.json());
    let again = one.post(&path, &json!({"format": "json"})).await;
    assert_eq!(again.status, 429, "and only the one");
    let listed = one.get("/api/v1/exports?page_size=100", &[]).await.json();
    assert_eq!(
        listed["exports"].as_array().unwrap().len(),
        10 + 1 + 5 + 1,
        "refusals created nothing"
    );
}

#[tokio::test]
async fn expired_exports_are_deleted_file_and_record() {
    let system = system!(
        TestSystem::builder()
            .exports_env("SEXTANT_EXPORTS__RETENTION", "4s")
            .exports_env("SEXTANT_EXPORTS__SWEEP_INTERVAL", "200ms")
    );
    let analysis_id = plain_analysis(&system, "acme").await;
    let gateway = Gateway::new(&system, "acme", "alice");
    let old = gateway.export(&analysis_id, json!({"format": "csv"})).await;
    let old_id = old["id"].as_str().unwrap().to_owned();
    assert_eq!(files(&system.exports_dir().join("files")).len(), 1);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let young = gateway.export(&analysis_id, json!({"format": "json"})).await;
    let young_id = young["id"].as_str().unwrap();
    let mut gone = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if gateway.get(&format!("/api/v1/exports/{old_id}"), &[]).await.status == 404 {
            gone = true;
            break;
        }
    }
    assert!(gone, "the old export expired");
    let download = gateway.get(&format!("/api/v1/exports/{old_id}/download"), &[]).await;
    assert_eq!(download.status, 404);
    let stored = files(&system.exports_dir().join("files"));
    assert_eq!(stored.len(), 1, "only the young file is left: {stored:?}");
    assert!(stored[0].to_string_lossy().contains(young_id));
    let young = gateway.get(&format!("/api/v1/exports/{young_id}/download"), &[]).await;
    assert_eq!(young.status, 200, "the young one is untouched");
}

#[tokio::test]
async fn an_export_whose_job_is_cancelled_while_the_exports_service_is_down_ends_failed() {
    let system = system!(with_jobs().exports_env("SEXTANT_EXPORTS__SWEEP_INTERVAL", "200ms"));
    let analysis_id = large_analysis(&system).await;
    let gateway = Gateway::new(&system, "acme", "alice");
    let mut socket = following_jobs(&system, "acme").await;
    let (export, job_id) = queued_export(&gateway, &analysis_id).await;
    first_progress(&mut socket, &job_id).await;
    system.exports.signal(libc::SIGKILL);
    // The attempt breaks off; the job waits for its retry, and is cancelled.
    loop {
        let f = frame(&mut socket).await;
        if f["job_id"] == job_id.as_str() && f["event"] == "retry_scheduled" {
            break;
        }
    }
    let answer = gateway.post(&format!("/api/v1/jobs/{job_id}/cancel"), &json!({})).await;
    assert_eq!(answer.status, 200, "{}", answer.json());
    let _restarted = system.respawn_exports("exports-2");
    let id = export["id"].as_str().unwrap();
    let ended = export_when_final(&gateway, id).await;
    assert_eq!(ended["status"], "failed", "{ended}");
    assert_eq!(ended["error"], "its job was cancelled");
    assert!(
        !files(&system.exports_dir().join("files"))
            .iter()
            .any(|p| p.to_string_lossy().contains(id)),
        "no file"
    );
}
