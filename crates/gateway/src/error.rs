//! Errors as RFC 9457 `application/problem+json`. Every error the gateway
//! answers has a stable `code` from the shared table; the HTTP status comes
//! from that table too, never from the handler.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use sextant_common::ErrorCode;
use sextant_common::error::{RETRY_AFTER_METADATA, rate_limit};

use crate::breaker;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
#[error("{code:?}: {detail}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub detail: String,
    /// Seconds, for `Retry-After` on 429 and 503.
    pub retry_after: Option<u64>,
    /// Extra members of the problem document, e.g. per-field errors.
    pub extensions: Option<serde_json::Value>,
    /// Extra response headers: `Allow` on 405, `RateLimit-*` on 429.
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    code: &'a str,
    detail: &'a str,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    extensions: Option<&'a serde_json::Value>,
}

impl ApiError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            retry_after: None,
            extensions: None,
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, detail)
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The methods a path allows, for `Allow` on 405.
    pub fn with_allow(self, methods: String) -> Self {
        match HeaderValue::from_str(&methods) {
            Ok(value) => self.with_header(header::ALLOW, value),
            Err(_) => self,
        }
    }

    pub fn with_extensions(mut self, extensions: serde_json::Value) -> Self {
        self.extensions = Some(extensions);
        self
    }

    /// The problem document, also used for WebSocket error frames.
    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(Problem {
            kind: format!("https://sextant.dev/problems/{}", self.code.as_str()),
            title: self.code.title(),
            status: self.code.http_status(),
            code: self.code.as_str(),
            detail: &self.detail,
            extensions: self.extensions.as_ref(),
        })
        .expect("a problem serialises")
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CONTENT_TYPE, PROBLEM_JSON));
        if self.code == ErrorCode::Unauthenticated {
            response.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        for (name, value) in &self.headers {
            response.insert_header((name.clone(), value.clone()));
        }
        response.body(self.body().to_string())
    }
}

/// A backend's gRPC error, translated for the client. Internal details of
/// server errors are logged, not returned.
impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        let code = ErrorCode::of_status(&status);
        match code {
            ErrorCode::Internal => {
                tracing::error!(grpc_code = ?status.code(), message = status.message(), "backend error");
                ApiError::new(ErrorCode::Internal, "internal error")
            }
            ErrorCode::Unavailable if status.metadata().get(breaker::OPEN_BACKEND).is_some() => {
                let backend = status
                    .metadata()
                    .get(breaker::OPEN_BACKEND)
                    .and_then(|v| v.to_str().ok());
                let retry_after = status
                    .metadata()
                    .get(RETRY_AFTER_METADATA)
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(1);
                ApiError::new(code, status.message())
                    .with_retry_after(retry_after)
                    .with_extensions(serde_json::json!({ "backend": backend }))
            }
            ErrorCode::RateLimited => {
                let retry_after = status
                    .metadata()
                    .get(RETRY_AFTER_METADATA)
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(1);
                rate_limit_headers(status.metadata())
                    .into_iter()
                    .fold(ApiError::new(code, status.message()), |e, (n, v)| e.with_header(n, v))
                    .with_retry_after(retry_after)
            }
            ErrorCode::Unavailable | ErrorCode::DeadlineExceeded => {
                tracing::warn!(grpc_code = ?status.code(), message = status.message(), "backend unavailable");
                let backend = status
                    .metadata()
                    .get(breaker::UNREACHABLE_BACKEND)
                    .and_then(|v| v.to_str().ok());
                let detail = match (backend, code) {
                    (Some(b), ErrorCode::DeadlineExceeded) => {
                        format!("the {b} service did not answer in time; try again shortly")
                    }
                    (Some(b), _) => format!("the {b} service is unavailable; try again shortly"),
                    (None, _) => "a backend service is unavailable; try again shortly".to_owned(),
                };
                ApiError::new(code, detail).with_retry_after(1)
            }
            _ => ApiError::new(code, status.message()),
        }
    }
}

/// The `RateLimit-*` headers from a backend's answer metadata.
pub fn rate_limit_headers(metadata: &tonic::metadata::MetadataMap) -> Vec<(header::HeaderName, HeaderValue)> {
    rate_limit::FIELDS
        .iter()
        .filter_map(|name| {
            let value = metadata.get(*name)?.to_str().ok()?;
            Some((
                header::HeaderName::from_static(name),
                HeaderValue::from_str(value).ok()?,
            ))
        })
        .collect()
}

