//! The WebSocket protocol's frames and close codes (`docs/websocket.md` is
//! the spec; keep the two in step).

use serde::{Deserialize, Serialize};
use sextant_common::ErrorCode;

/// Subprotocol the server speaks; browsers that pass the token as a
/// subprotocol (`bearer.<jwt>`) must offer this one too.
pub const SUBPROTOCOL: &str = "sextant.v1";
pub const BEARER_SUBPROTOCOL_PREFIX: &str = "bearer.";
pub const TOKEN_QUERY_PARAM: &str = "access_token";

/// Close codes the server uses.
pub mod close {
    /// The server is shutting down; reconnect with backoff.
    pub const GOING_AWAY: u16 = 1001;
    /// An inbound frame exceeded `limits.max_frame_bytes`.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The client broke the WebSocket protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// No subscriptions and no client message for `idle_timeout_ms`.
    pub const IDLE_TIMEOUT: u16 = 4000;
    /// Nothing (not even a pong) arrived for `heartbeat_timeout_ms`.
    pub const HEARTBEAT_TIMEOUT: u16 = 4001;
    /// The client did not keep up with its subscriptions' updates.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// The user already has `limits.max_connections_per_user` connections open.
    pub const TOO_MANY_CONNECTIONS: u16 = 4029;
}

/// A frame from the client.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    Ping {
        #[serde(default)]
        id: Option<serde_json::Value>,
    },
    Subscribe {
        #[serde(default)]
        id: Option<serde_json::Value>,
        topic: String,
        /// Resume after this version (the `version` of the last frame seen on the topic).
        #[serde(default)]
        after_version: Option<u64>,
        /// The query of a `metric` subscription.
        #[serde(default)]
        query: Option<serde_json::Value>,
    },
    Unsubscribe {
        #[serde(default)]
        id: Option<serde_json::Value>,
        topic: String,
    },
}

#[derive(Debug, Serialize)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub max_subscriptions: usize,
    pub max_connections_per_user: usize,
    pub outbound_buffer: usize,
}

#[derive(Debug, Serialize)]
pub struct Reconnect {
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
}

/// A frame from the server.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Hello {
        protocol: &'static str,
        session_id: &'a str,
        tenant: &'a str,
        user: &'a str,
        heartbeat_interval_ms: u64,
        heartbeat_timeout_ms: u64,
        idle_timeout_ms: u64,
        limits: &'a Limits,
        reconnect: &'a Reconnect,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<serde_json::Value>,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<serde_json::Value>,
        code: &'static str,
        message: String,
        /// Set when a subscription was refused or ended.
        #[serde(skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
    },
    /// A subscription is live; its snapshot (or missed events) follow.
    Subscribed {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<serde_json::Value>,
        topic: &'a str,
    },
    Unsubscribed {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<serde_json::Value>,
        topic: String,
    },
    /// Sent before a 1001 close: when to come back.
    Goodbye {
        reason: &'static str,
        reconnect_after_ms: u64,
    },
}

impl ServerFrame<'_> {
    pub fn error(id: Option<serde_json::Value>, code: ErrorCode, message: impl Into<String>) -> Self {
        ServerFrame::Error {
            id,
            code: code.as_str(),
            message: message.into(),
            topic: None,
        }
    }

    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("frames serialise")
    }

    /// The frame as a WebSocket text frame's wire bytes.
    pub fn to_wire(&self) -> bytes::Bytes {
        super::wire::text(self.to_text().as_bytes())
    }
}

/// Parses a text frame; the error is the frame to send back.
pub fn parse(text: &str) -> Result<ClientFrame, ServerFrame<'static>> {
    serde_json::from_str(text).map_err(|e| {
        // Echo the id when the frame was JSON with one, so the client can match it.
        let id = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get("id").cloned());
        let code = if e.is_data() {
            ErrorCode::InvalidArgument
        } else {
            ErrorCode::MalformedRequest
        };
        ServerFrame::error(id, code, format!("invalid frame: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_parses_with_and_without_id() {
        assert!(matches!(parse(r#"{"op":"ping"}"#), Ok(ClientFrame::Ping { id: None })));
        assert!(matches!(
            parse(r#"{"op":"ping","id":7}"#),
            Ok(ClientFrame::Ping { id: Some(_) })
        ));
    }

    #[test]
    fn broken_json_is_malformed_and_unknown_ops_are_invalid() {
        let Err(ServerFrame::Error { code, .. }) = parse("{not json") else {
            panic!()
        };
        assert_eq!(code, "malformed_request");
        let Err(ServerFrame::Error { code, id, .. }) = parse(r#"{"op":"dance","id":"a"}"#) else {
            panic!()
        };
        assert_eq!(code, "invalid_argument");
        assert_eq!(id, Some(serde_json::json!("a")));
    }
}
