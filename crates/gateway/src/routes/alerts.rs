//! `/api/v1/alerts…`: alert rules (create, read, list, replace with
//! optimistic concurrency, delete), their instances and their history. The
//! gateway checks the JSON's shape; the analytics service checks the rule.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};
use sextant_proto::analytics::v1 as pb;
use sextant_proto::common::v1::TimeRange;
use time::OffsetDateTime;

use super::metrics::read;
use super::params::{PageQuery, invalid, next, no_version, page, required_version, versioned};
use crate::auth::Principal;
use crate::backends::{Backends, request};
use crate::convert::alerts::{RuleBody, StateName, instance_json, rule_json, transition_json};
use crate::convert::timestamp;
use crate::error::{ApiError, JsonBody};

/// The largest page of the lists.
const MAX_PAGE_SIZE: u32 = 1000;

/// A rule, with its version as the `ETag`.
fn rule_response(reply: actix_web::HttpResponseBuilder, rule: &pb::AlertRule) -> HttpResponse {
    versioned(reply, rule.version, &rule_json(rule))
}

pub async fn create(
    principal: Principal,
    backends: web::Data<Backends>,
    JsonBody(body): JsonBody<RuleBody>,
) -> Result<HttpResponse, ApiError> {
    no_version(body.version)?;
    let message = pb::CreateAlertRuleRequest {
        spec: Some(body.spec().map_err(invalid)?),
    };
    let rule = backends
        .analytics()
        .create_alert_rule(request(&principal.caller(), message)?)
        .await?
        .into_inner();
    let mut reply = HttpResponse::Created();
    reply.insert_header((header::LOCATION, format!("/api/v1/alerts/rules/{}", rule.id)));
    Ok(rule_response(reply, &rule))
}

pub async fn list(
    principal: Principal,
    backends: web::Data<Backends>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let message = pb::ListAlertRulesRequest {
        page: Some(query.page(MAX_PAGE_SIZE)?),
    };
    let response = read(&backends, &principal, message, |mut c, m| async move {
        c.list_alert_rules(m).await
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({
        "rules": response.rules.iter().map(rule_json).collect::<Vec<_>>(),
        "next_cursor": next(response.page),
    })))
}

pub async fn get(
    principal: Principal,
    backends: web::Data<Backends>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let message = pb::GetAlertRuleRequest { id: id.into_inner() };
    let rule = read(&backends, &principal, message, |mut c, m| async move {
        c.get_alert_rule(m).await
    })
    .await?;
    Ok(rule_response(HttpResponse::Ok(), &rule))
}

pub async fn replace(
    req: HttpRequest,
    principal: Principal,
    backends: web::Data<Backends>,
    id: web::Path<String>,
    JsonBody(body): JsonBody<RuleBody>,
) -> Result<HttpResponse, ApiError> {
    let expected = required_version(&req, body.version, "rule")?;
    let message = pb::UpdateAlertRuleRequest {
        id: id.into_inner(),
        spec: Some(body.spec().map_err(invalid)?),
        expected_version: expected.version,
    };
    let rule = backends
        .analytics()
        .update_alert_rule(request(&principal.caller(), message)?)
        .await
        .map_err(|status| expected.refused(status))?;
    Ok(rule_response(HttpResponse::Ok(), &rule.into_inner()))
}

pub async fn delete(
    principal: Principal,
    backends: web::Data<Backends>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let message = pb::DeleteAlertRuleRequest { id: id.into_inner() };
    backends
        .analytics()
        .delete_alert_rule(request(&principal.caller(), message)?)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstancesQuery {
    rule_id: Option<String>,
    /// Comma-separated states.
    state: Option<String>,
    page_size: Option<u32>,
    cursor: Option<String>,
}

fn states(list: Option<&str>) -> Result<Vec<i32>, ApiError> {
    let Some(list) = list else { return Ok(Vec::new()) };
    list.split(',')
        .map(|s| {
            serde_json::from_value::<StateName>(Value::from(s.trim()))
                .map(|s| s.pb() as i32)
                .map_err(|_| {
                    invalid(format!(
                        "state {s:?} is not one of inactive, pending, firing, resolved, no_data"
                    ))
                })
        })
        .collect()
}

pub async fn instances(
    principal: Principal,
    backends: web::Data<Backends>,
    query: web::Query<InstancesQuery>,
) -> Result<HttpResponse, ApiError> {
    let message = pb::ListAlertInstancesRequest {
        rule_id: query.rule_id.clone().unwrap_or_default(),
        states: states(query.state.as_deref())?,
        page: Some(page(query.page_size, &query.cursor, MAX_PAGE_SIZE)?),
    };
    let response = read(&backends, &principal, message, |mut c, m| async move {
        c.list_alert_instances(m).await
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({
        "instances": response.instances.iter().map(instance_json).collect::<Vec<_>>(),
        "next_cursor": next(response.page),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    rule_id: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    start: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    end: Option<OffsetDateTime>,
    page_size: Option<u32>,
    cursor: Option<String>,
}

pub async fn history(
    principal: Principal,
    backends: web::Data<Backends>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    if let (Some(start), Some(end)) = (query.start, query.end)
        && start > end
    {
        return Err(invalid("start must not be after end"));
    }
    let message = pb::ListAlertHistoryRequest {
        rule_id: query.rule_id.clone().unwrap_or_default(),
        range: Some(TimeRange {
            start: query.start.map(timestamp),
            end: query.end.map(timestamp),
        }),
        page: Some(page(query.page_size, &query.cursor, MAX_PAGE_SIZE)?),
    };
    let response = read(&backends, &principal, message, |mut c, m| async move {
        c.list_alert_history(m).await
    })
    .await?;
    Ok(HttpResponse::Ok().json(json!({
        "transitions": response.transitions.iter().map(transition_json).collect::<Vec<_>>(),
        "next_cursor": next(response.page),
    })))
}
