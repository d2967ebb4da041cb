//! Service-to-service auth. Every call between Sextant services carries the
//! shared internal secret in gRPC metadata; the backends refuse any call
//! without it (the gRPC health service excepted, so probes need no secret).
//! The gateway also passes the caller's tenant and user, which services trust
//! only because the secret proved the call came from inside.

use std::sync::Arc;
use std::task::{Context, Poll};

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::ErrorCode;

pub const SECRET_HEADER: &str = "x-sextant-internal-secret";
pub const TENANT_HEADER: &str = "x-sextant-tenant";
pub const USER_HEADER: &str = "x-sextant-user";
/// Set by a service calling another on its own behalf (never by the
/// gateway): the caller's service name. Some operations (internal job
/// kinds) are open only to such calls.
pub const SERVICE_HEADER: &str = "x-sextant-service";

/// Paths callable without the secret.
const OPEN_PREFIXES: &[&str] = &["/grpc.health.v1.Health/"];

/// Adds the internal secret and the current trace context to every call.
#[derive(Clone)]
pub struct ClientAuth {
    secret: AsciiMetadataValue,
}

impl ClientAuth {
    pub fn new(secret: &SecretString) -> anyhow::Result<Self> {
        let mut secret = AsciiMetadataValue::try_from(secret.expose_secret())
            .map_err(|_| anyhow::anyhow!("internal secret must be printable ASCII"))?;
        secret.set_sensitive(true);
        Ok(Self { secret })
    }
}

impl Interceptor for ClientAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert(SECRET_HEADER, self.secret.clone());
        // The trace context goes in below, from the call's own client span
        // (`telemetry::TracedChannel`).
        Ok(request)
    }
}

/// Who a call is made for, as the gateway established it from the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub tenant: String,
    pub user: String,
}

impl Caller {
    /// Writes the caller into outgoing metadata.
    pub fn apply(&self, metadata: &mut MetadataMap) -> Result<(), Status> {
        for (key, value) in [(TENANT_HEADER, &self.tenant), (USER_HEADER, &self.user)] {
            let value = AsciiMetadataValue::try_from(value.as_str())
                .map_err(|_| ErrorCode::InvalidArgument.status(format!("{key} must be ASCII")))?;
            metadata.insert(key, value);
        }
        Ok(())
    }

    /// Reads the caller from incoming metadata; both fields are required.
    pub fn from_metadata(metadata: &MetadataMap) -> Result<Self, Status> {
        let get = |key: &str| {
            metadata
                .get(key)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| ErrorCode::Unauthenticated.status(format!("missing {key}")))
        };
        Ok(Self {
            tenant: get(TENANT_HEADER)?,
            user: get(USER_HEADER)?,
        })
    }
}

/// Tower layer for the backends' gRPC servers: refuses calls without the secret.
#[derive(Clone)]
pub struct ServerAuthLayer {
    secret: Arc<[u8]>,
}

impl ServerAuthLayer {
    pub fn new(secret: &SecretString) -> Self {
        Self {
            secret: secret.expose_secret().as_bytes().into(),
        }
    }
}

impl<S> tower::Layer<S> for ServerAuthLayer {
    type Service = ServerAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerAuth {
            inner,
            secret: self.secret.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ServerAuth<S> {
    inner: S,
    secret: Arc<[u8]>,
}

impl<S, B> tower::Service<http::Request<B>> for ServerAuth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::Either<S::Future, futures::future::Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let open = OPEN_PREFIXES.iter().any(|p| request.uri().path().starts_with(p));
        let presented = request.headers().get(SECRET_HEADER).map(|v| v.as_bytes());
        let allowed = open || presented.is_some_and(|p| bool::from(p.ct_eq(&self.secret)));
        if allowed {
            return futures::future::Either::Left(self.inner.call(request));
        }
        tracing::warn!(path = request.uri().path(), "refused call without the internal secret");
        let status = ErrorCode::Unauthenticated.status("missing or wrong internal secret");
        futures::future::Either::Right(futures::future::ready(Ok(status.into_http())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caller_round_trips_through_metadata() {
        let caller = Caller {
            tenant: "acme".into(),
            user: "alice".into(),
        };
        let mut metadata = MetadataMap::new();
        caller.apply(&mut metadata).unwrap();
        assert_eq!(Caller::from_metadata(&metadata).unwrap(), caller);
    }

    #[test]
    fn a_call_without_a_tenant_is_unauthenticated() {
        let mut metadata = MetadataMap::new();
        metadata.insert(USER_HEADER, "alice".parse().unwrap());
        let status = Caller::from_metadata(&metadata).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn the_client_interceptor_adds_the_secret_marked_sensitive() {
        let mut auth = ClientAuth::new(&SecretString::from("0123456789abcdef")).unwrap();
        let request = auth.call(Request::new(())).unwrap();
        let value = request.metadata().get(SECRET_HEADER).unwrap();
        assert_eq!(value, "0123456789abcdef");
        assert!(value.is_sensitive());
    }
}
