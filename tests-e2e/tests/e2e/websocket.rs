//! The WebSocket protocol as `docs/websocket.md` specifies it.

use std::time::Duration;

use serde_json::json;
use sextant_e2e::TestSystem;
use sextant_e2e::ws::{self, Auth, Frame};

use crate::system;

async fn open(system: &TestSystem, user: &str) -> ws::Socket {
    let mut socket = ws::connect(&system.ws_url("/api/v1/ws"), Auth::Header(&system.token("acme", user)))
        .await
        .expect("upgrade accepted");
    let hello = ws::next_json(&mut socket).await;
    assert_eq!(hello["type"], "hello", "{hello}");
    socket
}

async fn metric(system: &TestSystem, series: &str) -> u64 {
    let text = system
        .http
        .get(system.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn open_connections(system: &TestSystem) -> u64 {
    metric(system, "sextant_gateway_ws_connections").await
}

async fn wait_open_connections(system: &TestSystem, expected: u64) {
    for _ in 0..50 {
        if open_connections(system).await == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("open connections never reached {expected}");
}

#[tokio::test]
async fn hello_describes_the_session_and_its_limits() {
    let system = system!();
    let token = system.token("acme", "alice");
    for auth in [Auth::Header(&token), Auth::Query(&token), Auth::Subprotocol(&token)] {
        let mut socket = ws::connect(&system.ws_url("/api/v1/ws"), auth).await.unwrap();
        let hello = ws::next_json(&mut socket).await;
        assert_eq!(hello["type"], "hello");
        assert_eq!(hello["protocol"], "sextant.v1");
        assert_eq!(hello["tenant"], "acme");
        assert_eq!(hello["user"], "alice");
        assert!(hello["session_id"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(hello["heartbeat_interval_ms"].as_u64().unwrap() > 0);
        assert_eq!(hello["limits"]["max_frame_bytes"], 65536);
        assert!(hello["limits"]["max_connections_per_user"].as_u64().unwrap() >= 1);
        assert!(hello["reconnect"]["max_delay_ms"].as_u64().is_some());
    }
}

#[tokio::test]
async fn ping_gets_pong_with_the_same_id() {
    let system = system!();
    let mut socket = open(&system, "alice").await;
    ws::send_json(&mut socket, &json!({"op": "ping", "id": "p-1"})).await;
    assert_eq!(ws::next_json(&mut socket).await, json!({"type": "pong", "id": "p-1"}));
}

#[tokio::test]
async fn a_malformed_frame_gets_an_error_frame_and_the_socket_lives_on() {
    let system = system!();
    let mut socket = open(&system, "alice").await;

    ws::send_text(&mut socket, "{this is not json").await;
    let error = ws::next_json(&mut socket).await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["code"], "malformed_request");

    ws::send_json(&mut socket, &json!({"op": "launch", "id": 9})).await;
    let error = ws::next_json(&mut socket).await;
    assert_eq!(error["code"], "invalid_argument");
    assert_eq!(error["id"], 9);

    ws::send_json(&mut socket, &json!({"op": "ping", "id": 10})).await;
    assert_eq!(ws::next_json(&mut socket).await, json!({"type": "pong", "id": 10}));
}

#[tokio::test]
async fn an_oversized_frame_closes_with_1009() {
    let system = system!(TestSystem::builder().gateway_env("SEXTANT_GATEWAY__WS__MAX_FRAME_BYTES", "1024"));
    let mut socket = open(&system, "alice").await;
    let big = json!({"op": "ping", "id": "x".repeat(4096)});
    ws::send_json(&mut socket, &big).await;
    let (code, _) = ws::expect_close(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(code, 1009);
    wait_open_connections(&system, 0).await;
}

/// A ping op padded to exactly `len` bytes.
fn ping_of(len: usize) -> String {
    let empty = r#"{"op":"ping","id":""}"#;
    let id = "x".repeat(len - empty.len());
    let frame = format!(r#"{{"op":"ping","id":"{id}"}}"#);
    assert_eq!(frame.len(), len);
    frame
}

#[tokio::test]
async fn a_frame_of_exactly_the_limit_is_taken_and_one_byte_more_closes_with_1009() {
    let system = system!(TestSystem::builder().gateway_env("SEXTANT_GATEWAY__WS__MAX_FRAME_BYTES", "1024"));
    let mut socket = open(&system, "alice").await;
    ws::send_text(&mut socket, &ping_of(1024)).await;
    assert_eq!(ws::next_json(&mut socket).await["type"], "pong");
    ws::send_text(&mut socket, &ping_of(1025)).await;
    let (code, _) = ws::expect_close(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(code, 1009);
    wait_open_connections(&system, 0).await;
}

#[tokio::test]
async fn fragments_count_together_against_the_frame_limit() {
    use futures::SinkExt as _;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame as WireFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    let system = system!(TestSystem::builder().gateway_env("SEXTANT_GATEWAY__WS__MAX_FRAME_BYTES", "1024"));
    let mut socket = open(&system, "alice").await;
    let fragments = |text: &str| {
        let (first, rest) = text.split_at(text.len() / 2);
        [
            WireFrame::message(first.as_bytes().to_vec(), OpCode::Data(Data::Text), false),
            WireFrame::message(rest.as_bytes().to_vec(), OpCode::Data(Data::Continue), true),
        ]
    };
    // Two halves of a message at the limit: one message, answered.
    for frame in fragments(&ping_of(1024)) {
        socket.send(Message::Frame(frame)).await.unwrap();
    }
    assert_eq!(ws::next_json(&mut socket).await["type"], "pong");
    // Two halves, each well under the limit, of a message over it.
    for frame in fragments(&ping_of(1400)) {
        socket.send(Message::Frame(frame)).await.unwrap();
    }
    let (code, _) = ws::expect_close(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(code, 1009);
}

#[tokio::test]
async fn the_per_user_connection_limit_is_enforced_and_freed_on_close() {
    let system = system!(TestSystem::builder().gateway_env("SEXTANT_GATEWAY__WS__MAX_CONNECTIONS_PER_USER", "2"));
    let first = open(&system, "alice").await;
    let _second = open(&system, "alice").await;

    let mut third = ws::connect(
        &system.ws_url("/api/v1/ws"),
        Auth::Header(&system.token("acme", "alice")),
    )
    .await
    .unwrap();
    let refusal = ws::next_json(&mut third).await;
    assert_eq!(refusal["type"], "error");
    assert_eq!(refusal["code"], "rate_limited");
    let (code, _) = ws::expect_close(&mut third, Duration::from_secs(5)).await;
    assert_eq!(code, 4029);

    // Another user, and the same user in another tenant, are not affected.
    let _bob = open(&system, "bob").await;
    let mut other_tenant = ws::connect(
        &system.ws_url("/api/v1/ws"),
        Auth::Header(&system.token("globex", "alice")),
    )
    .await
    .unwrap();
    assert_eq!(ws::next_json(&mut other_tenant).await["type"], "hello");

    // Closing one frees its slot.
    drop(first);
    wait_open_connections(&system, 3).await;
    let _again = open(&system, "alice").await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_and_freed() {
    let system = system!(TestSystem::builder().gateway_env("SEXTANT_GATEWAY__WS__IDLE_TIMEOUT", "1s"));
    let mut socket = open(&system, "alice").await;
    wait_open_connections(&system, 1).await;
    let (code, reason) = ws::expect_close(&mut socket, Duration::from_secs(5)).await;
    assert_eq!((code, reason.as_str()), (4000, "idle timeout"));
    wait_open_connections(&system, 0).await;
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_closed() {
    let system = system!(
        TestSystem::builder()
            .gateway_env("SEXTANT_GATEWAY__WS__HEARTBEAT_INTERVAL", "200ms")
            .gateway_env("SEXTANT_GATEWAY__WS__HEARTBEAT_TIMEOUT", "600ms")
    );
    let mut socket = open(&system, "alice").await;
    // Not reading means not answering pings: the server must give up on us.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Reading now flushes our late pongs into a closed socket, so the close
    // frame may be lost to a broken pipe; the server's own count says why it closed.
    loop {
        match ws::next(&mut socket, Duration::from_secs(5)).await {
            Frame::Json(_) => continue,
            Frame::Close(frame) => {
                if let Some(frame) = frame {
                    assert_eq!(u16::from(frame.code), 4001);
                }
                break;
            }
            Frame::Broken(_) => break,
        }
    }
    wait_open_connections(&system, 0).await;
    assert_eq!(
        metric(&system, "sextant_gateway_ws_connections_closed_total{code=\"4001\"}").await,
        1
    );
}

#[tokio::test]
async fn a_client_that_answers_pings_stays_connected() {
    let system = system!(
        TestSystem::builder()
            .gateway_env("SEXTANT_GATEWAY__WS__HEARTBEAT_INTERVAL", "200ms")
            .gateway_env("SEXTANT_GATEWAY__WS__HEARTBEAT_TIMEOUT", "600ms")
    );
    let mut socket = open(&system, "alice").await;
    for i in 0..8 {
        // Reading answers the server's pings; a ping op keeps the session active.
        ws::send_json(&mut socket, &json!({"op": "ping", "id": i})).await;
        match ws::next(&mut socket, Duration::from_secs(2)).await {
            Frame::Json(frame) => assert_eq!(frame["type"], "pong"),
            Frame::Close(frame) => panic!("closed after {i} rounds: {frame:?}"),
            Frame::Broken(error) => panic!("broken after {i} rounds: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn sigterm_closes_sockets_with_1001_and_a_reconnect_hint() {
    let mut system = system!();
    let mut socket = open(&system, "alice").await;
    system.gateway.terminate();

    let goodbye = ws::next_json(&mut socket).await;
    assert_eq!(goodbye["type"], "goodbye");
    assert_eq!(goodbye["reason"], "shutdown");
    assert!(goodbye["reconnect_after_ms"].as_u64().unwrap() >= 1000);
    let (code, _) = ws::expect_close(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(code, 1001);

    let status = system
        .gateway
        .wait_exit(Duration::from_secs(10))
        .expect("the gateway exits");
    assert!(status.success(), "{status}");
}
