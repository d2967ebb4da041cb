//! `POST /prometheus/api/v1/write`: Prometheus remote-write 1.0.
//!
//! Statuses as the specification gives them: 204 when every sample was
//! stored; 400 when some were not (the rest are kept; the body names up to
//! [`MAX_REASONS`] refusals), as a retry cannot change that; 413 over the
//! body limit; 415 for another encoding (remote-write 2.0 included); 429
//! and 5xx only for what a retry can fix, with `Retry-After`.

use actix_web::http::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap};
use actix_web::{HttpRequest, HttpResponse, web};
use sextant_common::ErrorCode;

use crate::auth::Principal;
use crate::backends::{Backends, request};
use crate::convert::metrics::MAX_EVENTS;
use crate::convert::remote_write::{self, Mapped, Origin};
use crate::edge::Edge;
use crate::error::ApiError;

/// Refusals named in a 400's body; the count covers the rest.
const MAX_REASONS: usize = 10;

/// How much larger than the body limit a decompressed body may be.
const MAX_EXPANSION: usize = 4;

pub async fn write(
    req: HttpRequest,
    principal: Principal,
    backends: web::Data<Backends>,
    edge: web::Data<Edge>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    check_headers(req.headers())?;
    let max_len = edge.ingest_body_limit.saturating_mul(MAX_EXPANSION);
    let write =
        remote_write::decode(&body, max_len).map_err(|e| ApiError::new(ErrorCode::InvalidArgument, e.to_string()))?;
    let Mapped {
        request: message,
        origins,
        mut refused,
        refused_samples,
        samples,
    } = remote_write::to_ingest(&write);
    if message.events.len() > MAX_EVENTS {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!(
                "the request holds {} samples; at most {MAX_EVENTS} are accepted per request \
                 (lower queue_config.max_samples_per_send)",
                message.events.len()
            ),
        ));
    }
    let mut refused_count = refused_samples;
    if !message.events.is_empty() || !message.metadata.is_empty() {
        let answer = backends
            .analytics()
            .ingest_events(request(&principal.caller(), message)?)
            .await?
            .into_inner();
        refused_count += answer.rejected.len();
        for rejection in &answer.rejected {
            let Some(Origin { series: index, ts_ms }) = origins.get(rejection.index as usize) else {
                continue;
            };
            if refused.len() < MAX_REASONS {
                refused.push(format!(
                    "series {} sample at {ts_ms}: {}",
                    remote_write::describe(&write.timeseries[*index].labels),
                    rejection.message
                ));
            }
        }
    }
    if refused_count == 0 {
        return Ok(HttpResponse::NoContent().finish());
    }
    refused.truncate(MAX_REASONS);
    Err(ApiError::new(
        ErrorCode::InvalidArgument,
        format!(
            "{refused_count} of {samples} samples were refused (the others were stored): {}",
            refused.join("; ")
        ),
    ))
}

/// Remote-write 1.0 is protobuf (`application/x-protobuf`, no `proto`
/// parameter or `prometheus.WriteRequest`) in snappy; a sender that says
/// otherwise gets 415, which a 2.0 sender takes as "fall back to 1.0".
fn check_headers(headers: &HeaderMap) -> Result<(), ApiError> {
    let unsupported = |what: String| ApiError::new(ErrorCode::UnsupportedMediaType, what);
    if let Some(encoding) = headers.get(CONTENT_ENCODING) {
        let encoding = encoding.to_str().unwrap_or("").trim();
        if !encoding.eq_ignore_ascii_case("snappy") {
            return Err(unsupported(format!(
                "Content-Encoding {encoding:?} is not supported; remote-write bodies are snappy"
            )));
        }
    }
    if let Some(kind) = headers.get(CONTENT_TYPE) {
        let kind = kind.to_str().unwrap_or("").to_ascii_lowercase();
        let mut parts = kind.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        let proto = parts.find_map(|p| p.strip_prefix("proto="));
        let v1 = media == "application/x-protobuf" && proto.is_none_or(|p| p == "prometheus.writerequest");
        if !v1 {
            return Err(unsupported(format!(
                "Content-Type {kind:?} is not supported; remote-write 1.0 is application/x-protobuf \
                 (prometheus.WriteRequest)"
            )));
        }
    }
    Ok(())
}
