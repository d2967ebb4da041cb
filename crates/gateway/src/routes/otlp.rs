//! `POST /otlp/v1/metrics`: OTLP/HTTP metrics, protobuf or JSON, gzip or not
//! (actix-web undoes `Content-Encoding`). Answers as the OTLP specification
//! says: 200 with an `ExportMetricsServiceResponse` (with `partialSuccess`
//! naming the refused points, the rest stored); 400 with a
//! `google.rpc.Status` when the body does not decode or holds more points
//! than a batch may; 415 for another content type; 429 and 503 (with
//! `Retry-After`) only for what a retry can fix.

use actix_web::http::header::{CONTENT_TYPE, RETRY_AFTER};
use actix_web::{HttpRequest, HttpResponse, web};
use sextant_common::ErrorCode;

use crate::auth::Principal;
use crate::backends::{Backends, request};
use crate::convert::metrics::MAX_EVENTS;
use crate::convert::otlp::{self, Encoding};
use crate::error::ApiError;

/// gRPC's INVALID_ARGUMENT, the code of a refused body's `google.rpc.Status`.
const INVALID_ARGUMENT: i32 = 3;

fn status(encoding: Encoding, http: u16, code: i32, message: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(http).unwrap_or_default())
        .insert_header((CONTENT_TYPE, encoding.content_type()))
        .body(otlp::status_body(encoding, code, message))
}

pub async fn metrics(
    req: HttpRequest,
    principal: Principal,
    backends: web::Data<Backends>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(encoding) = Encoding::of(content_type) else {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!(
                "Content-Type {content_type:?} is not supported; OTLP/HTTP is application/x-protobuf or application/json"
            ),
        ));
    };
    let export = match otlp::decode(&body, encoding) {
        Ok(export) => export,
        Err(message) => return Ok(status(encoding, 400, INVALID_ARGUMENT, &message)),
    };
    let mapped = otlp::to_ingest(&export);
    if mapped.request.events.len() > MAX_EVENTS {
        let message = format!(
            "the request makes {} samples; at most {MAX_EVENTS} are accepted per request (export smaller batches)",
            mapped.request.events.len()
        );
        return Ok(status(encoding, 400, INVALID_ARGUMENT, &message));
    }
    let mut refused_points: std::collections::BTreeSet<u32> = std::collections::BTreeSet::new();
    let mut reasons = mapped.refused.clone();
    let refused_here = mapped.refused_points as usize;
    if !mapped.request.events.is_empty() || !mapped.request.metadata.is_empty() {
        let point_of = mapped.point_of.clone();
        let answer = match backends
            .analytics()
            .ingest_events(request(&principal.caller(), mapped.request)?)
            .await
        {
            Ok(answer) => answer.into_inner(),
            Err(error) => {
                let error = ApiError::from(error);
                let (http, code) = match error.code {
                    ErrorCode::RateLimited => (429, 8),
                    ErrorCode::Unavailable | ErrorCode::DeadlineExceeded => (503, 14),
                    ErrorCode::InvalidArgument => (400, INVALID_ARGUMENT),
                    _ => return Err(error),
                };
                let mut response = status(encoding, http, code, &error.detail);
                if let Some(seconds) = error.retry_after {
                    response
                        .headers_mut()
                        .insert(RETRY_AFTER, seconds.to_string().parse().expect("digits"));
                }
                return Ok(response);
            }
        };
        for rejection in &answer.rejected {
            if let Some(point) = point_of.get(rejection.index as usize) {
                refused_points.insert(*point);
                if reasons.len() < 10 {
                    reasons.push(format!("{} ({})", rejection.message, rejection.code));
                }
            }
        }
    }
    let rejected = refused_here + refused_points.len();
    let message = if rejected == 0 {
        String::new()
    } else {
        format!("{rejected} data points were refused: {}", reasons.join("; "))
    };
    Ok(HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, encoding.content_type()))
        .body(otlp::response(
            encoding,
            i64::try_from(rejected).unwrap_or(i64::MAX),
            message,
        )))
}
