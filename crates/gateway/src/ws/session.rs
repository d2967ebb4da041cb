//! One WebSocket connection's life, on the socket the upgrade handed over:
//! hello, then client ops, server pings, idle and heartbeat timeouts, and a
//! 1001 close when the gateway shuts down. This is the connection's only
//! task: topic frames reach the socket without it (see [`super::socket`]).
//! Everything the session holds is freed when it returns.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use sextant_common::ErrorCode;
use sextant_common::internal_auth::Caller;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::fanout::{Subscribe, Subscription};
use super::protocol::{self, ClientFrame, Limits, Reconnect, ServerFrame, close};
use super::socket::{Lane, Socket};
use super::topic::{self, Refusal, Topic};
use super::wire::{self, Inbound, Reader, Violation};
use super::{ConnectionSlot, WsState};
use crate::auth::Principal;
use crate::metrics::{CloseLabels, Metrics};

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A connection the `/api/v1/ws` handler accepted, for the upgrade to run.
pub struct Accepted {
    pub(super) principal: Principal,
    pub(super) state: Arc<WsState>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) slot: ConnectionSlot,
}

/// Tells a connection that may not stay why, then closes it.
pub(super) async fn refuse(stream: TcpStream, lane: Arc<Lane>, code: u16, message: &str, grace: Duration) {
    let socket = Socket::new(stream, lane, 2);
    socket.send_now(ServerFrame::error(None, ErrorCode::RateLimited, message).to_wire());
    let _ = tokio::time::timeout(grace, farewell(&socket, wire::close(code, message), 0)).await;
}

pub(super) async fn run(stream: TcpStream, leftover: BytesMut, accepted: Accepted, lane: Arc<Lane>) {
    let Accepted {
        principal,
        state,
        metrics,
        slot: _slot,
    } = accepted;
    let config = &state.config;
    let session_id = uuid::Uuid::now_v7().to_string();
    let span = tracing::info_span!("ws", session = %session_id, tenant = %principal.tenant, user = %principal.user);
    let _enter = span.enter();

    metrics.ws_opened.inc();
    metrics.ws_connections.inc();
    let socket = Socket::new(stream, lane, config.outbound_buffer);

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

    let ending = if socket.send_now(hello.to_wire()) {
        let mut live = Live {
            subscriptions: HashMap::new(),
            socket: socket.clone(),
            caller: principal.caller(),
            reader: Reader::new(config.max_frame_bytes, &leftover),
        };
        drop(leftover);
        serve(&mut live, &state).await
        // `live` goes here, and with it every subscription.
    } else {
        Ending::Gone
    };

    metrics.ws_connections.dec();
    // A client that has stopped reading gets one heartbeat timeout to take
    // its last frames; then the connection is dropped without them.
    let last = match ending {
        Ending::Gone => {
            tracing::debug!("client went away");
            return;
        }
        Ending::ClientClosed => wire::close_empty(),
        Ending::Close(code, description) => {
            tracing::debug!(code, description, "closing");
            metrics.ws_closed.get_or_create(&CloseLabels { code }).inc();
            wire::close(code, description)
        }
        Ending::Shutdown => {
            // Spread reconnects over the client's backoff window so a restart
            // does not bring every client back in the same instant.
            let after = rand::random_range(reconnect.min_delay_ms..=reconnect.max_delay_ms.max(reconnect.min_delay_ms));
            let goodbye = ServerFrame::Goodbye {
                reason: "shutdown",
                reconnect_after_ms: after,
            };
            socket.send_now(goodbye.to_wire());
            metrics
                .ws_closed
                .get_or_create(&CloseLabels {
                    code: close::GOING_AWAY,
                })
                .inc();
            wire::close(close::GOING_AWAY, "server shutting down")
        }
    };
    if tokio::time::timeout(
        config.heartbeat_timeout,
        farewell(&socket, last, config.max_frame_bytes),
    )
    .await
    .is_err()
    {
        tracing::debug!("the client took no close frame; dropping the connection");
    }
}

/// How long a closed connection waits for the client's close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Sends the close frame after what is queued and ends the stream (FIN);
/// then gives the client a moment to answer with its close, so the
/// connection ends cleanly rather than with a reset.
async fn farewell(socket: &Socket, close: bytes::Bytes, max_frame_bytes: usize) {
    socket.close(close);
    while !socket.drained() {
        if socket.stream().writable().await.is_err() {
            return;
        }
        socket.flush_blocked();
    }
    let _ = socket2::SockRef::from(socket.stream()).shutdown(std::net::Shutdown::Write);
    let _ = tokio::time::timeout(CLOSE_LINGER, answer(socket, max_frame_bytes)).await;
}

