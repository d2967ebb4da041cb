//! The exports service over gRPC (its gateway routes come next): a real
//! analysis rendered in every format, stored, and downloaded whole, each file
//! checked by an independent reader; a batch as a ZIP matching its manifest;
//! idempotency; tenant isolation; bad requests refused with nothing created.

use std::io::{Cursor, Read};

use futures::StreamExt;
use serde_json::{Value, json};
use sextant_e2e::TestSystem;
use sextant_e2e::system::ExportsClient;
use sextant_proto::exports::v1 as pb;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::metrics::{Client, rfc3339};
use crate::system;

/// An analysis of `tenant` over the last hour, made through the gateway.
async fn analysis(system: &TestSystem, tenant: &str) -> String {
    let client = Client::new(system, tenant);
    let now = OffsetDateTime::now_utc();
    let events: Vec<Value> = (0..30)
        .map(|i| {
            json!({"name": "=cmd|x", "ts": rfc3339(now - time::Duration::minutes(40) + time::Duration::seconds(i * 60)),
                   "value": 10.0 + (i % 5) as f64, "labels": {"host": "<script>"}})
        })
        .collect();
    // "=cmd|x" is not a valid metric name: the refused event shows the rest stays.
    let answer = client.ingest(&events).await;
    assert_eq!(answer["accepted"], 0, "{answer}");
    let events: Vec<Value> = (0..30)
        .map(|i| {
            json!({"name": "api.latency", "ts": rfc3339(now - time::Duration::minutes(40) + time::Duration::seconds(i * 60)),
                   "value": 10.0 + (i % 5) as f64 + if i == 20 { 500.0 } else { 0.0 }, "labels": {"host": "<script>"}})
        })
        .collect();
    client.ingest(&events).await;
    let (status, job) = client
        .post(
            "/api/v1/analyses",
            &json!({"title": "=HYPERLINK(\"http://evil\") <script>alert(1)</script>",
                    "start": rfc3339(now - time::Duration::hours(1)), "end": rfc3339(now), "bucket_seconds": 60}),
            None,
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    for _ in 0..100 {
        let (_, job) = client.get(&format!("/api/v1/jobs/{id}")).await;
        if job["status"] == "succeeded" {
            return job["result"]["analysis_id"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the analysis job did not succeed");
}

fn spec(format: pb::ExportFormat) -> pb::FormatSpec {
    pb::FormatSpec {
        format: format as i32,
        csv_section: 0,
    }
}

async fn download(client: &mut ExportsClient, id: &str) -> (pb::Export, Vec<u8>) {
    let mut stream = client
        .download_export(pb::DownloadExportRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner();
    let mut metadata = None;
    let mut bytes = Vec::new();
    while let Some(part) = stream.next().await {
        match part.unwrap().part.unwrap() {
            pb::download_export_response::Part::Metadata(m) => metadata = Some(m),
            pb::download_export_response::Part::Chunk(c) => bytes.extend(c),
        }
    }
    (metadata.expect("metadata first"), bytes)
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn every_format_renders_stores_and_downloads_whole() {
    let system = system!();
    let analysis_id = analysis(&system, "acme").await;
    let mut client = system.exports_client("acme").await;
    for (format, content_type) in [
        (pb::ExportFormat::Csv, "text/csv; charset=utf-8"),
        (pb::ExportFormat::Json, "application/json"),
        (pb::ExportFormat::Sarif, "application/sarif+json"),
        (pb::ExportFormat::Html, "text/html; charset=utf-8"),
        (
            pb::ExportFormat::Xlsx,
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ),
    ] {
        let export = client
            .create_export(pb::CreateExportRequest {
                analysis_id: analysis_id.clone(),
                format: Some(spec(format)),
                idempotency_key: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(export.status, pb::ExportStatus::Ready as i32, "{export:?}");
        assert_eq!(export.content_type, content_type);
        let (metadata, bytes) = download(&mut client, &export.id).await;
        assert_eq!(metadata.size_bytes, bytes.len() as u64);
        assert_eq!(metadata.sha256, sha256(&bytes), "{format:?}");
        match format {
            pb::ExportFormat::Csv => {
                let mut reader = csv::Reader::from_reader(bytes.as_slice());
                let metric = reader.headers().unwrap().iter().position(|h| h == "metric").unwrap();
                let rows: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>().unwrap();
                assert!(rows.iter().any(|r| &r[0] == "metrics" && &r[metric] == "api.latency"));
                assert!(
                    rows.iter().all(|r| r.iter().all(|c| !c.starts_with('='))),
                    "no live formula"
                );
            }
            pb::ExportFormat::Json | pb::ExportFormat::Sarif => {
                let doc: Value = serde_json::from_slice(&bytes).unwrap();
                if format == pb::ExportFormat::Sarif {
                    assert_eq!(doc["version"], "2.1.0");
                    assert!(
                        !doc["runs"][0]["results"].as_array().unwrap().is_empty(),
                        "the spike is a result"
                    );
                } else {
                    assert_eq!(doc["analysis"]["id"], analysis_id.as_str());
                }
            }
            pb::ExportFormat::Html => {
                let page = String::from_utf8(bytes).unwrap();
                assert!(!page.contains("<script>alert(1)"), "escaped");
                assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
            }
            pb::ExportFormat::Xlsx => assert_eq!(&bytes[..2], b"PK"),
            _ => unreachable!(),
        }
    }

    // A batch as one ZIP whose files match its manifest.
    let batch = client
        .create_batch_export(keyed(
            &analysis_id,
            vec![spec(pb::ExportFormat::Json), spec(pb::ExportFormat::Sarif)],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.content_type, "application/zip");
    let (_, bytes) = download(&mut client, &batch.id).await;
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
    let mut manifest = String::new();
    zip.by_name("manifest.json")
        .unwrap()
        .read_to_string(&mut manifest)
        .unwrap();
    let manifest: Value = serde_json::from_str(&manifest).unwrap();
    for file in manifest["files"].as_array().unwrap() {
        let mut content = Vec::new();
        zip.by_name(file["name"].as_str().unwrap())
            .unwrap()
            .read_to_end(&mut content)
            .unwrap();
        assert_eq!(file["sha256"], sha256(&content).as_str());
    }
    // The same key and request again: the same export; another request: refused.
    let again = client
        .create_batch_export(keyed(
            &analysis_id,
            vec![spec(pb::ExportFormat::Json), spec(pb::ExportFormat::Sarif)],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.id, batch.id);
    let reused = client
        .create_batch_export(keyed(&analysis_id, vec![spec(pb::ExportFormat::Html)]))
        .await
        .unwrap_err();
    assert_eq!(reused.code(), tonic::Code::AlreadyExists);
    let listed = client
        .list_exports(pb::ListExportsRequest {
            analysis_id: analysis_id.clone(),
            page: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.exports.len(), 6, "five files and one batch");

    // Another tenant: neither the analysis nor the exports exist.
    let mut other = system.exports_client("globex").await;
    let refused = other
        .create_export(pb::CreateExportRequest {
            analysis_id: analysis_id.clone(),
            format: Some(spec(pb::ExportFormat::Csv)),
            idempotency_key: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound);
    for id in [&batch.id, &listed.exports[0].id] {
        let missing = other
            .get_export(pb::GetExportRequest { id: id.clone() })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);
        match other
            .download_export(pb::DownloadExportRequest { id: id.clone() })
            .await
        {
            Err(missing) => assert_eq!(missing.code(), tonic::Code::NotFound),
            Ok(_) => panic!("another tenant downloaded an export"),
        }
    }
}

#[tokio::test]
async fn bad_export_requests_are_refused_and_create_nothing() {
    let system = system!();
    let analysis_id = analysis(&system, "acme").await;
    let mut client = system.exports_client("acme").await;
    let csv_findings = pb::FormatSpec {
        format: pb::ExportFormat::Csv as i32,
        csv_section: pb::CsvSection::Findings as i32,
    };
    let json_with_section = pb::FormatSpec {
        format: pb::ExportFormat::Json as i32,
        csv_section: pb::CsvSection::Findings as i32,
    };
    let cases: Vec<(&str, pb::CreateBatchExportRequest, tonic::Code)> = vec![
        (
            "unknown format",
            batch(
                &analysis_id,
                vec![pb::FormatSpec {
                    format: 42,
                    csv_section: 0,
                }],
            ),
            tonic::Code::InvalidArgument,
        ),
        (
            "csv section on json",
            batch(&analysis_id, vec![json_with_section]),
            tonic::Code::InvalidArgument,
        ),
        ("empty batch", batch(&analysis_id, vec![]), tonic::Code::InvalidArgument),
        (
            "a format twice",
            batch(&analysis_id, vec![csv_findings, csv_findings]),
            tonic::Code::InvalidArgument,
        ),
        (
            "missing analysis",
            batch("0193a9d1-0000-7000-8000-000000000000", vec![csv_findings]),
            tonic::Code::NotFound,
        ),
        (
            "malformed analysis id",
            batch("not-an-id", vec![csv_findings]),
            tonic::Code::NotFound,
        ),
    ];
    for (what, request, code) in cases {
        let refused = client.create_batch_export(request).await.unwrap_err();
        assert_eq!(refused.code(), code, "{what}: {refused:?}");
    }
    let refused = client
        .create_export(pb::CreateExportRequest {
            analysis_id: analysis_id.clone(),
            format: Some(spec(pb::ExportFormat::Zip)),
            idempotency_key: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "zip alone is a batch");
    let missing = client
        .get_export(pb::GetExportRequest { id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let listed = client
        .list_exports(pb::ListExportsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.exports.is_empty(), "nothing was created: {listed:?}");
}

/// A batch request with the idempotency key `batch-1`.
fn keyed(analysis_id: &str, formats: Vec<pb::FormatSpec>) -> pb::CreateBatchExportRequest {
    pb::CreateBatchExportRequest {
        idempotency_key: "batch-1".into(),
        ..batch(analysis_id, formats)
    }
}

fn batch(analysis_id: &str, formats: Vec<pb::FormatSpec>) -> pb::CreateBatchExportRequest {
    pb::CreateBatchExportRequest {
        analysis_id: analysis_id.into(),
        formats,
        idempotency_key: String::new(),
    }
}
