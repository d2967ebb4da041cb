//! The Prometheus HTTP API under `/prometheus/api/v1/`, so Grafana's
//! Prometheus data source, promtool and other clients work unchanged:
//! `query`, `query_range`, `labels`, `label/{name}/values`, `series` and
//! `metadata` from the analytics service; `status/buildinfo`, and empty
//! `query_exemplars` and `rules`. Parameters come from the URL or a form
//! body (the body first, as Prometheus reads them); answers and errors use
//! Prometheus' envelopes (`bad_data` 400, `execution` 422, `timeout` 503).

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, RETRY_AFTER};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde_json::{Value, json};
use sextant_proto::analytics::v1 as pb;

use crate::auth::Principal;
use crate::backends::Backends;
use crate::convert::prometheus::{
    error_type, metadata_data, parse_duration, parse_time, query_data, series_data, success,
};
use crate::error::ApiError;
use crate::routes::metrics::read;

/// The Prometheus version Sextant's API answers as: a 2.x, so Grafana
/// uses `match[]` on the label endpoints.
pub const PROMETHEUS_VERSION: &str = "2.42.0";

/// An error in Prometheus' envelope.
#[derive(Debug)]
pub struct PromError {
    status: u16,
    kind: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl PromError {
    fn bad_data(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            kind: "bad_data",
            message: message.into(),
            retry_after: None,
        }
    }
}

impl std::fmt::Display for PromError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<ApiError> for PromError {
    fn from(error: ApiError) -> Self {
        let (status, kind) = error_type(error.code);
        Self {
            status,
            kind,
            message: error.detail,
            retry_after: error.retry_after,
        }
    }
}

impl ResponseError for PromError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let Some(seconds) = self.retry_after {
            response.insert_header((RETRY_AFTER, seconds.to_string()));
        }
        response.json(json!({ "status": "error", "errorType": self.kind, "error": self.message }))
    }
}

/// The request's parameters: a form body's, then the URL's.
pub struct Params(Vec<(String, String)>);