/// Reads until the client's close frame or the end of its stream.
async fn answer(socket: &Socket, max_frame_bytes: usize) {
    let mut reader = Reader::new(max_frame_bytes, b"");
    loop {
        if socket.stream().readable().await.is_err() {
            return;
        }
        match socket.stream().try_read_buf(reader.buffer()) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        }
        // Whatever else is still in flight is dropped; a close (or a broken
        // frame) ends the wait.
        loop {
            match reader.next_message() {
                Ok(Some(Inbound::Close)) | Err(_) => return,
                Ok(Some(_)) => {}
                Ok(None) => break,
            }
        }
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

/// A session's topic subscriptions, its socket, and what the client sent.
struct Live {
    /// By topic name; dropping one leaves its topic.
    subscriptions: HashMap<Arc<str>, Subscription>,
    socket: Arc<Socket>,
    caller: Caller,
    reader: Reader,
}

async fn serve(live: &mut Live, state: &WsState) -> Ending {
    let config = &state.config;
    let mut heartbeat = tokio::time::interval_at(Instant::now() + config.heartbeat_interval, config.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Anything from the client proves it alive; only data frames (or live
    // subscriptions) prove it active.
    let mut last_heard = Instant::now();
    let mut last_active = Instant::now();
    // The kernel took no more of the queue: wait until it takes some.
    let mut blocked = false;
    let socket = live.socket.clone();

    loop {
        let idle = live.subscriptions.is_empty();
        tokio::select! {
            biased;
            _ = state.shutdown.cancelled() => return Ending::Shutdown,
            _ = socket.woken() => {
                let news = socket.news();
                if news.broken {
                    return Ending::Gone;
                }
                if news.slow {
                    return Ending::SLOW_CONSUMER;
                }
                blocked = news.blocked;
                for (topic, id) in news.ended {
                    if live.subscriptions.get(&topic).is_some_and(|s| s.id() == id) {
                        live.subscriptions.remove(&topic);
                        last_active = Instant::now();
                    }
                }
            }
            writable = socket.stream().writable(), if blocked => {
                if writable.is_err() {
                    return Ending::Gone;
                }
                blocked = socket.flush_blocked();
            }
            _ = tokio::time::sleep_until(last_active + config.idle_timeout), if idle => {
                return Ending::Close(close::IDLE_TIMEOUT, "idle timeout");
            }
            readable = socket.stream().readable() => {
                if readable.is_err() {
                    return Ending::Gone;
                }
                match socket.stream().try_read_buf(live.reader.buffer()) {
                    Ok(0) => return Ending::Gone,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(_) => return Ending::Gone,
                }
                last_heard = Instant::now();
                loop {
                    let message = match live.reader.next_message() {
                        Ok(Some(message)) => message,
                        Ok(None) => break,
                        Err(Violation::TooBig) => return Ending::Close(close::MESSAGE_TOO_BIG, "frame too large"),
                        Err(Violation::Protocol(error)) => {
                            tracing::debug!(%error, "protocol error");
                            return Ending::Close(close::PROTOCOL_ERROR, "protocol error");
                        }
                    };
                    let reply = match message {
                        Inbound::Close => return Ending::ClientClosed,
                        Inbound::Ping(payload) => Some(wire::pong(&payload)),
                        Inbound::Pong => None,
                        Inbound::Binary(_) => {
                            last_active = Instant::now();
                            let frame = ServerFrame::error(None, ErrorCode::UnsupportedMediaType, "binary frames are not supported; send JSON text");
                            Some(frame.to_wire())
                        }
                        Inbound::Text(text) => {
                            last_active = Instant::now();
                            let reply = match std::str::from_utf8(&text) {
                                Ok(text) => match protocol::parse(text) {
                                    Ok(frame) => handle(frame, live, state),
                                    Err(error) => Some(error),
                                },
                                Err(_) => {
                                    tracing::debug!("text frame is not UTF-8");
                                    return Ending::Close(close::PROTOCOL_ERROR, "protocol error");
                                }
                            };
                            reply.map(|frame| frame.to_wire())
                        }
                    };
                    if let Some(reply) = reply
                        && !socket.send_now(reply)
                    {
                        // Too slow, or gone: the news says which.
                        break;
                    }
                }
            }
            _ = heartbeat.tick() => {
                let now = Instant::now();
                if now.duration_since(last_heard) >= config.heartbeat_timeout {
                    return Ending::Close(close::HEARTBEAT_TIMEOUT, "heartbeat timeout");
                }
                socket.send_now(wire::ping());
            }
        }
    }
}

/// Answers an op; `None` when the answer comes later (a subscription's
/// `subscribed`, or its refusal, arrives on the socket from the hub).
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
                sink: live.socket.clone(),
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
