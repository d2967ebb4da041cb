//! HTTP routes. Each module owns one area; `configure` mounts them all.

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
                .route("/ws", web::get().to(crate::ws::connect)),
        );
}
