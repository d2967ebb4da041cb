//! `/api/v1/events` and `/api/v1/metrics…`: ingest, queries and the lists a
//! dashboard's pickers need. The gateway checks the JSON's shape (a body
//! that does not match the OpenAPI schema is a 400 and stores nothing); the
//! analytics service checks the rest, each event on its own.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use sextant_common::ErrorCode;
use sextant_proto::analytics::v1 as pb;
use sextant_proto::analytics::v1::analytics_service_client::AnalyticsServiceClient;

use super::params::{idempotency_key, next, page};
use crate::auth::Principal;
use crate::backends::{Authed, Backends, request};
use crate::convert::metrics::{IngestBody, QueryBody, metric_info_json, query_json, rejection_json};
use crate::error::{ApiError, JsonBody};

/// The largest page of the lists.
const MAX_PAGE_SIZE: u32 = 1000;

pub async fn ingest(
    req: HttpRequest,
    principal: Principal,
    backends: web::Data<Backends>,
    JsonBody(body): JsonBody<IngestBody>,
) -> Result<HttpResponse, ApiError> {
    let message = body
        .request(idempotency_key(&req)?.unwrap_or_default())
        .map_err(|message| ApiError::new(ErrorCode::InvalidArgument, message))?;
    let response = backends
        .analytics()
        .ingest_events(request(&principal.caller(), message)?)
        .await?
        .into_inner();
    Ok(HttpResponse::Ok().json(json!({
        "accepted": response.accepted,
        "rejected": response.rejected.iter().map(rejection_json).collect::<Vec<_>>(),
        "replayed": response.replayed,
    })))
}

pub async fn query(
    principal: Principal,
    backends: web::Data<Backends>,
    JsonBody(body): JsonBody<QueryBody>,
) -> Result<HttpResponse, ApiError> {
    body.check()
        .map_err(|message| ApiError::new(ErrorCode::InvalidArgument, message))?;
    let message = pb::QueryMetricsRequest {
        query: Some(body.message()),
    };
    let response = read(&backends, &principal, message, |mut c, m| async move {
        c.query_metrics(m).await
    })
    .await?;
    let mut answer = query_json(&response, body.group_by.is_some());
    answer.insert("metric".into(), json!(body.metric));
    answer.insert("bucket_seconds".into(), json!(body.bucket_seconds));
    Ok(HttpResponse::Ok().json(answer))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    prefix: Option<String>,
    page_size: Option<u32>,
    cursor: Option<String>,
}

/// A read from the analytics service for the caller, retried while the
/// failure means it was not processed.
pub(crate) async fn read<M, R, F, Fut>(
    backends: &Backends,
    principal: &Principal,
    message: M,
    call: F,
) -> Result<R, ApiError>
where
    M: Clone,
    F: Fn(AnalyticsServiceClient<Authed>, tonic::Request<M>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
{
    let caller = principal.caller();
    let response = backends
        .retry_idempotent(|| {
            let call = request(&caller, message.clone())
                .map(|m| call(backends.analytics(), m))
                .map_err(|e| ErrorCode::InvalidArgument.status(e.detail));
            async move { call?.await }
        })
        .await?;
    Ok(response.into_inner())
}

pub async fn list(
    principal: Principal,
    backends: web::Data<Backends>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let message = pb::ListMetricsRequest {
        prefix: query.prefix.clone().unwrap_or_default(),
        page: Some(page(query.page_size, &query.cursor, MAX_PAGE_SIZE)?),
    };
    let response = read(&backends, &principal, message, |mut c, m| async move {
        c.list_metrics(m).await
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({
        "metrics": response.metrics.iter().map(metric_info_json).collect::<Vec<_>>(),
        "next_cursor": next(response.page),
    })))
}

pub async fn label_values(
    principal: Principal,
    backends: web::Data<Backends>,
    path: web::Path<(String, String)>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let (metric, label) = path.into_inner();
    let message = pb::ListLabelValuesRequest {
        metric,
        label,
        prefix: query.prefix.clone().unwrap_or_default(),
        page: Some(page(query.page_size, &query.cursor, MAX_PAGE_SIZE)?),
    };
    let response = read(&backends, &principal, message, |mut c, m| async move {
        c.list_label_values(m).await
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({
        "values": response.values,
        "next_cursor": next(response.page),
    })))
}
