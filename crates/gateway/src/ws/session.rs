//! One WebSocket connection's life: hello, then client ops, server pings,
//! idle and heartbeat timeouts, and a 1001 close when the gateway shuts down.
//! Everything the session holds is freed when this task ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, ProtocolError, Session};
use sextant_common::ErrorCode;
use tokio::time::Instant;

use sextant_common::internal_auth::Caller;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::fanout::{Outbound, Sink, Subscribe, Subscription};
use super::protocol::{self, ClientFrame, Limits, Reconnect, ServerFrame, close};
use super::topic::{self, Refusal, Topic};
use super::{ConnectionSlot, WsState};
use crate::auth::Principal;
use crate::metrics::{CloseLabels, Metrics};

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Closes a connection that may not stay, after telling it why.
pub(super) async fn refuse(mut session: Session, code: u16, message: String) {
    let frame = ServerFrame::error(None, ErrorCode::RateLimited, message.clone());
    let _ = session.text(frame.to_text()).await;
    let _ = session.close(Some(reason(code, &message))).await;
}

fn reason(code: u16, description: &str) -> CloseReason {
    CloseReason {
        code: CloseCode::from(code),
        description: Some(description.to_owned()),
    }
}

struct Connection {
    session: Session,
    metrics: Arc<Metrics>,
}

impl Connection {
    async fn send(&mut self, frame: &ServerFrame<'_>) -> bool {
        self.session.text(frame.to_text()).await.is_ok()
    }

    async fn close(self, code: u16, description: &str) {
        self.metrics.ws_closed.get_or_create(&CloseLabels { code }).inc();
        let _ = self.session.close(Some(reason(code, description))).await;
    }
}

pub(super) async fn run(
    session: Session,
    mut stream: AggregatedMessageStream,
    principal: Principal,
    state: Arc<WsState>,
    metrics: Arc<Metrics>,
    _slot: ConnectionSlot,
) {
    let config = &state.config;
    let session_id = uuid::Uuid::now_v7().to_string();
    let span = tracing::info_span!("ws", session = %session_id, tenant = %principal.tenant, user = %principal.user);
    let _enter = span.enter();

    metrics.ws_opened.inc();
    metrics.ws_connections.inc();
    let mut conn = Connection {
        session,
        metrics: metrics.clone(),
    };

    let limits = Limits {
        max_frame_bytes: config.max_frame_bytes,
        max_subscriptions: config.max_subscriptions,
        max_connections_per_user: config.max_connections_per_user,
        outbound_buffer: config.outbound_buffer,
    };
    let reconnect = Reconnect {
        min_delay_ms: ms(config.reconnect_min_delay),
        max_delay_ms: ms(config.reconnect_max_delay),
    };
    let hello = ServerFrame::Hello {
        protocol: protocol::SUBPROTOCOL,
        session_id: &session_id,
        tenant: &principal.tenant,
        user: &principal.user,
        heartbeat_interval_ms: ms(config.heartbeat_interval),
        heartbeat_timeout_ms: ms(config.heartbeat_timeout),
        idle_timeout_ms: ms(config.idle_timeout),
        limits: &limits,
        reconnect: &reconnect,
    };
    tracing::debug!("connected");

    let ending = if conn.send(&hello).await {
        let (out, outbound) = mpsc::channel(config.outbound_buffer.max(1));
        let mut live = Live {
            subscriptions: HashMap::new(),
            outbound,
            sink: Sink {
                out,
                slow: CancellationToken::new(),
            },
            caller: principal.caller(),
        };
        serve(&mut conn, &mut stream, &state, &mut live).await
    } else {
        Ending::Gone
    };

    metrics.ws_connections.dec();
    // A client that has stopped reading gets one heartbeat timeout to take
    // its last frames; then the connection is dropped without them.
    let farewell = async move {
        match ending {
            Ending::Gone => tracing::debug!("client went away"),
            Ending::ClientClosed => {
                let _ = conn.session.close(None).await;
            }
            Ending::Close(code, description) => {
                tracing::debug!(code, description, "closing");
                conn.close(code, description).await;
            }
            Ending::Shutdown => {
                // Spread reconnects over the client's backoff window so a restart
                // does not bring every client back in the same instant.
                let after =
                    rand::random_range(reconnect.min_delay_ms..=reconnect.max_delay_ms.max(reconnect.min_delay_ms));
                let goodbye = ServerFrame::Goodbye {
                    reason: "shutdown",
                    reconnect_after_ms: after,
                };
                conn.send(&goodbye).await;
                conn.close(close::GOING_AWAY, "server shutting down").await;
            }
        }
    };
    if tokio::time::timeout(config.heartbeat_timeout, farewell).await.is_err() {
        tracing::debug!("the client took no close frame; dropping the connection");
    }
}