/// A JSON request body, parsed so that a type error names its field
/// (`delay_ms: invalid value: integer -5, expected u64`).
pub struct JsonBody<T>(pub T);

impl<T: serde::de::DeserializeOwned + 'static> actix_web::FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = futures::future::LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &actix_web::HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
        let bytes = actix_web::web::Bytes::from_request(req, payload);
        Box::pin(async move {
            if !json {
                return Err(ApiError::new(
                    ErrorCode::UnsupportedMediaType,
                    "expected Content-Type: application/json",
                ));
            }
            let bytes = bytes
                .await
                .map_err(|e| match e.as_response_error().status_code().as_u16() {
                    413 => ApiError::new(ErrorCode::PayloadTooLarge, "request body too large"),
                    _ => ApiError::new(ErrorCode::MalformedRequest, e.to_string()),
                })?;
            parse_json(&bytes).map(JsonBody)
        })
    }
}

/// A JSON request body as `T`: exactly one document (`{…} x` or `{…}{…}` is
/// malformed), whole numbers written with a fraction taken as integers, and a
/// type error naming its field.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut document: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(ErrorCode::MalformedRequest, format!("malformed JSON: {e}")))?;
    integral_floats_as_integers(&mut document);
    serde_path_to_error::deserialize(document).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_data() {
            let field = if path == "." {
                String::new()
            } else {
                format!("{path}: ")
            };
            ApiError::new(ErrorCode::InvalidArgument, format!("{field}{inner}"))
        } else {
            ApiError::new(ErrorCode::MalformedRequest, format!("malformed JSON: {inner}"))
        }
    })
}

/// JSON has one number type: `5.0` is the integer 5 (as JSON Schema says),
/// so whole numbers written with a fraction become integers before typed
/// fields see them. Only those a double holds exactly (|n| ≤ 2⁵³).
fn integral_floats_as_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() <= EXACT) {
                *value = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
}

/// Turns actix's extractor errors (bad JSON, oversized body, bad query) into problems.
pub mod extractors {
    use actix_web::error::{JsonPayloadError, PathError, PayloadError, QueryPayloadError};
    use actix_web::{Error, HttpRequest};

    use super::*;

    pub fn json(err: JsonPayloadError, _: &HttpRequest) -> Error {
        let api = match &err {
            JsonPayloadError::Overflow { limit } | JsonPayloadError::OverflowKnownLength { limit, .. } => {
                ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("request body exceeds {limit} bytes"),
                )
            }
            JsonPayloadError::ContentType => ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "expected Content-Type: application/json",
            ),
            JsonPayloadError::Deserialize(e) if e.is_data() => ApiError::new(ErrorCode::InvalidArgument, e.to_string()),
            JsonPayloadError::Deserialize(e) => {
                ApiError::new(ErrorCode::MalformedRequest, format!("malformed JSON: {e}"))
            }
            JsonPayloadError::Payload(PayloadError::Overflow) => {
                ApiError::new(ErrorCode::PayloadTooLarge, "request body too large")
            }
            other => ApiError::new(ErrorCode::MalformedRequest, other.to_string()),
        };
        api.into()
    }

    pub fn query(err: QueryPayloadError, _: &HttpRequest) -> Error {
        ApiError::new(ErrorCode::InvalidArgument, format!("invalid query string: {err}")).into()
    }

    pub fn path(err: PathError, _: &HttpRequest) -> Error {
        ApiError::new(ErrorCode::InvalidArgument, format!("invalid path: {err}")).into()
    }

    pub fn payload(err: PayloadError, _: &HttpRequest) -> Error {
        let api = match err {
            PayloadError::Overflow => ApiError::new(ErrorCode::PayloadTooLarge, "request body too large"),
            other => ApiError::new(ErrorCode::MalformedRequest, other.to_string()),
        };
        api.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    #[test]
    fn problem_bodies_carry_the_stable_code_and_status() {
        let response = ApiError::new(ErrorCode::NotFound, "no such job").error_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers().get(header::CONTENT_TYPE).unwrap(), PROBLEM_JSON);
        let body = response.into_body().try_into_bytes().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["code"], "not_found");
        assert_eq!(json["status"], 404);
        assert_eq!(json["detail"], "no such job");
    }

    #[test]
    fn backend_internal_errors_are_not_leaked() {
        let api = ApiError::from(tonic::Status::internal("password=hunter2 in query"));
        assert_eq!(api.code, ErrorCode::Internal);
        assert!(!api.detail.contains("hunter2"));
    }
}
