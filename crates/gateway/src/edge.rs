//! The edge: two layers around every route, with CORS between them.
//!
//! - [`limits`], inside CORS: refuses bodies over the limit before anything
//!   reads them (413) and answers 504 to a request still unanswered after
//!   the request timeout; CORS gives its answers its headers, so a page on
//!   another origin can read them.
//! - [`problems`], outside CORS (and inside metrics): makes sure every error
//!   response leaving the gateway is problem+json with a stable code,
//!   including responses from code that knows nothing of our format (actix's
//!   own 4xx, the CORS middleware's), keeping their headers.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::middleware::Next;
use actix_web::{Error, ResponseError, web};
use sextant_common::ErrorCode;

use crate::error::ApiError;

/// The guard's limits, as app data.
#[derive(Clone, Copy)]
pub struct Edge {
    /// The largest accepted request body, in bytes.
    pub body_limit: usize,
    /// The body limit of the ingest routes ([`INGEST_PATHS`]).
    pub ingest_body_limit: usize,
    pub request_timeout: std::time::Duration,
}

/// The routes that take batches of samples, with the larger body limit.
pub const INGEST_PATHS: &[&str] = &["/api/v1/events", "/prometheus/api/v1/write", "/otlp/v1/metrics"];

/// The body limit and the request timeout.
pub async fn limits(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let Some(edge) = req.app_data::<web::Data<Edge>>().map(|e| *e.get_ref()) else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let limit = if INGEST_PATHS.contains(&req.path()) {
        edge.ingest_body_limit
    } else {
        edge.body_limit
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|declared| declared > limit) {
        let error = ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body exceeds {limit} bytes"),
        );
        return Ok(req.into_response(error.error_response()));
    }
    // The request went into the call, so a late answer is an error that
    // actix renders (as problem+json, through `ApiError`; CORS marks it too).
    match tokio::time::timeout(edge.request_timeout, next.call(req)).await {
        Ok(response) => Ok(response?.map_into_boxed_body()),
        Err(_) => {
            let error = ApiError::new(
                ErrorCode::DeadlineExceeded,
                format!(
                    "no answer within the request timeout ({})",
                    humantime::format_duration(edge.request_timeout)
                ),
            );
            Err(error.into())
        }
    }
}

/// Every error response as problem+json.
pub async fn problems(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let response = next.call(req).await?.map_into_boxed_body();
    let status = response.status();
    // Only bodies nobody designed (none, or plain text from a library) are
    // rewritten; a handler's deliberate JSON, like `/readyz`'s 503, stays.
    let undesigned = response
        .headers()
        .get(CONTENT_TYPE)
        .is_none_or(|v| v.as_bytes().starts_with(b"text/"));
    if !(status.is_client_error() || status.is_server_error()) || !undesigned {
        return Ok(response);
    }

    let (request, response) = response.into_parts();
    let (head, body) = response.into_parts();
    let body = actix_web::body::to_bytes_limited(body, 4096)
        .await
        .ok()
        .and_then(Result::ok)
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .filter(|s| !s.is_empty());
    let code = code_for(status);
    let detail = body.unwrap_or_else(|| code.title().to_lowercase());
    let mut problem = ApiError::new(code, detail).error_response();
    // The headers it had (CORS, Allow, Retry-After…) stay; the body's own go.
    for (name, value) in head.headers() {
        if name != CONTENT_TYPE && name != CONTENT_LENGTH && !problem.headers().contains_key(name) {
            problem.headers_mut().append(name.clone(), value.clone());
        }
    }
    Ok(ServiceResponse::new(request, problem))
}

fn code_for(status: StatusCode) -> ErrorCode {
    match status.as_u16() {
        401 => ErrorCode::Unauthenticated,
        403 => ErrorCode::PermissionDenied,
        404 => ErrorCode::NotFound,
        405 => ErrorCode::MethodNotAllowed,
        409 => ErrorCode::Conflict,
        413 => ErrorCode::PayloadTooLarge,
        415 => ErrorCode::UnsupportedMediaType,
        429 => ErrorCode::RateLimited,
        400..=499 => ErrorCode::MalformedRequest,
        503 => ErrorCode::Unavailable,
        504 => ErrorCode::DeadlineExceeded,
        _ => ErrorCode::Internal,
    }
}

#[cfg(test)]
mod tests {
    use actix_web::{App, HttpResponse, middleware, test, web};

    use super::*;

