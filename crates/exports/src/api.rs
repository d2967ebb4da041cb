//! The `ExportService` gRPC API: create (one format, or a batch as a ZIP),
//! get, list and download exports of the caller's analyses, and render the
//! large ones as jobs.
//!
//! A create with an Idempotency-Key already used answers that key's export.
//! Otherwise it fetches the analysis from the analytics service (as the
//! caller, so another tenant's analysis is not found), then takes one request
//! from the user's rate limit and records the export, in one transaction. An export
//! of at most `exports.job_threshold_rows` rows renders at once; a larger
//! one is queued as an `export` job, whose worker calls `RenderExport` and
//! turns its progress into the job's. Either way the file is rendered to
//! scratch disk, published to the object store whole, and only then is the
//! record marked `ready` ([`crate::publish`]).

use std::pin::Pin;
use std::sync::Arc;
use tracing::Instrument as _;

use futures::{Stream, StreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};
use sextant_common::db;
use sextant_common::internal_auth::{Caller, ClientAuth, SERVICE_HEADER};
use sextant_common::telemetry::TracedChannel;
use sextant_common::{ErrorCode, idempotency};
use sextant_proto::analytics::v1 as apb;
use sextant_proto::analytics::v1::analytics_service_client::AnalyticsServiceClient;
use sextant_proto::common::v1::PageResponse;
use sextant_proto::exports::v1::export_service_server::ExportService;
use sextant_proto::exports::v1::*;
use sextant_proto::jobs::v1::SubmitJobRequest;
use sextant_proto::jobs::v1::job_service_client::JobServiceClient;
use sqlx::PgPool;
use tonic::codegen::InterceptedService;
use tonic::{Request, Response, Status, Streaming};
use uuid::Uuid;

use crate::config::LimitsConfig;
use crate::formats::{Contents, Format};
use crate::limits::{self, Class};
use crate::publish::{self, Published, Report};
use crate::render::Source as _;
use crate::spool::{Opened, Spool};
use crate::store::{self, Record};

/// What a database failure names, for the caller.
const STORE: &str = "the export store";

pub type AnalyticsClient = AnalyticsServiceClient<InterceptedService<TracedChannel, ClientAuth>>;
pub type JobsClient = JobServiceClient<InterceptedService<TracedChannel, ClientAuth>>;

/// Formats one batch may hold.
const MAX_BATCH: usize = 16;
const CHUNK: usize = 64 * 1024;
/// The error of a render whose job was cancelled or whose worker went away.
const STOPPED: &str = "the render was stopped: its job was cancelled or its worker went away";

#[derive(Clone)]
pub struct ExportsApi {
    pub pool: PgPool,
    pub store: Arc<dyn ObjectStore>,
    pub analytics: AnalyticsClient,
    pub jobs: JobsClient,
    pub metrics: crate::metrics::Metrics,
    pub settings: Arc<Settings>,
}

pub struct Settings {
    pub job_threshold_rows: u64,
    pub limits: LimitsConfig,
    /// Where files are rendered before they are published.
    pub scratch: std::path::PathBuf,
}

fn invalid(message: impl Into<String>) -> Status {
    ErrorCode::InvalidArgument.status(message)
}

fn not_found() -> Status {
    ErrorCode::NotFound.status("no such export")
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
        job_id: r.job_id.map(|j| j.to_string()).unwrap_or_default(),
        error: r.error.clone().unwrap_or_default(),
        created_at: Some(timestamp(r.created_at)),
        ready_at: r.ready_at.map(timestamp),
        sha256: r.sha256.clone().unwrap_or_default(),
    }
}

fn key(key: &str) -> Result<Option<&str>, Status> {
    match key {
        "" => Ok(None),
        k if !idempotency::valid(k) => Err(invalid(format!("idempotency_key {}", idempotency::RULE))),
        k => Ok(Some(k)),
    }
}

