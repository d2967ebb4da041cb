//! The `export` kind: renders a large export in the exports service
//! (`RenderExport`), turning its progress (rows written of total) into the
//! job's. Internal: the exports service queues it when an export is too big
//! to render at once; users create exports through the exports routes.
//!
//! Payload: `{"export_id": "…"}`. Cancelling the job drops the render's
//! stream, which stops the render and leaves no file. An attempt retried
//! after a worker or the exports service died renders again from the start;
//! one retried after the file was published gets it at once.

use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};
use sextant_common::ErrorCode;
use sextant_common::internal_auth::{Caller, ClientAuth, SERVICE_HEADER};
use sextant_common::telemetry::TracedChannel;
use sextant_proto::exports::v1 as pb;
use sextant_proto::exports::v1::export_service_client::ExportServiceClient;
use tonic::codegen::InterceptedService;

use super::{Failure, Kind, Kinds, Outcome, parse};
use crate::context::JobContext;

/// Progress is recorded at most this often (each report is a write).
const REPORT_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportPayload {
    pub export_id: uuid::Uuid,
}

pub struct Export {
    client: ExportServiceClient<InterceptedService<TracedChannel, ClientAuth>>,
}

impl Export {
    pub fn new(url: &str, secret: &secrecy::SecretString) -> anyhow::Result<Self> {
        let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy();
        let channel = TracedChannel::new(channel, url);
        Ok(Self {
            client: ExportServiceClient::with_interceptor(channel, ClientAuth::new(secret)?),
        })
    }
}

fn failure(status: tonic::Status) -> Failure {
    Failure::new(ErrorCode::of_status(&status).as_str(), status.message())
}

/// Rows as progress steps (a step is a `u32`).
fn steps(rows: u64) -> u32 {
    u32::try_from(rows).unwrap_or(u32::MAX)
}

async fn report(ctx: &JobContext, written: u64, total: u64) {
    let message = format!("{written} of {total} rows written");
    ctx.progress(steps(written), steps(total), &message).await;
}

impl Kind for Export {
    fn name(&self) -> &'static str {
        "export"
    }

    fn internal(&self) -> bool {
        true
    }

    fn validate(&self, payload: &Value, _kinds: &Kinds) -> Result<(), String> {
        parse::<ExportPayload>(payload).map(|_| ())
    }

    fn run<'a>(&'a self, ctx: &'a JobContext, payload: Value) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let p: ExportPayload = parse(&payload).map_err(|m| Failure::new("invalid_payload", m))?;
            let mut request = tonic::Request::new(pb::RenderExportRequest {
                id: p.export_id.to_string(),
                job_id: ctx.job_id.to_string(),
            });
            Caller {
                tenant: ctx.tenant.clone(),
                user: "sextant-jobs".into(),
            }
            .apply(request.metadata_mut())
            .map_err(failure)?;
            request.metadata_mut().insert(
                SERVICE_HEADER,
                tonic::metadata::AsciiMetadataValue::from_static("sextant-jobs"),
            );
            let mut stream = self
                .client
                .clone()
                .render_export(request)
                .await
                .map_err(failure)?
                .into_inner();
            let mut reported: Option<Instant> = None;
            // The last progress the job shows, and the total the render has.
            let mut shown = 0;
            let mut total = None;
            while let Some(message) = stream.next().await {
                match message.map_err(failure)?.message {
                    Some(pb::render_export_response::Message::Progress(p)) => {
                        total = Some(p.rows_total);
                        if reported.is_none_or(|at| at.elapsed() >= REPORT_EVERY) {
                            reported = Some(Instant::now());
                            shown = p.rows_written;
                            report(ctx, p.rows_written, p.rows_total).await;
                        }
                    }
                    Some(pb::render_export_response::Message::Export(e)) => {
                        // Reports are spaced out: the last one may be short
                        // of the end. The job says every row before it ends.
                        if let Some(total) = total.filter(|total| shown < *total) {
                            report(ctx, total, total).await;
                        }
                        return Ok(json!({
                            "export_id": e.id,
                            "filename": e.filename,
                            "size_bytes": e.size_bytes,
                            "sha256": e.sha256,
                        }));
                    }
                    None => {}
                }
            }
            Err(Failure::new(
                "unavailable",
                "the exports service ended the render without the export",
            ))
        })
    }
}
