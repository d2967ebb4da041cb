//! The `ExportService` gRPC API: create (one format, or a batch as a ZIP),
//! get, list and download exports of the caller's analyses. An export
//! renders at once: the analysis is fetched from the analytics service (as
//! the caller, so another tenant's analysis is not found), rendered off the
//! async threads, written whole to the object store, and only then marked
//! `ready`. Large exports as jobs (`RenderExport`) come next; until then that
//! call answers `UNIMPLEMENTED`.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use sextant_common::ErrorCode;
use sextant_common::internal_auth::{Caller, ClientAuth};
use sextant_proto::analytics::v1 as apb;
use sextant_proto::analytics::v1::analytics_service_client::AnalyticsServiceClient;
use sextant_proto::common::v1::PageResponse;
use sextant_proto::exports::v1::export_service_server::ExportService;
use sextant_proto::exports::v1::*;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tonic::codegen::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::formats::{Format, render_batch};
use crate::store::{self, Record};

pub type AnalyticsClient = AnalyticsServiceClient<InterceptedService<Channel, ClientAuth>>;

/// Formats one batch may hold.
const MAX_BATCH: usize = 16;
const MAX_KEY: usize = 200;
const CHUNK: usize = 64 * 1024;

pub struct ExportsApi {
    pub pool: PgPool,
    pub store: Arc<dyn ObjectStore>,
    pub analytics: AnalyticsClient,
}

fn invalid(message: impl Into<String>) -> Status {
    ErrorCode::InvalidArgument.status(message)
}

fn not_found() -> Status {
    ErrorCode::NotFound.status("no such export")
}

fn unavailable(error: sqlx::Error) -> Status {
    tracing::error!(%error, "database error");
    ErrorCode::Unavailable.status("the export store is unavailable")
}

fn timestamp(t: time::OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
    }
}

fn export(r: &Record) -> Export {
    let status = match r.status.as_str() {
        "pending" => ExportStatus::Pending,
        "rendering" => ExportStatus::Rendering,
        "ready" => ExportStatus::Ready,
        _ => ExportStatus::Failed,
    };
    Export {
        id: r.id.to_string(),
        analysis_id: r.analysis_id.clone(),
        formats: r
            .formats
            .0
            .iter()
            .filter_map(|n| Format::from_name(n))
            .map(Format::spec)
            .collect(),
        status: status as i32,
        content_type: r.content_type.clone(),
        filename: r.filename.clone(),
        size_bytes: r.size_bytes.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
        job_id: String::new(),
        error: r.error.clone().unwrap_or_default(),
        created_at: Some(timestamp(r.created_at)),
        ready_at: r.ready_at.map(timestamp),
        sha256: r.sha256.clone().unwrap_or_default(),
    }
}

fn key(key: &str) -> Result<Option<&str>, Status> {
    match key {
        "" => Ok(None),
        k if k.chars().count() > MAX_KEY || k.contains('\0') => Err(invalid(format!(
            "idempotency_key must be at most {MAX_KEY} characters, without U+0000"
        ))),
        k => Ok(Some(k)),
    }
}

impl ExportsApi {
    /// The analysis, fetched as the caller.
    async fn analysis(&self, caller: &Caller, id: &str) -> Result<apb::Analysis, Status> {
        if Uuid::parse_str(id).is_err() {
            return Err(ErrorCode::NotFound.status("no such analysis"));
        }
        let mut request = Request::new(apb::GetAnalysisRequest { id: id.to_owned() });
        caller.apply(request.metadata_mut())?;
        Ok(self.analytics.clone().get_analysis(request).await?.into_inner())
    }

    /// Records, renders and stores one file; answers the record.
    async fn create(
        &self,
        caller: &Caller,
        analysis_id: &str,
        formats: Vec<Format>,
        batch: bool,
        idempotency_key: &str,
    ) -> Result<Export, Status> {
        let idempotency_key = key(idempotency_key)?;
        let analysis = self.analysis(caller, analysis_id).await?;
        let names: Vec<String> = formats.iter().map(|f| f.name()).collect();
        let fingerprint = format!("{analysis_id}|{batch}|{}", names.join(","));
        let id = Uuid::now_v7();
        let (content_type, filename) = if batch {
            ("application/zip", format!("analysis-{analysis_id}.zip"))
        } else {
            (formats[0].content_type(), formats[0].filename(analysis_id))
        };
        let object_key = format!("{}/{id}/{filename}", caller.tenant);
        let new = store::New {
            id,
            analysis_id,
            formats: names,
            batch,
            content_type,
            filename: &filename,
            object_key: &object_key,
            key: idempotency_key,
            fingerprint: &fingerprint,
        };
        let record = match store::insert(&self.pool, &caller.tenant, &new)
            .await
            .map_err(unavailable)?
        {
            Ok(record) => record,
            Err(existing) if existing.fingerprint == fingerprint => return Ok(export(&existing)),
            Err(_) => {
                return Err(ErrorCode::AlreadyExists.status("idempotency key already used for a different export"));
            }
        };
        let rendered = tokio::task::spawn_blocking(move || {
            if batch {
                render_batch(&formats, &analysis, &analysis.id)
            } else {
                formats[0].render(&analysis)
            }
        })
        .await
        .map_err(|e| anyhow::anyhow!("the renderer panicked: {e}"))
        .and_then(|r| r);
        let bytes = match rendered {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), export_id = %id, "rendering failed");
                let failed = store::failed(&self.pool, &caller.tenant, id, "rendering failed")
                    .await
                    .map_err(unavailable)?;
                return Ok(export(&failed));
            }
        };
        let sha256: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
        // Written whole (an object store put is atomic), then published.
        if let Err(error) = self
            .store
            .put(&Path::from(record.object_key.as_str()), bytes.into())
            .await
        {
            tracing::error!(%error, export_id = %id, "storing the file failed");
            let _ = store::failed(&self.pool, &caller.tenant, id, "storing the file failed").await;
            return Err(ErrorCode::Unavailable.status("the export store is unavailable"));
        }
        let ready = store::ready(&self.pool, &caller.tenant, id, size, &sha256)
            .await
            .map_err(unavailable)?;
        Ok(export(&ready))
    }

    async fn record(&self, caller: &Caller, id: &str) -> Result<Record, Status> {
        let id = Uuid::parse_str(id).map_err(|_| not_found())?;
        store::get(&self.pool, &caller.tenant, id)
            .await
            .map_err(unavailable)?
            .ok_or_else(not_found)
    }
}