enum Ending {
    /// The transport is gone; nothing to send.
    Gone,
    /// The client sent a close frame; echo it.
    ClientClosed,
    Close(u16, &'static str),
    Shutdown,
}

impl Ending {
    const SLOW_CONSUMER: Ending = Ending::Close(close::SLOW_CONSUMER, "slow consumer: outbound buffer full");
}

/// A session's topic subscriptions and the queue their frames arrive on.
struct Live {
    /// By topic name; dropping one leaves its topic.
    subscriptions: HashMap<Arc<str>, Subscription>,
    outbound: mpsc::Receiver<Outbound>,
    sink: Sink,
    caller: Caller,
}

async fn serve(
    conn: &mut Connection,
    stream: &mut AggregatedMessageStream,
    state: &WsState,
    live: &mut Live,
) -> Ending {
    let config = &state.config;
    let mut heartbeat = tokio::time::interval_at(Instant::now() + config.heartbeat_interval, config.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Anything from the client proves it alive; only data frames (or live
    // subscriptions) prove it active.
    let mut last_heard = Instant::now();
    let mut last_active = Instant::now();

    loop {
        let idle = live.subscriptions.is_empty();
        tokio::select! {
            biased;
            _ = state.shutdown.cancelled() => return Ending::Shutdown,
            _ = live.sink.slow.cancelled() => return Ending::SLOW_CONSUMER,
            _ = tokio::time::sleep_until(last_active + config.idle_timeout), if idle => {
                return Ending::Close(close::IDLE_TIMEOUT, "idle timeout");
            }
            Some(outbound) = live.outbound.recv() => match outbound {
                Outbound::Frame(text) => {
                    // A client that stops reading blocks this write; its
                    // overflow and a shutdown must still end the session.
                    tokio::select! {
                        biased;
                        _ = state.shutdown.cancelled() => return Ending::Shutdown,
                        _ = live.sink.slow.cancelled() => return Ending::SLOW_CONSUMER,
                        sent = conn.session.text(text) => {
                            if sent.is_err() {
                                return Ending::Gone;
                            }
                        }
                    }
                }
                Outbound::Ended { topic } => {
                    live.subscriptions.remove(&topic);
                    last_active = Instant::now();
                }
            },
            message = stream.recv() => {
                last_heard = Instant::now();
                match message {
                    None => return Ending::Gone,
                    Some(Err(ProtocolError::Overflow)) => {
                        return Ending::Close(close::MESSAGE_TOO_BIG, "frame too large");
                    }
                    Some(Err(error)) => {
                        tracing::debug!(%error, "protocol error");
                        return Ending::Close(close::PROTOCOL_ERROR, "protocol error");
                    }
                    Some(Ok(AggregatedMessage::Close(_))) => return Ending::ClientClosed,
                    Some(Ok(AggregatedMessage::Ping(bytes))) => {
                        if conn.session.pong(&bytes).await.is_err() {
                            return Ending::Gone;
                        }
                    }
                    Some(Ok(AggregatedMessage::Pong(_))) => {}
                    Some(Ok(AggregatedMessage::Binary(_))) => {
                        last_active = Instant::now();
                        let frame = ServerFrame::error(None, ErrorCode::UnsupportedMediaType, "binary frames are not supported; send JSON text");
                        if !conn.send(&frame).await {
                            return Ending::Gone;
                        }
                    }
                    Some(Ok(AggregatedMessage::Text(text))) => {
                        last_active = Instant::now();
                        let reply = match protocol::parse(&text) {
                            Ok(frame) => handle(frame, live, state),
                            Err(error) => Some(error),
                        };
                        if let Some(reply) = reply
                            && !conn.send(&reply).await
                        {
                            return Ending::Gone;
                        }
                    }
                }
            }
            _ = heartbeat.tick() => {
                let now = Instant::now();
                if now.duration_since(last_heard) >= config.heartbeat_timeout {
                    return Ending::Close(close::HEARTBEAT_TIMEOUT, "heartbeat timeout");
                }
                if conn.session.ping(b"").await.is_err() {
                    return Ending::Gone;
                }
            }
        }
    }
}

/// Answers an op; `None` when the answer comes later (a subscription's
/// `subscribed`, or its refusal, arrives through the outbound queue).
fn handle(frame: ClientFrame, live: &mut Live, state: &WsState) -> Option<ServerFrame<'static>> {
    match frame {
        ClientFrame::Ping { id } => Some(ServerFrame::Pong { id }),
        ClientFrame::Subscribe {
            id,
            topic: name,
            after_version,
            query,
        } => {
            let refuse = |id, code, message| {
                Some(ServerFrame::Error {
                    id,
                    code,
                    message,
                    topic: Some(name.clone()),
                })
            };
            let (topic, name) = match Topic::parse(&name, query) {
                Ok(parsed) => parsed,
                Err(Refusal::Unknown) => {
                    return refuse(
                        id,
                        ErrorCode::NotFound.as_str(),
                        format!("unknown topic {name:?}; {}", topic::KNOWN),
                    );
                }
                Err(Refusal::Invalid(message)) => return refuse(id, ErrorCode::InvalidArgument.as_str(), message),
            };
            let max = state.config.max_subscriptions;
            if !live.subscriptions.contains_key(name.as_str()) && live.subscriptions.len() >= max {
                return refuse(
                    id,
                    ErrorCode::RateLimited.as_str(),
                    format!("at most {max} subscriptions per connection"),
                );
            }
            let name: Arc<str> = name.into();
            let subscription = state.hub.subscribe(Subscribe {
                caller: live.caller.clone(),
                topic,
                name: name.clone(),
                after: after_version.unwrap_or(0),
                op: id,
                sink: live.sink.clone(),
            });
            // Subscribing again to a live topic restarts it from `after_version`
            // (the new subscription joins before the old one leaves).
            live.subscriptions.insert(name, subscription);
            None
        }
        ClientFrame::Unsubscribe { id, topic } => Some(if live.subscriptions.remove(topic.as_str()).is_some() {
            ServerFrame::Unsubscribed { id, topic }
        } else {
            ServerFrame::error(id, ErrorCode::NotFound, format!("not subscribed to {topic:?}"))
        }),
    }
}
