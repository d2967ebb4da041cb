//! A real WebSocket client (tokio-tungstenite) with the few helpers the
//! tests need: connect with a token, read the next JSON frame, expect a close.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How a client passes its token.
pub enum Auth<'a> {
    Header(&'a str),
    Query(&'a str),
    Subprotocol(&'a str),
    None,
}

/// Connects; `Err` carries the HTTP status when the upgrade was refused.
pub async fn connect(url: &str, auth: Auth<'_>) -> Result<Socket, u16> {
    let url = match auth {
        Auth::Query(token) => format!("{url}?access_token={token}"),
        _ => url.to_owned(),
    };
    let mut request = url.into_client_request().unwrap();
    match auth {
        Auth::Header(token) => {
            request.headers_mut().insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
            );
        }
        Auth::Subprotocol(token) => {
            request.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_str(&format!("sextant.v1, bearer.{token}")).unwrap(),
            );
        }
        Auth::Query(_) | Auth::None => {}
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(Error::Http(response)) => Err(response.status().as_u16()),
        Err(other) => panic!("websocket connect failed: {other}"),
    }
}

pub enum Frame {
    Json(Value),
    Close(Option<CloseFrame>),
    /// The transport failed (e.g. the server closed it while we wrote).
    Broken(String),
}

/// The next text or close frame (pings are answered by the library while
/// reading), within `timeout` however many pings arrive meanwhile.
pub async fn next(socket: &mut Socket, timeout: Duration) -> Frame {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("no frame within the timeout");
        match message {
            Some(Ok(Message::Text(text))) => return Frame::Json(serde_json::from_str(&text).expect("JSON text frame")),
            Some(Ok(Message::Close(frame))) => return Frame::Close(frame),
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Frame::Broken(error.to_string()),
            None => return Frame::Close(None),
        }
    }
}

pub async fn next_json(socket: &mut Socket) -> Value {
    match next(socket, Duration::from_secs(5)).await {
        Frame::Json(value) => value,
        Frame::Close(frame) => panic!("expected a JSON frame, got close {frame:?}"),
        Frame::Broken(error) => panic!("expected a JSON frame, got {error}"),
    }
}

/// Reads until the server's close frame; returns its code and reason.
pub async fn expect_close(socket: &mut Socket, timeout: Duration) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next(socket, left).await {
            Frame::Json(_) => continue,
            Frame::Close(Some(frame)) => return (u16::from(frame.code), frame.reason.to_string()),
            Frame::Close(None) => panic!("connection ended without a close frame"),
            Frame::Broken(error) => panic!("connection broke before a close frame: {error}"),
        }
    }
}

pub async fn send_json(socket: &mut Socket, value: &Value) {
    socket
        .send(Message::text(value.to_string()))
        .await
        .expect("sending a frame");
}

pub async fn send_text(socket: &mut Socket, text: &str) {
    socket
        .send(Message::text(text.to_owned()))
        .await
        .expect("sending a frame");
}
