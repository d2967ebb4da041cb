//! Exports: request bodies to proto, proto to JSON.

use serde::Deserialize;
use serde_json::{Value, json};
use sextant_proto::exports::v1 as pb;

use super::rfc3339;

/// One format: `{"format": "csv", "csv_section": "findings"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormatBody {
    pub format: String,
    #[serde(default)]
    pub csv_section: Option<String>,
}

const FORMATS: &str = "sarif, html, csv, xlsx, json";
const SECTIONS: &str = "summary, metrics, findings, series, combined";

impl FormatBody {
    /// The spec, or what is wrong with it (`field` names where it is).
    pub fn spec(&self, field: &str) -> Result<pb::FormatSpec, String> {
        let format = match self.format.as_str() {
            "sarif" => pb::ExportFormat::Sarif,
            "html" => pb::ExportFormat::Html,
            "csv" => pb::ExportFormat::Csv,
            "xlsx" => pb::ExportFormat::Xlsx,
            "json" => pb::ExportFormat::Json,
            "zip" => {
                return Err(format!(
                    "{field}format: zip is a batch of formats: POST …/exports/batch"
                ));
            }
            other => return Err(format!("{field}format {other:?} is unknown; one of {FORMATS}")),
        };
        let section = match self.csv_section.as_deref() {
            None => pb::CsvSection::Unspecified,
            Some("summary") => pb::CsvSection::Summary,
            Some("metrics") => pb::CsvSection::Metrics,
            Some("findings") => pb::CsvSection::Findings,
            Some("series") => pb::CsvSection::Series,
            Some("combined") => pb::CsvSection::Combined,
            Some(other) => return Err(format!("{field}csv_section {other:?} is unknown; one of {SECTIONS}")),
        };
        if section != pb::CsvSection::Unspecified && format != pb::ExportFormat::Csv {
            return Err(format!("{field}csv_section applies only to the csv format"));
        }
        Ok(pb::FormatSpec {
            format: format as i32,
            csv_section: section as i32,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    pub formats: Vec<FormatBody>,
}

fn format_json(spec: &pb::FormatSpec) -> Value {
    let format = match pb::ExportFormat::try_from(spec.format).unwrap_or_default() {
        pb::ExportFormat::Sarif => "sarif",
        pb::ExportFormat::Html => "html",
        pb::ExportFormat::Csv => "csv",
        pb::ExportFormat::Xlsx => "xlsx",
        pb::ExportFormat::Json => "json",
        pb::ExportFormat::Zip => "zip",
        pb::ExportFormat::Unspecified => "unknown",
    };
    let section = match pb::CsvSection::try_from(spec.csv_section).unwrap_or_default() {
        pb::CsvSection::Unspecified => None,
        pb::CsvSection::Summary => Some("summary"),
        pb::CsvSection::Metrics => Some("metrics"),
        pb::CsvSection::Findings => Some("findings"),
        pb::CsvSection::Series => Some("series"),
        pb::CsvSection::Combined => Some("combined"),
    };
    match section {
        Some(section) => json!({ "format": format, "csv_section": section }),
        None => json!({ "format": format }),
    }
}

pub fn status_name(status: i32) -> &'static str {
    match pb::ExportStatus::try_from(status).unwrap_or_default() {
        pb::ExportStatus::Pending => "pending",
        pb::ExportStatus::Rendering => "rendering",
        pb::ExportStatus::Ready => "ready",
        pb::ExportStatus::Failed => "failed",
        pb::ExportStatus::Unspecified => "unknown",
    }
}

pub fn export_json(e: &pb::Export) -> Value {
    let ready = e.status == pb::ExportStatus::Ready as i32;
    json!({
        "id": e.id,
        "analysis_id": e.analysis_id,
        "formats": e.formats.iter().map(format_json).collect::<Vec<_>>(),
        "status": status_name(e.status),
        "content_type": e.content_type,
        "filename": e.filename,
        "size_bytes": ready.then_some(e.size_bytes),
        "sha256": (!e.sha256.is_empty()).then_some(&e.sha256),
        "job_id": (!e.job_id.is_empty()).then_some(&e.job_id),
        "error": (!e.error.is_empty()).then_some(&e.error),
        "created_at": rfc3339(&e.created_at),
        "ready_at": rfc3339(&e.ready_at),
        "download_url": format!("/api/v1/exports/{}/download", e.id),
    })
}
