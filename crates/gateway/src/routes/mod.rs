//! HTTP routes. Each module owns one area; `configure` mounts them all.

pub(crate) mod alerts;
mod analyses;
mod console;
mod dashboards;
mod exports;
pub(crate) mod jobs;
pub(crate) mod metrics;
mod ops;
mod otlp;
mod params;
mod prometheus;
mod session;

use actix_web::http::Method;
use actix_web::{HttpResponse, Resource, Route, guard, web};
use sextant_common::ErrorCode;

use crate::error::ApiError;

/// Mounts every route; `ingest_body_limit` is the larger body limit of
/// the ingest routes (`POST /api/v1/events`, remote-write, OTLP).
pub fn configure(cfg: &mut web::ServiceConfig, ingest_body_limit: usize) {
    cfg.service(only("/", [(Method::GET, web::to(console::to_console))]))
        .service(only("/console", [(Method::GET, web::to(console::to_console))]))
        .service(only("/console/{path:.*}", [(Method::GET, web::to(console::file))]))
        .service(only("/healthz", [(Method::GET, web::to(ops::healthz))]))
        .service(only("/readyz", [(Method::GET, web::to(ops::readyz))]))
        .service(only("/metrics", [(Method::GET, web::to(ops::metrics))]))
        .service(
            only("/otlp/v1/metrics", [(Method::POST, web::to(otlp::metrics))])
                .app_data(web::PayloadConfig::new(ingest_body_limit)),
        )
        .service(
            web::scope("/prometheus/api/v1")
                .service(
                    only("/write", [(Method::POST, web::to(prometheus::write::write))])
                        .app_data(web::PayloadConfig::new(ingest_body_limit)),
                )
                .service(get_post("/query", prometheus::api::query))
                .service(get_post("/query_range", prometheus::api::query_range))
                .service(get_post("/labels", prometheus::api::labels))
                .service(get_post("/series", prometheus::api::series))
                .service(get_post("/query_exemplars", prometheus::api::query_exemplars))
                .service(only(
                    "/label/{name}/values",
                    [(Method::GET, web::to(prometheus::api::label_values))],
                ))
                .service(only("/metadata", [(Method::GET, web::to(prometheus::api::metadata))]))
                .service(only(
                    "/status/buildinfo",
                    [(Method::GET, web::to(prometheus::api::buildinfo))],
                ))
                .service(only("/rules", [(Method::GET, web::to(prometheus::api::rules))])),
        )
        .service(
            web::scope("/api/v1")
                .service(only("/openapi.json", [(Method::GET, web::to(ops::openapi))]))
                .service(only("/me", [(Method::GET, web::to(session::me))]))
                .service(only(
                    "/jobs",
                    [
                        (Method::GET, web::to(jobs::list)),
                        (Method::POST, web::to(jobs::submit)),
                    ],
                ))
                .service(only("/jobs/batch", [(Method::POST, web::to(jobs::submit_batch))]))
                .service(only("/jobs/stats", [(Method::GET, web::to(jobs::stats))]))
                .service(only("/jobs/{id}", [(Method::GET, web::to(jobs::get))]))
                .service(only("/jobs/{id}/cancel", [(Method::POST, web::to(jobs::cancel))]))
                .service(only("/jobs/{id}/retry", [(Method::POST, web::to(jobs::retry))]))
                .service(
                    only("/events", [(Method::POST, web::to(metrics::ingest))])
                        .app_data(web::PayloadConfig::new(ingest_body_limit)),
                )
                .service(only("/metrics", [(Method::GET, web::to(metrics::list))]))
                .service(only("/metrics/query", [(Method::POST, web::to(metrics::query))]))
                .service(only(
                    "/metrics/{name}/labels/{label}/values",
                    [(Method::GET, web::to(metrics::label_values))],
                ))
                .service(only(
                    "/alerts/rules",
                    [
                        (Method::GET, web::to(alerts::list)),
                        (Method::POST, web::to(alerts::create)),
                    ],
                ))
                .service(only(
                    "/alerts/rules/{id}",
                    [
                        (Method::GET, web::to(alerts::get)),
                        (Method::PUT, web::to(alerts::replace)),
                        (Method::DELETE, web::to(alerts::delete)),
                    ],
                ))
                .service(only("/alerts/instances", [(Method::GET, web::to(alerts::instances))]))
                .service(only("/alerts/history", [(Method::GET, web::to(alerts::history))]))
                .service(only(
                    "/analyses",
                    [
                        (Method::GET, web::to(analyses::list)),
                        (Method::POST, web::to(analyses::create)),
                    ],
                ))
                .service(only("/analyses/{id}", [(Method::GET, web::to(analyses::get))]))
                .service(only(
                    "/dashboards",
                    [
                        (Method::GET, web::to(dashboards::list)),
                        (Method::POST, web::to(dashboards::create)),
                    ],
                ))
                .service(only(
                    "/dashboards/{id}",
                    [
                        (Method::GET, web::to(dashboards::get)),
                        (Method::PUT, web::to(dashboards::replace)),
                        (Method::DELETE, web::to(dashboards::delete)),
                    ],
                ))
                .service(only(
                    "/analyses/{id}/exports",
                    [
                        (Method::GET, web::to(exports::list_for_analysis)),
                        (Method::POST, web::to(exports::create)),
                    ],
                ))
                .service(only(
                    "/analyses/{id}/exports/batch",
                    [(Method::POST, web::to(exports::create_batch))],
                ))
                .service(only("/exports", [(Method::GET, web::to(exports::list))]))
                .service(only("/exports/{id}", [(Method::GET, web::to(exports::get))]))
                .service(only(
                    "/exports/{id}/download",
                    [(Method::GET, web::to(exports::download))],
                ))
                .service(only("/ws", [(Method::GET, web::to(crate::ws::connect))])),
        );
}

/// A Prometheus API path answered alike for GET and POST (a form body).
fn get_post<F, Args>(path: &str, handler: F) -> Resource
where
    F: actix_web::Handler<Args> + Clone,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    only(
        path,
        [
            (Method::GET, web::to(handler.clone())),
            (Method::POST, web::to(handler)),
        ],
    )
}

/// A path served for `routes`' methods, and `HEAD` wherever `GET` is (the
/// same answer without its body); any other method is `405` with `Allow`.
fn only<const N: usize>(path: &str, routes: [(Method, Route); N]) -> Resource {
    let mut allow: Vec<&str> = routes.iter().map(|(m, _)| m.as_str()).collect();
    if allow.contains(&"GET") {
        allow.push("HEAD");
    }
    let allow = allow.join(", ");
    let resource = routes
        .into_iter()
        .fold(web::resource(path), |resource, (method, route)| {
            if method == Method::GET {
                resource.route(route.guard(guard::Any(guard::Get()).or(guard::Head())))
            } else {
                resource.route(route.method(method))
            }
        });
    resource.default_service(web::to(move || {
        let allow = allow.clone();
        async move {
            Err::<HttpResponse, _>(
                ApiError::new(ErrorCode::MethodNotAllowed, format!("allowed: {allow}")).with_allow(allow),
            )
        }
    }))
}
