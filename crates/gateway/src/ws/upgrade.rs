//! The upgrade layer: how a WebSocket connection leaves actix-http.
//!
//! actix-http hands every request that asks to upgrade (`Upgrade:
//! websocket`) to this service, with the connection. The request still goes
//! through the whole actix-web app — middleware, auth, the `/api/v1/ws`
//! handler — and its answer is written as actix would. When the handler
//! accepted the upgrade (a `101` carrying [`Accepted`]), the connection's
//! socket becomes the session's, with none of actix-http's per-connection
//! buffers (8 KiB each way) and no response-body channel between the two:
//! topic frames are written straight to it (see [`super::socket`]). Any
//! other answer is sent whole and the connection closes.
//!
//! Measured before this layer, at 10,000 subscribers: 19.4 KiB of gateway
//! memory per idle connection, and ~31 µs of gateway CPU per subscriber per
//! job, a frame going fan-out → session task → actix-ws channel → HTTP/1
//! dispatcher task → `send`. See ARCHITECTURE.md and docs/benchmarks.md.

use std::rc::Rc;
use std::sync::Arc;

use actix_codec::{Framed, FramedParts};
use actix_http::body::{BodySize, MessageBody};
use actix_http::h1::{self, Message};
use actix_http::{ConnectionType, HttpMessage as _, Request, Response, StatusCode};
use actix_web::body::BoxBody;
use actix_web::dev::{Service, ServiceFactory, ServiceResponse};
use bytes::BytesMut;
use futures::future::LocalBoxFuture;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio_util::codec::Encoder as _;

use super::session::{self, Accepted};
use super::socket::Lane;

/// Marks a request that reached the app through this layer: only such a
/// request's connection can be handed over.
#[derive(Clone, Copy)]
pub struct Upgradable;

/// What a `101` answer carries for the layer: a session to run, or a
/// connection to refuse with a close code (browsers cannot read a refused
/// upgrade's status, only a close code).
pub enum Handover {
    Session(Accepted),
    Refuse {
        code: u16,
        message: String,
        grace: std::time::Duration,
    },
}

/// Builds the layer on each worker, with that worker's own copy of the app
/// and its lane.
pub struct Upgrade<F> {
    app: F,
}

impl<F> Upgrade<F> {
    pub fn new(app: F) -> Self {
        Self { app }
    }
}

impl<F, B> ServiceFactory<(Request, Framed<TcpStream, h1::Codec>)> for Upgrade<F>
where
    F: ServiceFactory<Request, Config = (), Response = ServiceResponse<B>, Error = actix_web::Error>,
    F::Future: 'static,
    F::Service: 'static,
    F::InitError: std::fmt::Debug,
    B: MessageBody + 'static,
{
    type Response = ();
    type Error = actix_web::Error;
    type Config = ();
    type Service = UpgradeService<F::Service>;
    type InitError = F::InitError;
    type Future = LocalBoxFuture<'static, Result<Self::Service, Self::InitError>>;

    fn new_service(&self, _: ()) -> Self::Future {
        let app = self.app.new_service(());
        Box::pin(async move {
            Ok(UpgradeService {
                app: Rc::new(app.await?),
                // Built on the worker's thread: the lane writes its sockets.
                lane: Lane::start(),
            })
        })
    }
}

pub struct UpgradeService<S> {
    app: Rc<S>,
    lane: Arc<Lane>,
}

impl<S, B> Service<(Request, Framed<TcpStream, h1::Codec>)> for UpgradeService<S>
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ();
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<(), actix_web::Error>>;

    actix_web::dev::always_ready!();

    fn call(&self, (req, framed): (Request, Framed<TcpStream, h1::Codec>)) -> Self::Future {
        let app = self.app.clone();
        let lane = self.lane.clone();
        Box::pin(async move {
            req.extensions_mut().insert(Upgradable);
            let response = match app.call(req).await {
                Ok(response) => response.into_parts().1.map_into_boxed_body(),
                Err(error) => error.error_response(),
            };
            // actix-http's write buffer (8 KiB) goes here, its read buffer
            // once the session has what was left in it.
            let FramedParts {
                io, codec, read_buf, ..
            } = framed.into_parts();
            if let Err(error) = answer(io, codec, read_buf, response.into(), lane).await {
                tracing::debug!(%error, "upgrade connection ended with an error");
            }
            Ok(())
        })
    }
}

/// Writes the app's answer; on an accepted upgrade, runs the connection.
async fn answer(
    mut io: TcpStream,
    mut codec: h1::Codec,
    leftover: BytesMut,
    mut response: Response<BoxBody>,
    lane: Arc<Lane>,
) -> std::io::Result<()> {
    let handover = response.extensions_mut().remove::<Handover>();
    let mut out = BytesMut::new();
    match handover {
        Some(handover) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
            codec.encode(Message::Item((response.drop_body(), BodySize::None)), &mut out)?;
            io.write_all(&out).await?;
            drop((out, codec));
            match handover {
                Handover::Session(accepted) => session::run(io, leftover, accepted, lane).await,
                Handover::Refuse { code, message, grace } => session::refuse(io, lane, code, &message, grace).await,
            }
        }
        _ => {
            // Not an upgrade after all: the answer, whole, then the end.
            response.head_mut().set_connection_type(ConnectionType::Close);
            let (head, body) = response.into_parts();
            let body = actix_web::body::to_bytes(body)
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            codec.encode(Message::Item((head, BodySize::Sized(body.len() as u64))), &mut out)?;
            codec.encode(Message::Chunk(Some(body)), &mut out)?;
            codec.encode(Message::Chunk(None), &mut out)?;
            io.write_all(&out).await?;
            io.shutdown().await?;
        }
    }
    Ok(())
}
