//! The web console (`/console/`): its files are compiled into the binary
//! (`crates/gateway/console/`), served with a strict Content-Security-Policy
//! and revalidated by ETag, so a browser keeps them and asks again cheaply.
//! The console is a client of the public API like any other: it signs in
//! with a bearer token and calls `/api/v1/…` and the WebSocket.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use rust_embed::RustEmbed;
use sextant_common::ErrorCode;

use crate::error::ApiError;

#[derive(RustEmbed)]
#[folder = "console/"]
struct Files;

/// Scripts and styles only from the gateway itself, no inline code or
/// `eval`, connections only back to it (its WebSocket included), and no
/// framing by another site.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// `/` and `/console`: the console is at `/console/`.
pub async fn to_console() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/console/"))
        .finish()
}

/// Whether an `If-None-Match` header names `etag` (compared weakly, RFC 9110).
fn matches(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag)
}

/// A console file; `/console/` is `index.html`.
pub async fn file(req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let path = match path.as_str() {
        "" => "index.html",
        p => p,
    };
    let file = Files::get(path)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("the console has no file {path:?}")))?;
    let hash = file.metadata.sha256_hash();
    let etag = format!("\"{}\"", hex::encode(&hash[..12]));
    let fresh = matches(&req, &etag);
    let mut reply = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    reply
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"));
    if fresh {
        return Ok(reply.finish());
    }
    let mime = file.metadata.mimetype();
    let content_type = if mime.starts_with("text/") || mime.ends_with("javascript") {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_owned()
    };
    Ok(reply
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_str(&content_type).unwrap_or(HeaderValue::from_static("application/octet-stream")),
        ))
        .body(file.data.into_owned()))
}
