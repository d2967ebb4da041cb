//! `/api/v1/analyses/{id}/exports…` and `/api/v1/exports…`: create an
//! export of an analysis (one format, or a batch as a ZIP), list, get and
//! download them.
//!
//! A small export renders at once: `201` with it `ready`. A large one runs
//! as an `export` job: `202` with it `pending` and its `job_id`, whose
//! progress is on the job's WebSocket topic. A replay of an Idempotency-Key
//! answers `200` with the export that key made. Creates are rate-limited
//! per user by the exports service (the count is shared by every gateway):
//! `429` with `Retry-After`, and `RateLimit-*` headers on every create.
//!
//! Downloads stream the file with its `Content-Type`, `Content-Length`,
//! `Content-Disposition`, an `ETag` (its SHA-256) and single `Range`s (`206`).

use std::str::FromStr;

use actix_web::http::header::{
    self, ByteRangeSpec, Charset, ContentDisposition, DispositionParam, DispositionType, ExtendedValue, HeaderValue,
    Range,
};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};
use futures::StreamExt;
use serde_json::json;
use sextant_common::ErrorCode;
use sextant_proto::exports::v1 as pb;

use super::params::{PageQuery, idempotency_key, invalid, next};
use crate::auth::Principal;
use crate::backends::{Backends, request};
use crate::convert::exports::{BatchBody, FormatBody, export_json};
use crate::error::{ApiError, JsonBody, rate_limit_headers};

const MAX_PAGE_SIZE: u32 = 500;

/// The answer to a create: `201` (rendered) or `202` (a job) when new,
/// `200` for a replay; `Location` names the export.
fn created(response: tonic::Response<pb::Export>) -> HttpResponse {
    let limits = rate_limit_headers(response.metadata());
    let export = response.into_inner();
    // A replay takes nothing from the rate limit, so it carries no quota.
    let mut reply = if limits.is_empty() {
        HttpResponse::Ok()
    } else if export.status == pb::ExportStatus::Pending as i32 {
        HttpResponse::Accepted()
    } else {
        HttpResponse::Created()
    };
    for (name, value) in limits {
        reply.insert_header((name, value));
    }
    reply
        .insert_header((header::LOCATION, format!("/api/v1/exports/{}", export.id)))
        .json(export_json(&export))
}

pub async fn create(
    req: HttpRequest,
    principal: Principal,
    backends: web::Data<Backends>,
    analysis: web::Path<String>,
    JsonBody(body): JsonBody<FormatBody>,
) -> Result<HttpResponse, ApiError> {
    let message = pb::CreateExportRequest {
        analysis_id: analysis.into_inner(),
        format: Some(body.spec("").map_err(invalid)?),
        idempotency_key: idempotency_key(&req)?.unwrap_or_default(),
    };
    let response = backends
        .exports()
        .create_export(request(&principal.caller(), message)?)
        .await?;
    Ok(created(response))
}

pub async fn create_batch(
    req: HttpRequest,
    principal: Principal,
    backends: web::Data<Backends>,
    analysis: web::Path<String>,
    JsonBody(body): JsonBody<BatchBody>,
) -> Result<HttpResponse, ApiError> {
    let formats = body
        .formats
        .iter()
        .enumerate()
        .map(|(i, f)| f.spec(&format!("formats[{i}].")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    let message = pb::CreateBatchExportRequest {
        analysis_id: analysis.into_inner(),
        formats,
        idempotency_key: idempotency_key(&req)?.unwrap_or_default(),
    };
    let response = backends
        .exports()
        .create_batch_export(request(&principal.caller(), message)?)
        .await?;
    Ok(created(response))
}

async fn list_of(
    principal: &Principal,
    backends: &Backends,
    analysis_id: String,
    query: PageQuery,
) -> Result<HttpResponse, ApiError> {
    let message = pb::ListExportsRequest {
        analysis_id,
        page: Some(query.page(MAX_PAGE_SIZE)?),
    };
    let caller = principal.caller();
    let response = backends
        .retry_idempotent(|| {
            let call = request(&caller, message.clone()).map_err(|e| ErrorCode::InvalidArgument.status(e.detail));
            let mut client = backends.exports();
            async move { client.list_exports(call?).await }
        })
        .await?
        .into_inner();
    Ok(HttpResponse::Ok().json(json!({
        "exports": response.exports.iter().map(export_json).collect::<Vec<_>>(),
        "next_cursor": next(response.page),
    })))
}

pub async fn list(
    principal: Principal,
    backends: web::Data<Backends>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    list_of(&principal, &backends, String::new(), query.into_inner()).await
}

/// The exports of one analysis; `404` when the caller has no such analysis.
pub async fn list_for_analysis(
    principal: Principal,
    backends: web::Data<Backends>,
    analysis: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let message = sextant_proto::analytics::v1::GetAnalysisRequest {
        id: analysis.clone(),
        heading_only: true,
    };
    super::metrics::read(&backends, &principal, message, |mut c, m| async move {
        c.get_analysis(m).await
    })
    .await?;
    list_of(&principal, &backends, analysis.into_inner(), query.into_inner()).await
}

async fn fetch(principal: &Principal, backends: &Backends, id: String) -> Result<pb::Export, ApiError> {
    let caller = principal.caller();
    Ok(backends
        .retry_idempotent(|| {
            let call = request(&caller, pb::GetExportRequest { id: id.clone() })
                .map_err(|e| ErrorCode::InvalidArgument.status(e.detail));
            let mut client = backends.exports();
            async move { client.get_export(call?).await }
        })
        .await?
        .into_inner())
}

pub async fn get(
    principal: Principal,
    backends: web::Data<Backends>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let export = fetch(&principal, &backends, id.into_inner()).await?;
    Ok(HttpResponse::Ok().json(export_json(&export)))
}

/// `attachment` with the name as an ASCII fallback and as UTF-8 (RFC 6266).
fn disposition(filename: &str) -> ContentDisposition {
    let ascii: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '/' | '%') {
                c
            } else {
                '_'
            }
        })
        .collect();
    ContentDisposition {
        disposition: DispositionType::Attachment,
        parameters: vec![
            DispositionParam::Filename(ascii),
            DispositionParam::FilenameExt(ExtendedValue {
                charset: Charset::Ext("UTF-8".into()),
                language_tag: None,
                value: filename.as_bytes().to_vec(),
            }),
        ],
    }
}

