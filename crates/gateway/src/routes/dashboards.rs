//! `/api/v1/dashboards…`: a tenant's dashboards (create, read, list,
//! replace and delete with optimistic concurrency). The gateway checks the
//! JSON's shape; the analytics service checks the dashboard.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;
use sextant_proto::analytics::v1 as pb;

use super::metrics::read;
use super::params::{PageQuery, expected_version, invalid, next, no_version, required_version, versioned};
use crate::auth::Principal;
use crate::backends::{Backends, request};
use crate::convert::dashboards::{DashboardBody, dashboard_json};
use crate::error::{ApiError, JsonBody};

/// The largest page of the list.
const MAX_PAGE_SIZE: u32 = 1000;

/// A dashboard, with its version as the `ETag`.
fn dashboard_response(reply: actix_web::HttpResponseBuilder, d: &pb::Dashboard) -> HttpResponse {
    versioned(reply, d.version, &dashboard_json(d))
}

pub async fn create(
    principal: Principal,
    backends: web::Data<Backends>,
    JsonBody(body): JsonBody<DashboardBody>,
) -> Result<HttpResponse, ApiError> {
    no_version(body.version)?;
    let message = pb::CreateDashboardRequest {
        spec: Some(body.spec().map_err(invalid)?),
    };
    let dashboard = backends
        .analytics()
        .create_dashboard(request(&principal.caller(), message)?)
        .await?
        .into_inner();
    let mut reply = HttpResponse::Created();
    reply.insert_header((header::LOCATION, format!("/api/v1/dashboards/{}", dashboard.id)));
    Ok(dashboard_response(reply, &dashboard))
}

pub async fn list(
    principal: Principal,
    backends: web::Data<Backends>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let message = pb::ListDashboardsRequest {
        page: Some(query.page(MAX_PAGE_SIZE)?),
    };
    let response = read(&backends, &principal, message, |mut c, m| async move {
        c.list_dashboards(m).await
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({
        "dashboards": response.dashboards.iter().map(dashboard_json).collect::<Vec<_>>(),
        "next_cursor": next(response.page),
    })))
}

pub async fn get(
    principal: Principal,
    backends: web::Data<Backends>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let message = pb::GetDashboardRequest { id: id.into_inner() };
    let dashboard = read(&backends, &principal, message, |mut c, m| async move {
        c.get_dashboard(m).await
    })
    .await?;
    Ok(dashboard_response(HttpResponse::Ok(), &dashboard))
}

pub async fn replace(
    req: HttpRequest,
    principal: Principal,
    backends: web::Data<Backends>,
    id: web::Path<String>,
    JsonBody(body): JsonBody<DashboardBody>,
) -> Result<HttpResponse, ApiError> {
    let expected = required_version(&req, body.version, "dashboard")?;
    let message = pb::UpdateDashboardRequest {
        id: id.into_inner(),
        spec: Some(body.spec().map_err(invalid)?),
        expected_version: expected.version,
    };
    let dashboard = backends
        .analytics()
        .update_dashboard(request(&principal.caller(), message)?)
        .await
        .map_err(|status| expected.refused(status))?;
    Ok(dashboard_response(HttpResponse::Ok(), &dashboard.into_inner()))
}

/// Deletes the dashboard; with `If-Match`, only if it is still at that version.
pub async fn delete(
    req: HttpRequest,
    principal: Principal,
    backends: web::Data<Backends>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let expected = expected_version(&req, None, "dashboard")?;
    let message = pb::DeleteDashboardRequest {
        id: id.into_inner(),
        expected_version: expected.map_or(0, |e| e.version),
    };
    let result = backends
        .analytics()
        .delete_dashboard(request(&principal.caller(), message)?)
        .await;
    match (result, expected) {
        (Ok(_), _) => Ok(HttpResponse::NoContent().finish()),
        (Err(status), Some(expected)) => Err(expected.refused(status)),
        (Err(status), None) => Err(status.into()),
    }
}