impl Params {
    fn of(req: &HttpRequest, body: &[u8]) -> Result<Self, PromError> {
        let mut pairs = Vec::new();
        if !body.is_empty() {
            let form = req
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
            if !form {
                return Err(PromError::bad_data(
                    "a request body must be application/x-www-form-urlencoded",
                ));
            }
            pairs.extend(url::form_urlencoded::parse(body).into_owned());
        }
        pairs.extend(url::form_urlencoded::parse(req.query_string().as_bytes()).into_owned());
        Ok(Self(pairs))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn time(&self, name: &str) -> Result<Option<i64>, PromError> {
        self.get(name)
            .map(|v| parse_time(v).map_err(|e| PromError::bad_data(format!("invalid parameter \"{name}\": {e}"))))
            .transpose()
    }

    fn query(&self) -> Result<String, PromError> {
        self.get("query")
            .map(str::to_owned)
            .ok_or_else(|| PromError::bad_data("invalid parameter \"query\": query is required"))
    }

    fn limit(&self) -> Result<u32, PromError> {
        match self.get("limit") {
            None => Ok(0),
            Some(v) => v
                .parse::<u32>()
                .map_err(|_| PromError::bad_data(format!("invalid parameter \"limit\": cannot parse {v:?}"))),
        }
    }

    fn select(&self, label: String) -> Result<pb::PromSelectRequest, PromError> {
        Ok(pb::PromSelectRequest {
            matchers: self.all("match[]"),
            start_ms: self.time("start")?.unwrap_or(0),
            end_ms: self.time("end")?.unwrap_or(0),
            label,
            limit: self.limit()?,
        })
    }

    /// `timeout`, if given, must be a duration (Sextant's own request timeout applies).
    fn check_timeout(&self) -> Result<(), PromError> {
        if let Some(v) = self.get("timeout") {
            parse_duration(v).map_err(|e| PromError::bad_data(format!("invalid parameter \"timeout\": {e}")))?;
        }
        Ok(())
    }
}

fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

fn ok(data: Value) -> HttpResponse {
    HttpResponse::Ok().json(success(data))
}

pub async fn query(
    req: HttpRequest,
    principal: Principal,
    backends: web::Data<Backends>,
    body: web::Bytes,
) -> Result<HttpResponse, PromError> {
    let params = Params::of(&req, &body)?;
    let query = params.query()?;
    params.check_timeout()?;
    let at = params.time("time")?.unwrap_or_else(now_ms);
    let message = pb::PromQueryRequest {
        query,
        start_ms: at,
        end_ms: at,
        step_ms: 0,
        lookback_ms: lookback(&params)?,
    };
    evaluate(&backends, &principal, message).await
}

/// Evaluates the query in the analytics service; its answer in Prometheus' envelope.
async fn evaluate(
    backends: &Backends,
    principal: &Principal,
    message: pb::PromQueryRequest,
) -> Result<HttpResponse, PromError> {
    let response = read(
        backends,
        principal,
        message,
        |mut c, m| async move { c.prom_query(m).await },
    )
    .await?;
    Ok(ok(query_data(&response)))
}

fn lookback(params: &Params) -> Result<i64, PromError> {
    match params.get("lookback_delta") {
        None => Ok(0),
        Some(v) => {
            parse_duration(v).map_err(|e| PromError::bad_data(format!("invalid parameter \"lookback_delta\": {e}")))
        }
    }
}

pub async fn query_range(
    req: HttpRequest,
    principal: Principal,
    backends: web::Data<Backends>,
    body: web::Bytes,
) -> Result<HttpResponse, PromError> {
    let params = Params::of(&req, &body)?;
    let query = params.query()?;
    params.check_timeout()?;
    let start = params
        .time("start")?
        .ok_or_else(|| PromError::bad_data("invalid parameter \"start\": start is required"))?;
    let end = params
        .time("end")?
        .ok_or_else(|| PromError::bad_data("invalid parameter \"end\": end is required"))?;
    if end < start {
        return Err(PromError::bad_data(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    let step = params
        .get("step")
        .ok_or_else(|| PromError::bad_data("invalid parameter \"step\": step is required"))
        .and_then(|v| parse_duration(v).map_err(|e| PromError::bad_data(format!("invalid parameter \"step\": {e}"))))?;
    if step <= 0 {
        return Err(PromError::bad_data(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    let message = pb::PromQueryRequest {
        query,
        start_ms: start,
        end_ms: end,
        step_ms: step,
        lookback_ms: lookback(&params)?,
    };
    evaluate(&backends, &principal, message).await
}

pub async fn labels(
    req: HttpRequest,
    principal: Principal,
    backends: web::Data<Backends>,
    body: web::Bytes,
) -> Result<HttpResponse, PromError> {
    let message = Params::of(&req, &body)?.select(String::new())?;
    let response = read(&backends, &principal, message, |mut c, m| async move {
        c.prom_label_names(m).await
    })
    .await?;
    Ok(ok(json!(response.values)))
}

pub async fn label_values(
    req: HttpRequest,
    principal: Principal,
    backends: web::Data<Backends>,
    name: web::Path<String>,
) -> Result<HttpResponse, PromError> {
    let name = name.into_inner();
    let valid = {
        let mut chars = name.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    };
    if !valid {
        return Err(PromError::bad_data(format!("invalid label name: {name:?}")));
    }
    let message = Params::of(&req, &[])?.select(name)?;
    let response = read(&backends, &principal, message, |mut c, m| async move {
        c.prom_label_values(m).await
    })
    .await?;
    Ok(ok(json!(response.values)))
}

pub async fn series(
    req: HttpRequest,
    principal: Principal,
    backends: web::Data<Backends>,
    body: web::Bytes,
) -> Result<HttpResponse, PromError> {
    let message = Params::of(&req, &body)?.select(String::new())?;
    if message.matchers.is_empty() {
        return Err(PromError::bad_data("no match[] parameter provided"));
    }
    let response = read(&backends, &principal, message, |mut c, m| async move {
        c.prom_series(m).await
    })
    .await?;
    Ok(ok(series_data(&response)))
}

pub async fn metadata(
    req: HttpRequest,
    principal: Principal,
    backends: web::Data<Backends>,
) -> Result<HttpResponse, PromError> {
    let params = Params::of(&req, &[])?;
    let limit_per_metric =
        match params.get("limit_per_metric") {
            None => None,
            Some(v) => Some(v.parse::<usize>().map_err(|_| {
                PromError::bad_data(format!("invalid parameter \"limit_per_metric\": cannot parse {v:?}"))
            })?),
        };
    let message = pb::PromMetadataRequest {
        metric: params.get("metric").unwrap_or_default().to_owned(),
        limit: params.limit()?,
    };
    let response = read(&backends, &principal, message, |mut c, m| async move {
        c.prom_metadata(m).await
    })
    .await?;
    Ok(ok(metadata_data(&response, limit_per_metric)))
}

pub async fn buildinfo(_principal: Principal) -> HttpResponse {
    ok(json!({
        "version": PROMETHEUS_VERSION,
        "revision": concat!("sextant-", env!("CARGO_PKG_VERSION")),
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
    }))
}

/// Sextant keeps no exemplars.
pub async fn query_exemplars(
    req: HttpRequest,
    _principal: Principal,
    body: web::Bytes,
) -> Result<HttpResponse, PromError> {
    let params = Params::of(&req, &body)?;
    params.query()?;
    Ok(ok(json!([])))
}

/// Sextant's alert rules live at /api/v1/alerts/rules; none are Prometheus rule groups.
pub async fn rules(_principal: Principal) -> HttpResponse {
    ok(json!({ "groups": [] }))
}
