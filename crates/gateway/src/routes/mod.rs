//! HTTP routes. Each module owns one area; `configure` mounts them all.

pub(crate) mod jobs;
mod ops;
mod session;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(ops::healthz))
        .route("/readyz", web::get().to(ops::readyz))
        .route("/metrics", web::get().to(ops::metrics))
        .service(
            web::scope("/api/v1")
                .route("/openapi.json", web::get().to(ops::openapi))
                .route("/me", web::get().to(session::me))
                .route("/jobs", web::post().to(jobs::submit))
                .route("/jobs", web::get().to(jobs::list))
                .route("/jobs/batch", web::post().to(jobs::submit_batch))
                .route("/jobs/stats", web::get().to(jobs::stats))
                .route("/jobs/{id}", web::get().to(jobs::get))
                .route("/jobs/{id}/cancel", web::post().to(jobs::cancel))
                .route("/jobs/{id}/retry", web::post().to(jobs::retry))
                .route("/ws", web::get().to(crate::ws::connect)),
        );
}
