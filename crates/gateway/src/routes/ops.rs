//! Operations endpoints: liveness, readiness, Prometheus metrics and the
//! OpenAPI document. None of them needs a token.

use actix_web::http::header::ContentType;
use actix_web::{HttpResponse, web};
use serde_json::{Map, Value, json};

use crate::backends::{Backends, Readiness};
use crate::breaker;
use crate::metrics::Metrics;
use crate::ws::WsState;

const OPENAPI: &str = include_str!("../../openapi.json");

/// The process is up and its event loop answers.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Ready when the gateway is not shutting down and every backend serves.
/// The body names each backend and, for one that is not serving, which of
/// its dependencies are down.
pub async fn readyz(backends: web::Data<Backends>, ws: web::Data<WsState>) -> HttpResponse {
    let backends = backends.get_ref();
    let checks = futures::future::join_all(
        backends
            .all()
            .map(|b| async move { (b.name, b.breaker.state(), backends.readiness(b).await) }),
    )
    .await;

    let mut down = Vec::new();
    let mut report = Map::new();
    for (name, breaker, readiness) in checks {
        let mut entry = match readiness {
            Readiness::Serving => json!({ "status": "serving" }),
            Readiness::NotServing { down: deps } => {
                if deps.is_empty() {
                    down.push(name.to_owned());
                }
                down.extend(deps.iter().map(|d| format!("{name}.{d}")));
                json!({ "status": "not_serving", "down": deps })
            }
            Readiness::Unreachable { error } => {
                down.push(name.to_owned());
                json!({ "status": "unreachable", "error": error })
            }
        };
        // An open breaker refuses the backend's calls, whatever its health says.
        if breaker == breaker::State::Open && !down.iter().any(|d| d == name) {
            down.push(name.to_owned());
        }
        entry["breaker"] = json!(breaker.as_str());
        report.insert(name.to_owned(), entry);
    }
    let shutting_down = ws.shutdown.is_cancelled();
    if shutting_down {
        down.push("gateway".to_owned());
    }

    let body = json!({
        "status": if down.is_empty() { "ready" } else { "not_ready" },
        "down": down,
        "gateway": { "status": if shutting_down { "shutting_down" } else { "serving" } },
        "backends": Value::Object(report),
    });
    if down.is_empty() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

pub async fn metrics(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(metrics.encode())
}

pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().insert_header(ContentType::json()).body(OPENAPI)
}