    #[actix_web::test]
    async fn plain_text_errors_become_problems_and_designed_json_stays() {
        let app = test::init_service(
            App::new()
                .wrap(middleware::from_fn(problems))
                .route(
                    "/text",
                    web::get().to(|| async { HttpResponse::MethodNotAllowed().body("use POST") }),
                )
                .route(
                    "/json",
                    web::get().to(|| async { HttpResponse::ServiceUnavailable().json(serde_json::json!({"a": 1})) }),
                ),
        )
        .await;

        let response = test::call_service(&app, test::TestRequest::get().uri("/text").to_request()).await;
        assert_eq!(response.status(), 405);
        assert_eq!(
            response.headers().get(CONTENT_TYPE).unwrap(),
            "application/problem+json"
        );
        let body: serde_json::Value = test::read_body_json(response).await;
        assert_eq!(body["code"], "method_not_allowed");
        assert_eq!(body["detail"], "use POST");

        let response = test::call_service(&app, test::TestRequest::get().uri("/json").to_request()).await;
        assert_eq!(response.status(), 503);
        let body: serde_json::Value = test::read_body_json(response).await;
        assert_eq!(body, serde_json::json!({"a": 1}));
    }

    /// The gateway's order: limits inside CORS, problems outside it.
    fn cors() -> actix_cors::Cors {
        actix_cors::Cors::default()
            .block_on_origin_mismatch(false)
            .allowed_origin("https://app.example.com")
    }

    fn edge(timeout_ms: u64) -> web::Data<Edge> {
        web::Data::new(Edge {
            body_limit: 10,
            ingest_body_limit: 10,
            request_timeout: std::time::Duration::from_millis(timeout_ms),
        })
    }

    #[actix_web::test]
    async fn the_edges_own_413_and_504_carry_cors_headers() {
        let app = test::init_service(
            App::new()
                .app_data(edge(50))
                .wrap(middleware::from_fn(limits))
                .wrap(cors())
                .wrap(middleware::from_fn(problems))
                .route(
                    "/slow",
                    web::get().to(|| async {
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        HttpResponse::Ok().finish()
                    }),
                )
                .route("/", web::post().to(|| async { HttpResponse::Ok().finish() })),
        )
        .await;
        let origin = ("origin", "https://app.example.com");
        let late = test::TestRequest::get().uri("/slow").insert_header(origin).to_request();
        let big = test::TestRequest::post()
            .uri("/")
            .insert_header(origin)
            .set_payload(vec![b'x'; 11])
            .to_request();
        for (request, status, code) in [(late, 504, "deadline_exceeded"), (big, 413, "payload_too_large")] {
            // An error is rendered where actix renders it, as the server would.
            let response = match test::try_call_service(&app, request).await {
                Ok(response) => response.into_parts().1,
                Err(error) => error.error_response(),
            };
            assert_eq!(response.status(), status);
            assert_eq!(
                response.headers().get("access-control-allow-origin").unwrap(),
                "https://app.example.com",
                "a page on the allowed origin can read the {status}"
            );
            let body = actix_web::body::to_bytes(response.into_body()).await.unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["code"], code);
        }
    }

    #[actix_web::test]
    async fn a_rewritten_error_keeps_its_headers() {
        let app = test::init_service(App::new().wrap(middleware::from_fn(problems)).route(
            "/",
            web::get().to(|| async {
                HttpResponse::MethodNotAllowed()
                    .insert_header(("allow", "POST"))
                    .insert_header(("retry-after", "3"))
                    .body("use POST")
            }),
        ))
        .await;
        let response = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers().get("allow").unwrap(), "POST");
        assert_eq!(response.headers().get("retry-after").unwrap(), "3");
        assert_eq!(
            response.headers().get(CONTENT_TYPE).unwrap(),
            "application/problem+json"
        );
    }

    #[actix_web::test]
    async fn a_declared_body_over_the_limit_is_refused() {
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(Edge {
                    body_limit: 10,
                    ingest_body_limit: 10,
                    request_timeout: std::time::Duration::from_secs(5),
                }))
                .wrap(middleware::from_fn(limits))
                .route("/", web::post().to(|| async { HttpResponse::Ok().finish() })),
        )
        .await;
        let request = test::TestRequest::post()
            .uri("/")
            .set_payload(vec![b'x'; 11])
            .to_request();
        let response = test::call_service(&app, request).await;
        assert_eq!(response.status(), 413);
    }
}
