//! `/api/v1/analyses…`: create an analysis (it runs as an `analyze` job:
//! `202` with the job, whose progress is on its WebSocket topic and whose
//! result names the analysis), list analyses, get one.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;
use sextant_proto::analytics::v1 as pb;
use sextant_proto::jobs::v1::SubmitJobRequest;

use super::metrics::read;
use super::params::{PageQuery, idempotency_key, next};
use crate::auth::Principal;
use crate::backends::{Backends, request};
use crate::convert::analyses::{AnalysisBody, analysis_json, heading_json};
use crate::error::{ApiError, JsonBody};

const MAX_PAGE_SIZE: u32 = 100;

pub async fn create(
    req: HttpRequest,
    principal: Principal,
    backends: web::Data<Backends>,
    JsonBody(body): JsonBody<AnalysisBody>,
) -> Result<HttpResponse, ApiError> {
    // Its length is checked by the jobs service, as for any job.
    let key = idempotency_key(&req)?.unwrap_or_default();
    let message = SubmitJobRequest {
        kind: "analyze".into(),
        payload_json: body.payload().to_string(),
        idempotency_key: key,
        ..Default::default()
    };
    let response = backends
        .jobs()
        .submit_job(request(&principal.caller(), message)?)
        .await?
        .into_inner();
    Ok(super::jobs::submitted(response, HttpResponse::Accepted))
}

pub async fn list(
    principal: Principal,
    backends: web::Data<Backends>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let message = pb::ListAnalysesRequest {
        page: Some(query.page(MAX_PAGE_SIZE)?),
    };
    let response = read(&backends, &principal, message, |mut c, m| async move {
        c.list_analyses(m).await
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({
        "analyses": response.analyses.iter().map(heading_json).collect::<Vec<_>>(),
        "next_cursor": next(response.page),
    })))
}

pub async fn get(
    principal: Principal,
    backends: web::Data<Backends>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let message = pb::GetAnalysisRequest {
        id: id.into_inner(),
        heading_only: false,
    };
    let analysis = read(&backends, &principal, message, |mut c, m| async move {
        c.get_analysis(m).await
    })
    .await?;
    Ok(HttpResponse::Ok().json(analysis_json(&analysis)))
}