/// The one byte range (inclusive) a `Range` header asks of `size` bytes:
/// `Ok(None)` to send the whole file (no header, an unusable one, or
/// several ranges), `Err` when it asks only for bytes past the end.
fn byte_range(req: &HttpRequest, etag: &str, size: u64) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(value) = req.headers().get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    // If-Range with another validator: the file changed, send it whole.
    if let Some(if_range) = req.headers().get(header::IF_RANGE)
        && if_range.to_str().ok() != Some(etag)
    {
        return Ok(None);
    }
    let Ok(Range::Bytes(specs)) = Range::from_str(value) else {
        return Ok(None);
    };
    let [spec]: [ByteRangeSpec; 1] = match specs.try_into() {
        Ok(one) => one,
        Err(_) => return Ok(None),
    };
    match spec.to_satisfiable_range(size) {
        Some(range) => Ok(Some(range)),
        None => Err(ApiError::new(
            ErrorCode::RangeNotSatisfiable,
            format!("the range {value:?} is outside the file's {size} bytes"),
        )
        .with_header(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes */{size}")).expect("ASCII"),
        )),
    }
}

pub async fn download(
    req: HttpRequest,
    principal: Principal,
    backends: web::Data<Backends>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let export = fetch(&principal, &backends, id.into_inner()).await?;
    if export.status != pb::ExportStatus::Ready as i32 {
        return Err(ApiError::new(
            ErrorCode::FailedPrecondition,
            format!(
                "the export is {}, not ready",
                crate::convert::exports::status_name(export.status)
            ),
        ));
    }
    let etag = format!("\"{}\"", export.sha256);
    let reply = |mut builder: HttpResponseBuilder| {
        builder
            .insert_header((header::ETAG, etag.as_str()))
            .insert_header((header::ACCEPT_RANGES, "bytes"))
            .insert_header((header::CACHE_CONTROL, "private, no-cache"))
            .insert_header(disposition(&export.filename));
        builder
    };
    // If-None-Match compares weakly (RFC 9110 §13.1.2): `W/"x"` matches `"x"`.
    if let Some(tags) = req.headers().get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok())
        && tags
            .split(',')
            .map(str::trim)
            .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
    {
        return Ok(reply(HttpResponse::NotModified()).finish());
    }
    let size = export.size_bytes;
    let range = byte_range(&req, &etag, size)?;
    let (offset, length) = range.map_or((0, size), |(first, last)| (first, last - first + 1));
    let mut builder = match range {
        Some((first, last)) => {
            let mut builder = reply(HttpResponse::PartialContent());
            builder.insert_header((header::CONTENT_RANGE, format!("bytes {first}-{last}/{size}")));
            builder
        }
        None => reply(HttpResponse::Ok()),
    };
    builder.insert_header((header::CONTENT_TYPE, export.content_type.as_str()));
    if req.method() == actix_web::http::Method::HEAD {
        // The GET's headers, its length included, and no file read.
        let nothing = futures::stream::empty::<Result<actix_web::web::Bytes, actix_web::Error>>();
        return Ok(builder.no_chunking(length).streaming(nothing));
    }
    let message = pb::DownloadExportRequest {
        id: export.id.clone(),
        offset,
        length,
    };
    let mut stream = backends
        .exports_streams()
        .download_export(request(&principal.caller(), message)?)
        .await?
        .into_inner();
    // The first message is the metadata; the rest are the bytes.
    match stream.next().await {
        Some(Ok(pb::DownloadExportResponse {
            part: Some(pb::download_export_response::Part::Metadata(_)),
        })) => {}
        Some(Err(status)) => return Err(status.into()),
        _ => {
            return Err(ApiError::new(
                ErrorCode::Internal,
                "the download began without its metadata",
            ));
        }
    }
    let body = stream.filter_map(|message| async move {
        match message {
            Ok(pb::DownloadExportResponse {
                part: Some(pb::download_export_response::Part::Chunk(bytes)),
            }) => Some(Ok(actix_web::web::Bytes::from(bytes))),
            Ok(_) => None,
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "a download broke off");
                Some(Err(actix_web::error::ErrorServiceUnavailable("the download broke off")))
            }
        }
    });
    Ok(builder.no_chunking(length).streaming(body))
}