impl ExportsApi {
    /// The analysis, read as the caller as far as its heading.
    async fn analysis(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<Opened<Streaming<apb::ReadAnalysisResponse>>, Status> {
        if Uuid::parse_str(id).is_err() {
            return Err(ErrorCode::NotFound.status("no such analysis"));
        }
        let mut request = Request::new(apb::ReadAnalysisRequest { id: id.to_owned() });
        caller.apply(request.metadata_mut())?;
        Opened::open(self.analytics.clone().read_analysis(request).await?.into_inner()).await
    }

    /// Records the export and renders it at once, or queues it as a job;
    /// answers the record, with the user's rate limit in the metadata.
    async fn create(
        &self,
        caller: &Caller,
        analysis_id: &str,
        contents: Contents,
        idempotency_key: &str,
    ) -> Result<Response<Export>, Status> {
        let idempotency_key = key(idempotency_key)?;
        let batch = matches!(contents, Contents::Batch(_));
        let names: Vec<String> = contents.formats().iter().map(|f| f.name()).collect();
        let fingerprint = format!("{analysis_id}|{batch}|{}", names.join(","));
        let replay = |existing: Record| {
            if existing.fingerprint == fingerprint {
                Ok(Response::new(export(&existing)))
            } else {
                Err(ErrorCode::AlreadyExists.status("idempotency key already used for a different export"))
            }
        };
        // A replay answers the export its key made, without fetching the
        // analysis (which may be large) or taking from the rate limit.
        if let Some(k) = idempotency_key
            && let Some(existing) = store::by_key(&self.pool, &caller.tenant, k)
                .await
                .map_err(db::unavailable(STORE))?
        {
            return replay(existing);
        }
        let analysis = self.analysis(caller, analysis_id).await?;
        // A large export is rendered by a job, which reads the analysis
        // itself: here the heading is enough (the rest is not read).
        let spooled = if contents.rows(&analysis.heading, analysis.counts) > self.settings.job_threshold_rows {
            None
        } else {
            Some(analysis.spool(&self.settings.scratch).await?)
        };
        let id = Uuid::now_v7();
        let filename = contents.filename(analysis_id);
        let object_key = format!("{}/{id}/{filename}", caller.tenant);

        // A request with the same key committed meanwhile is caught by the
        // insert below, which rolls this transaction (and its take) back.
        let mut tx = self.pool.begin().await.map_err(db::unavailable(STORE))?;
        let (class, limit, what) = if batch {
            (
                Class::Batch,
                self.settings.limits.batch_exports_per_minute,
                "batch exports",
            )
        } else {
            (Class::Export, self.settings.limits.exports_per_minute, "exports")
        };
        let quota = match limits::take(&mut tx, &caller.tenant, &caller.user, class, limit)
            .await
            .map_err(db::unavailable(STORE))?
        {
            Ok(quota) => quota,
            Err(quota) => {
                let mut status = ErrorCode::RateLimited.status(format!(
                    "at most {limit} {what} a minute per user; try again in {} s",
                    quota.retry_after.unwrap_or(1)
                ));
                quota.apply(status.metadata_mut());
                return Err(status);
            }
        };
        let new = store::New {
            id,
            user: &caller.user,
            status: if spooled.is_none() { "pending" } else { "rendering" },
            analysis_id,
            formats: names,
            batch,
            content_type: contents.content_type(),
            filename: &filename,
            object_key: &object_key,
            key: idempotency_key,
            fingerprint: &fingerprint,
        };
        let Some(record) = store::insert(&mut *tx, &caller.tenant, &new)
            .await
            .map_err(db::unavailable(STORE))?
        else {
            // The same key, committed meanwhile: this request takes nothing.
            drop(tx);
            let existing = store::by_key(&self.pool, &caller.tenant, idempotency_key.unwrap_or_default())
                .await
                .map_err(db::unavailable(STORE))?
                .ok_or_else(not_found)?;
            return replay(existing);
        };
        tx.commit().await.map_err(db::unavailable(STORE))?;

        let record = match spooled {
            None => self.queue(caller, record).await?,
            Some(analysis) => {
                self.finish(&caller.tenant, record, analysis, contents, Box::new(|_| Ok(())), || {
                    false
                })
                .await?
            }
        };
        let mut response = Response::new(export(&record));
        quota.apply(response.metadata_mut());
        Ok(response)
    }

    /// Queues the render of `record` as an `export` job; answers the export
    /// as queued (`pending`, with its job). The job may already be rendering
    /// it by then: re-reading the row here would make the answer depend on
    /// that race (and the gateway's 202 with it).
    async fn queue(&self, caller: &Caller, record: Record) -> Result<Record, Status> {
        match submit_render(&self.jobs, caller, record.id).await {
            Ok(job) => {
                store::set_job(&self.pool, &caller.tenant, record.id, job)
                    .await
                    .map_err(db::unavailable(STORE))?;
                Ok(Record {
                    job_id: Some(job),
                    ..record
                })
            }
            Err(status) => {
                tracing::error!(code = ?status.code(), message = status.message(), export_id = %record.id, "queueing the render failed");
                let _ = store::failed(&self.pool, &caller.tenant, record.id, "the render could not be queued").await;
                Err(ErrorCode::Unavailable.status("the jobs service is unavailable; try again shortly"))
            }
        }
    }

    /// Renders and publishes `record`'s file, then marks it `ready`; or
    /// `failed` when rendering or storing failed, or `gone()` says the
    /// caller went away (then no file is left either).
    async fn finish(
        &self,
        tenant: &str,
        record: Record,
        analysis: Spool,
        contents: Contents,
        report: Report,
        gone: impl Fn() -> bool,
    ) -> Result<Record, Status> {
        let scratch = self.settings.scratch.clone();
        let format = match &contents {
            Contents::One(format) => format.name(),
            Contents::Batch(_) => "zip".to_owned(),
        };
        let started = std::time::Instant::now();
        let span = tracing::info_span!(
            "render",
            otel.name = %format!("render {format}"),
            export.id = %record.id,
            export.format = %format,
            export.bytes = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let published = publish::publish(&self.store, scratch, &record.object_key, analysis, contents, report)
            .instrument(span.clone())
            .await;
        match &published {
            Ok(p) => {
                span.record("export.bytes", p.size);
            }
            Err(_) => {
                span.record("otel.status_code", "ERROR");
            }
        }
        let outcome = match &published {
            Ok(_) if !gone() => "ready",
            Ok(_) | Err(publish::Error::Stopped) => "stopped",
            Err(_) => "failed",
        };
        self.metrics
            .render_duration
            .get_or_create(&crate::metrics::RenderLabels { format, outcome })
            .observe(started.elapsed().as_secs_f64());
        let failure = match published {
            Ok(Published { size, sha256, .. }) if !gone() => {
                self.metrics.bytes_published.inc_by(size);
                let size = i64::try_from(size).unwrap_or(i64::MAX);
                return store::ready(&self.pool, tenant, record.id, size, &sha256)
                    .await
                    .map_err(db::unavailable(STORE));
            }
            Ok(_) => {
                let _ = self.store.delete(&Path::from(record.object_key.as_str())).await;
                STOPPED
            }
            Err(publish::Error::Stopped) => STOPPED,
            Err(publish::Error::Render(error)) => {
                tracing::error!(error = %format!("{error:#}"), export_id = %record.id, "rendering failed");
                "rendering failed"
            }
            Err(publish::Error::Store(error)) => {
                tracing::error!(error = %format!("{error:#}"), export_id = %record.id, "storing the file failed");
                "storing the file failed"
            }
        };
        store::failed(&self.pool, tenant, record.id, failure)
            .await
            .map_err(db::unavailable(STORE))
    }

    async fn record(&self, caller: &Caller, id: &str) -> Result<Record, Status> {
        let id = Uuid::parse_str(id).map_err(|_| not_found())?;
        store::get(&self.pool, &caller.tenant, id)
            .await
            .map_err(db::unavailable(STORE))?
            .ok_or_else(not_found)
    }
}

type DownloadStream = Pin<Box<dyn Stream<Item = Result<DownloadExportResponse, Status>> + Send>>;
type RenderStream = Pin<Box<dyn Stream<Item = Result<RenderExportResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExportService for ExportsApi {
    async fn create_export(&self, request: Request<CreateExportRequest>) -> Result<Response<Export>, Status> {
        let caller = Caller::from_metadata(request.metadata())?;
        let r = request.into_inner();
        let format = Format::parse(&r.format.ok_or_else(|| invalid("format is required"))?).map_err(invalid)?;
        self.create(&caller, &r.analysis_id, Contents::One(format), &r.idempotency_key)
            .await
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
        self.create(&caller, &r.analysis_id, Contents::Batch(formats), &r.idempotency_key)
            .await
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
            .map_err(db::unavailable(STORE))?;
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
        let r = request.into_inner();
        let record = self.record(&caller, &r.id).await?;
        if record.status != "ready" {
            return Err(ErrorCode::FailedPrecondition.status(format!("the export is {}, not ready", record.status)));
        }
        let size = record.size_bytes.and_then(|s| u64::try_from(s).ok()).unwrap_or(0);
        if r.offset > size || (r.offset == size && size > 0) {
            return Err(ErrorCode::InvalidArgument.status(format!("offset must be below the size, {size}")));
        }
        let end = match r.length {
            0 => size,
            n => r.offset.saturating_add(n).min(size),
        };
        let options = GetOptions {
            range: (r.offset > 0 || end < size).then_some(GetRange::Bounded(r.offset..end)),
            ..Default::default()
        };
        let object = self
            .store
            .get_opts(&Path::from(record.object_key.as_str()), options)
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

    type RenderExportStream = RenderStream;

    async fn render_export(
        &self,
        request: Request<RenderExportRequest>,
    ) -> Result<Response<Self::RenderExportStream>, Status> {
        if request.metadata().get(SERVICE_HEADER).is_none() {
            return Err(ErrorCode::PermissionDenied.status("only the jobs service renders exports"));
        }
        let caller = Caller::from_metadata(request.metadata())?;
        let record = self.record(&caller, &request.into_inner().id).await?;
        let contents =
            contents(&record).ok_or_else(|| ErrorCode::Internal.status("the export's formats are unknown"))?;
        // Everything else runs beside the stream, so that a worker that drops
        // it (its job cancelled, or itself gone) stops the render at once,
        // in whatever phase, and the export fails.
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        // The render goes on in the RenderExport call's trace.
        tokio::spawn(
            self.clone()
                .render(caller, record, contents, tx)
                .instrument(tracing::Span::current()),
        );
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

type RenderSender = tokio::sync::mpsc::Sender<Result<RenderExportResponse, Status>>;

impl ExportsApi {
    /// Renders a queued export for the worker at the other end of `tx`.
    async fn render(self, caller: Caller, record: Record, contents: Contents, tx: RenderSender) {
        let done = |record: &Record| {
            Ok(RenderExportResponse {
                message: Some(render_export_response::Message::Export(export(record))),
            })
        };
        // A retried job whose first attempt got as far as publishing.
        if record.status == "ready" {
            let _ = tx.send(done(&record)).await;
            return;
        }
        let rendering = match store::rendering(&self.pool, &caller.tenant, record.id).await {
            Ok(Some(rendering)) => rendering,
            // Rendered, or being rendered, by another attempt: its state.
            Ok(None) => {
                let current = self.record(&caller, &record.id.to_string()).await;
                let _ = tx.send(current.and_then(|r| done(&r))).await;
                return;
            }
            Err(error) => {
                let _ = tx.send(Err(db::unavailable(STORE)(error))).await;
                return;
            }
        };
        let read = async {
            let opened = self.analysis(&caller, &rendering.analysis_id).await?;
            opened.spool(&self.settings.scratch).await
        };
        let fetched = tokio::select! {
            fetched = read => fetched,
            () = tx.closed() => {
                let _ = store::failed(&self.pool, &caller.tenant, rendering.id, STOPPED).await;
                return;
            }
        };
        let analysis = match fetched {
            Ok(analysis) => analysis,
            Err(status) => {
                if status.code() == tonic::Code::NotFound {
                    let _ = store::failed(
                        &self.pool,
                        &caller.tenant,
                        rendering.id,
                        "the analysis no longer exists",
                    )
                    .await;
                }
                let _ = tx.send(Err(status)).await;
                return;
            }
        };
        let total = contents.rows(analysis.heading(), analysis.counts());
        let progress = tx.clone();
        let report: Report = Box::new(move |rows| {
            // The worker dropped the stream: its job was cancelled or it died.
            if progress.is_closed() {
                return Err(crate::render::stopped());
            }
            let _ = progress.try_send(Ok(RenderExportResponse {
                message: Some(render_export_response::Message::Progress(RenderProgress {
                    rows_written: rows,
                    rows_total: total,
                })),
            }));
            Ok(())
        });
        let gone = tx.clone();
        let finished = self
            .finish(&caller.tenant, rendering, analysis, contents, report, move || {
                gone.is_closed()
            })
            .await;
        let message = finished.and_then(|record| match record.status.as_str() {
            "ready" => done(&record),
            _ => Err(ErrorCode::Internal.status(record.error.unwrap_or_default())),
        });
        let _ = tx.send(message).await;
    }
}

/// Submits the `export` job that renders export `id` and answers its id.
/// The job's idempotency key is the export's, so submitting again (a retry,
/// or the upkeep finishing a submission a stopped service left undone) finds
/// the same job.
pub(crate) async fn submit_render(jobs: &JobsClient, caller: &Caller, id: Uuid) -> Result<Uuid, Status> {
    let mut request = Request::new(SubmitJobRequest {
        kind: "export".into(),
        payload_json: serde_json::json!({ "export_id": id }).to_string(),
        idempotency_key: format!("export:{id}"),
        ..Default::default()
    });
    caller.apply(request.metadata_mut())?;
    request.metadata_mut().insert(
        sextant_common::internal_auth::SERVICE_HEADER,
        tonic::metadata::AsciiMetadataValue::from_static("sextant-exports"),
    );
    let answer = jobs.clone().submit_job(request).await?;
    let job = answer.into_inner().job.map(|j| j.id).unwrap_or_default();
    Uuid::parse_str(&job).map_err(|_| ErrorCode::Internal.status("the jobs service answered a malformed job id"))
}

/// What a record holds, from its stored format names.
fn contents(record: &Record) -> Option<Contents> {
    let formats = record
        .formats
        .0
        .iter()
        .map(|n| Format::from_name(n))
        .collect::<Option<Vec<_>>>()?;
    match (record.batch, formats.as_slice()) {
        (false, [one]) => Some(Contents::One(*one)),
        (true, [_, ..]) => Some(Contents::Batch(formats)),
        _ => None,
    }
}
