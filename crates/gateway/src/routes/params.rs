//! What several routes read from a request the same way: a list's page
//! (`page_size`, `cursor`, answered with `next_cursor`), the
//! `Idempotency-Key` header, and the version a change was made from
//! (`If-Match` or the body's `version`). One place, so every list checks its
//! page, every create its key and every versioned change its version alike.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use serde::{Deserialize, Serialize};
use sextant_common::{ErrorCode, idempotency};
use sextant_proto::common::v1::{PageRequest, PageResponse};

use crate::error::ApiError;

/// A page request from a list's `page_size` (1 to `max`, the list's limit)
/// and `cursor`.
pub fn page(page_size: Option<u32>, cursor: &Option<String>, max: u32) -> Result<PageRequest, ApiError> {
    if let Some(size) = page_size
        && !(1..=max).contains(&size)
    {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!("page_size must be between 1 and {max}"),
        ));
    }
    Ok(PageRequest {
        page_size: page_size.unwrap_or(0),
        cursor: cursor.clone().unwrap_or_default(),
    })
}

/// A list's query string when it takes nothing but its page.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    page_size: Option<u32>,
    cursor: Option<String>,
}

impl PageQuery {
    /// The page request, with the list's limit `max`.
    pub fn page(&self, max: u32) -> Result<PageRequest, ApiError> {
        page(self.page_size, &self.cursor, max)
    }
}

/// The `next_cursor` of an answer: absent on the last page.
pub fn next(page: Option<PageResponse>) -> Option<String> {
    page.map(|p| p.next_cursor).filter(|c| !c.is_empty())
}

/// The `Idempotency-Key` header, when there is one and it keeps the rule.
pub fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|k| idempotency::valid(k))
        .map(|k| Some(k.to_owned()))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidArgument,
                format!("Idempotency-Key {}", idempotency::RULE),
            )
        })
}

/// The version a change was made from, and whether `If-Match` named it.
#[derive(Debug, Clone, Copy)]
pub struct Expected {
    pub version: u64,
    pub from_header: bool,
}

impl Expected {
    /// A backend's refusal of the change: a stale `If-Match` is a failed
    /// precondition (RFC 9110, 412), a stale body `version` a conflict (409).
    pub fn refused(self, status: tonic::Status) -> ApiError {
        if self.from_header && ErrorCode::of_status(&status) == ErrorCode::Conflict {
            ApiError::new(ErrorCode::PreconditionFailed, status.message())
        } else {
            status.into()
        }
    }
}

/// The version an `If-Match` header names: `"3"`, `W/"3"` or `3`; `Err`
/// when it names none.
fn if_match(req: &HttpRequest) -> Result<Option<u64>, ()> {
    let Some(value) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(|v| v.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|v| *v >= 1)
        .map(Some)
        .ok_or(())
}

pub fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidArgument, message)
}

/// A versioned resource's answer: `body`, with `version` as its `ETag`.
pub fn versioned(mut reply: HttpResponseBuilder, version: u64, body: &impl Serialize) -> HttpResponse {
    reply.insert_header((header::ETAG, format!("\"{version}\""))).json(body)
}

/// A create's body names no version: the service sets it.
pub fn no_version(body: Option<u64>) -> Result<(), ApiError> {
    match body {
        Some(_) => Err(invalid("version is set by the service; send it only with PUT")),
        None => Ok(()),
    }
}

/// The version a replace was made from, which it must name.
pub fn required_version(req: &HttpRequest, body: Option<u64>, what: &str) -> Result<Expected, ApiError> {
    expected_version(req, body, what)?
        .ok_or_else(|| invalid("name the version the change was made from: version in the body, or If-Match"))
}

/// The version a change names through `If-Match` or the body's `version`
/// (both, if given, must agree); `None` when neither does.
pub fn expected_version(req: &HttpRequest, body: Option<u64>, what: &str) -> Result<Option<Expected>, ApiError> {
    let header = if_match(req).map_err(|_| invalid(format!("If-Match must name one {what} version, e.g. \"3\"")))?;
    let version = match (header, body) {
        (Some(h), Some(b)) if h != b => return Err(invalid("If-Match and version name different versions")),
        (Some(v), _) | (None, Some(v)) => v,
        (None, None) => return Ok(None),
    };
    if version == 0 {
        return Err(invalid("version must be at least 1"));
    }
    Ok(Some(Expected {
        version,
        from_header: header.is_some(),
    }))
}