type DownloadStream = Pin<Box<dyn Stream<Item = Result<DownloadExportResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExportService for ExportsApi {
    async fn create_export(&self, request: Request<CreateExportRequest>) -> Result<Response<Export>, Status> {
        let caller = Caller::from_metadata(request.metadata())?;
        let r = request.into_inner();
        let format = Format::parse(&r.format.ok_or_else(|| invalid("format is required"))?).map_err(invalid)?;
        let export = self
            .create(&caller, &r.analysis_id, vec![format], false, &r.idempotency_key)
            .await?;
        Ok(Response::new(export))
    }

    async fn create_batch_export(
        &self,
        request: Request<CreateBatchExportRequest>,
    ) -> Result<Response<Export>, Status> {
        let caller = Caller::from_metadata(request.metadata())?;
        let r = request.into_inner();
        if r.formats.is_empty() || r.formats.len() > MAX_BATCH {
            return Err(invalid(format!("formats must name 1 to {MAX_BATCH} formats")));
        }
        let formats = r
            .formats
            .iter()
            .enumerate()
            .map(|(i, f)| Format::parse(f).map_err(|e| invalid(format!("formats[{i}]: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, f) in formats.iter().enumerate() {
            if formats[..i].contains(f) {
                return Err(invalid(format!("formats[{i}]: {} is named twice", f.name())));
            }
        }
        let export = self
            .create(&caller, &r.analysis_id, formats, true, &r.idempotency_key)
            .await?;
        Ok(Response::new(export))
    }

    async fn get_export(&self, request: Request<GetExportRequest>) -> Result<Response<Export>, Status> {
        let caller = Caller::from_metadata(request.metadata())?;
        let record = self.record(&caller, &request.into_inner().id).await?;
        Ok(Response::new(export(&record)))
    }

    async fn list_exports(
        &self,
        request: Request<ListExportsRequest>,
    ) -> Result<Response<ListExportsResponse>, Status> {
        let caller = Caller::from_metadata(request.metadata())?;
        let r = request.into_inner();
        let page = r.page.unwrap_or_default();
        let size = match page.page_size {
            0 => 50,
            n @ 1..=500 => i64::from(n),
            _ => return Err(invalid("page.page_size must be at most 500")),
        };
        let before = match page.cursor.as_str() {
            "" => None,
            c => Some(Uuid::parse_str(c).map_err(|_| invalid("page.cursor is malformed"))?),
        };
        let analysis = (!r.analysis_id.is_empty()).then_some(r.analysis_id.as_str());
        let mut rows = store::list(&self.pool, &caller.tenant, analysis, before, size + 1)
            .await
            .map_err(unavailable)?;
        let more = rows.len() as i64 > size;
        rows.truncate(usize::try_from(size).unwrap_or(0));
        let next_cursor = match rows.last() {
            Some(last) if more => last.id.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(ListExportsResponse {
            exports: rows.iter().map(export).collect(),
            page: Some(PageResponse { next_cursor }),
        }))
    }

    type DownloadExportStream = DownloadStream;

    async fn download_export(
        &self,
        request: Request<DownloadExportRequest>,
    ) -> Result<Response<Self::DownloadExportStream>, Status> {
        let caller = Caller::from_metadata(request.metadata())?;
        let record = self.record(&caller, &request.into_inner().id).await?;
        if record.status != "ready" {
            return Err(ErrorCode::FailedPrecondition.status(format!("the export is {}, not ready", record.status)));
        }
        let object = self
            .store
            .get(&Path::from(record.object_key.as_str()))
            .await
            .map_err(|error| {
                tracing::error!(%error, export_id = %record.id, "reading the file failed");
                ErrorCode::Unavailable.status("the export store is unavailable")
            })?;
        let head = futures::stream::once(futures::future::ready(Ok(DownloadExportResponse {
            part: Some(download_export_response::Part::Metadata(export(&record))),
        })));
        let body = object.into_stream().flat_map(|part| {
            let chunks: Vec<Result<DownloadExportResponse, Status>> = match part {
                Ok(bytes) => bytes
                    .chunks(CHUNK)
                    .map(|c| {
                        Ok(DownloadExportResponse {
                            part: Some(download_export_response::Part::Chunk(c.to_vec())),
                        })
                    })
                    .collect(),
                Err(error) => vec![Err(
                    ErrorCode::Unavailable.status(format!("reading the file failed: {error}"))
                )],
            };
            futures::stream::iter(chunks)
        });
        Ok(Response::new(Box::pin(head.chain(body))))
    }

    async fn render_export(&self, _: Request<RenderExportRequest>) -> Result<Response<Export>, Status> {
        Err(ErrorCode::Unimplemented.status("large exports as jobs are not available yet"))
    }
}
