//! `GET /api/v1/me`: who the token says the caller is. Lets a frontend check
//! its token and show the tenant without a round trip to any backend.

use actix_web::web;
use serde_json::json;

use crate::auth::Principal;

pub async fn me(principal: Principal) -> web::Json<serde_json::Value> {
    web::Json(json!({
        "tenant": principal.tenant,
        "user": principal.user,
        "scopes": principal.scopes,
    }))
}
