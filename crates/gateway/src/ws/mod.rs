//! `GET /api/v1/ws`: authenticates the upgrade and enforces the per-user
//! connection limit; the [`upgrade`] layer then hands the socket to a
//! [`session`]. The protocol is specified in `docs/websocket.md`.

mod fanout;
pub mod protocol;
mod session;
mod socket;
pub mod topic;
mod upgrade;
mod upstream;
pub mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::http::header::SEC_WEBSOCKET_PROTOCOL;
use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, web};
use dashmap::DashMap;
use sextant_common::ErrorCode;
use tokio_util::sync::CancellationToken;

pub use fanout::Hub;
pub use protocol::{SUBPROTOCOL, close};
pub use upgrade::Upgrade;
pub use upstream::BackendUpstream;

use self::session::Accepted;
use self::upgrade::Handover;
use crate::auth::{Authenticator, Principal, bearer_token};
use crate::config::WsConfig;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// State shared by every WebSocket session of this gateway.
pub struct WsState {
    pub config: WsConfig,
    /// Open connections per (tenant, user).
    per_user: DashMap<(String, String), usize>,
    open: AtomicUsize,
    /// Cancelled when the gateway starts shutting down.
    pub shutdown: CancellationToken,
    /// Cancelled by the last session to close after shutdown began.
    all_closed: tokio::sync::Notify,
    /// The shared topics every session subscribes through.
    pub hub: Arc<Hub>,
}

impl WsState {
    pub fn new(config: WsConfig, shutdown: CancellationToken, hub: Arc<Hub>) -> Self {
        Self {
            hub,
            config,
            per_user: DashMap::new(),
            open: AtomicUsize::new(0),
            shutdown,
            all_closed: tokio::sync::Notify::new(),
        }
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Waits until every session has closed (call after cancelling `shutdown`).
    pub async fn wait_all_closed(&self) {
        loop {
            let notified = self.all_closed.notified();
            if self.open_connections() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Counts a connection for its user, or `None` when the user is at the limit.
    fn acquire(self: &Arc<Self>, principal: &Principal) -> Option<ConnectionSlot> {
        let key = (principal.tenant.clone(), principal.user.clone());
        let mut count = self.per_user.entry(key.clone()).or_insert(0);
        if *count >= self.config.max_connections_per_user {
            return None;
        }
        *count += 1;
        drop(count);
        self.open.fetch_add(1, Ordering::SeqCst);
        Some(ConnectionSlot {
            state: self.clone(),
            key,
        })
    }
}

/// A counted connection; dropping it frees the slot and the user's entry.
struct ConnectionSlot {
    state: Arc<WsState>,
    key: (String, String),
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.state.per_user.remove_if_mut(&self.key, |_, count| {
            *count -= 1;
            *count == 0
        });
        if self.state.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.state.all_closed.notify_waiters();
        }
    }
}

/// The token from the `Authorization` header, the `access_token` query
/// parameter, or a `bearer.<jwt>` subprotocol, in that order.
fn token(req: &HttpRequest) -> Option<String> {
    if let Some(token) = bearer_token(req) {
        return Some(token.to_owned());
    }
    let from_query = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == protocol::TOKEN_QUERY_PARAM)
        .map(|(_, v)| v.into_owned());
    if from_query.is_some() {
        return from_query;
    }
    req.headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| {
            p.trim()
                .strip_prefix(protocol::BEARER_SUBPROTOCOL_PREFIX)
                .map(str::to_owned)
        })
}

/// Accepts the upgrade (`101`) for the [`upgrade`] layer to run, or
/// refuses it with a problem. A user at the connection limit is accepted and
/// then closed with 4029, with the reason in an error frame first.
pub async fn connect(
    req: HttpRequest,
    state: web::Data<WsState>,
    auth: web::Data<Authenticator>,
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, ApiError> {
    let token = token(&req).ok_or_else(|| ApiError::unauthenticated("missing bearer token"))?;
    let principal = auth.verify(&token)?;
    if state.shutdown.is_cancelled() {
        return Err(ApiError::new(ErrorCode::Unavailable, "the gateway is shutting down").with_retry_after(1));
    }

    let handshake_failed = |e: &dyn std::fmt::Display| {
        ApiError::new(ErrorCode::MalformedRequest, format!("websocket handshake failed: {e}"))
    };
    let mut response = actix_http::ws::handshake(req.head()).map_err(|e| handshake_failed(&e))?;
    if !req.extensions().contains::<upgrade::Upgradable>() {
        return Err(handshake_failed(&"the connection cannot be upgraded"));
    }
    if let Some(protocol) = offered_protocol(&req) {
        response.insert_header((SEC_WEBSOCKET_PROTOCOL, protocol));
    }
    let mut response = HttpResponse::from(response.finish().map_into_boxed_body());

    let state = state.into_inner();
    let handover = match state.acquire(&principal) {
        Some(slot) => Handover::Session(Accepted {
            principal,
            state,
            metrics: metrics.into_inner(),
            slot,
        }),
        None => {
            let code = close::TOO_MANY_CONNECTIONS;
            metrics
                .ws_closed
                .get_or_create(&crate::metrics::CloseLabels { code })
                .inc();
            Handover::Refuse {
                code,
                message: format!("at most {} connections per user", state.config.max_connections_per_user),
                grace: state.config.heartbeat_timeout,
            }
        }
    };
    response.extensions_mut().insert(handover);
    Ok(response)
}

/// Our subprotocol, when the client offers it.
fn offered_protocol(req: &HttpRequest) -> Option<&'static str> {
    req.headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL)
        .then_some(SUBPROTOCOL)
}
