//! What several routes read from a request the same way: a list's page
//! (`page_size`, `cursor`, answered with `next_cursor`) and the
//! `Idempotency-Key` header. One place, so every list checks its page and
//! every create its key alike.

use actix_web::HttpRequest;
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
