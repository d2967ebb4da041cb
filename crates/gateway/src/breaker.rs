//! A circuit breaker per backend, as a tower service around its gRPC
//! channel, so every unary call through [`crate::backends::Backends`] passes
//! it. `failures` calls in a row that fail as unreachable (transport error,
//! deadline, `UNAVAILABLE`) open it: calls then fail at once, without waiting
//! on a deadline, as `UNAVAILABLE` carrying the backend's name, until
//! `open_for` has passed. Then one probe goes through (half-open): its
//! success closes the breaker, its failure opens it again.
//!
//! The state machine is failsafe's; this module adds the single probe, the
//! state for readiness and metrics, and the translation to gRPC.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use failsafe::backoff::{self, Constant};
use failsafe::failure_policy::{self, ConsecutiveFailures};
use failsafe::{Config, Instrument, StateMachine};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use sextant_common::ErrorCode;
use sextant_common::error::RETRY_AFTER_METADATA;
use tonic::Status;
use tonic::metadata::MetadataValue;

use crate::metrics::{BackendLabels, Metrics};

/// Metadata on a refused call's status: the backend whose breaker is open.
pub const OPEN_BACKEND: &str = "x-sextant-breaker-open";
/// Metadata on the status of a call that found its backend unreachable
/// (transport error, deadline, `UNAVAILABLE`): the backend, so the answer
/// can name it.
pub const UNREACHABLE_BACKEND: &str = "x-sextant-unreachable";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a breaker shows in readiness and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::HalfOpen => "half_open",
            State::Open => "open",
        }
    }
}

/// Keeps the state where readiness and metrics can see it.
struct Observer {
    backend: &'static str,
    state: Arc<AtomicU8>,
    opened_at: Arc<Mutex<Instant>>,
    gauge: Gauge,
    rejected: Counter,
}

impl Observer {
    fn set(&self, state: State) {
        self.state.store(state as u8, Ordering::SeqCst);
        self.gauge.set(state as i64);
    }
}

impl Instrument for Observer {
    fn on_call_rejected(&self) {
        self.rejected.inc();
    }

    fn on_open(&self) {
        *self.opened_at.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        tracing::warn!(backend = self.backend, "circuit open: calls fail fast");
        self.set(State::Open);
    }

    fn on_half_open(&self) {
        tracing::info!(backend = self.backend, "circuit half-open: probing");
        self.set(State::HalfOpen);
    }

    fn on_closed(&self) {
        if self.state.load(Ordering::SeqCst) != State::Closed as u8 {
            tracing::info!(backend = self.backend, "circuit closed");
        }
        self.set(State::Closed);
    }
}

/// One backend's breaker; clones share it.
#[derive(Clone)]
pub struct Breaker {
    backend: &'static str,
    machine: StateMachine<ConsecutiveFailures<Constant>, Observer>,
    state: Arc<AtomicU8>,
    opened_at: Arc<Mutex<Instant>>,
    /// A half-open probe is in flight.
    probing: Arc<AtomicBool>,
    open_for: Duration,
    rejected: Counter,
}

impl Breaker {
    /// The backend's name, e.g. `jobs`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    pub fn new(backend: &'static str, failures: u32, open_for: Duration, metrics: &Metrics) -> Self {
        let labels = BackendLabels { backend };
        let state = Arc::new(AtomicU8::new(State::Closed as u8));
        let opened_at = Arc::new(Mutex::new(Instant::now()));
        let rejected = metrics.breaker_rejected.get_or_create(&labels).clone();
        let observer = Observer {
            backend,
            state: state.clone(),
            opened_at: opened_at.clone(),
            gauge: metrics.breaker_state.get_or_create(&labels).clone(),
            rejected: rejected.clone(),
        };
        let machine = Config::new()
            .failure_policy(failure_policy::consecutive_failures(
                failures,
                backoff::constant(open_for),
            ))
            .instrument(observer)
            .build();
        Self {
            backend,
            machine,
            state,
            opened_at,
            probing: Arc::new(AtomicBool::new(false)),
            open_for,
            rejected,
        }
    }

    pub fn state(&self) -> State {
        match self.state.load(Ordering::SeqCst) {
            1 => State::HalfOpen,
            2 => State::Open,
            _ => State::Closed,
        }
    }

    /// Lets a call through, or `None` when the breaker refuses it.
    fn admit(&self) -> Option<Permit> {
        if !self.machine.is_call_permitted() {
            return None;
        }
        if self.state() != State::HalfOpen {
            return Some(Permit::new(self.clone(), false));
        }
        // Half-open: one probe at a time; the rest fail fast meanwhile.
        if self.probing.swap(true, Ordering::SeqCst) {
            self.rejected.inc();
            return None;
        }
        Some(Permit::new(self.clone(), true))
    }

    /// The status of a refused call: `UNAVAILABLE`, naming the backend and
    /// when to come back.
    fn refusal(&self) -> Status {
        let since = self.opened_at.lock().unwrap_or_else(|p| p.into_inner()).elapsed();
        let retry_after = self.open_for.saturating_sub(since).as_secs_f64().ceil().max(1.0) as u64;
        let mut status = ErrorCode::Unavailable.status(format!(
            "the {} service is unavailable: its circuit breaker is open after repeated failures",
            self.backend
        ));
        status
            .metadata_mut()
            .insert(OPEN_BACKEND, MetadataValue::from_static(self.backend));
        status
            .metadata_mut()
            .insert(RETRY_AFTER_METADATA, MetadataValue::from(retry_after));
        status
    }
}

/// An admitted call; records its outcome once.
struct Permit {
    breaker: Breaker,
    probe: bool,
    recorded: bool,
}

impl Permit {
    fn new(breaker: Breaker, probe: bool) -> Self {
        Self {
            breaker,
            probe,
            recorded: false,
        }
    }

    fn record(mut self, failed: bool) {
        if failed {
            self.breaker.machine.on_error();
        } else {
            self.breaker.machine.on_success();
        }
        self.recorded = true;
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // A probe whose caller went away proved nothing; let the next one try.
        if self.probe {
            self.breaker.probing.store(false, Ordering::SeqCst);
        }
    }
}

/// Whether a call's outcome means the backend could not be reached.
fn unreachable<B>(result: &Result<http::Response<B>, BoxError>) -> bool {
    match result {
        Err(_) => true,
        // A trailers-only error response carries its status in the headers.
        Ok(response) => response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .is_some_and(|code| {
                matches!(
                    tonic::Code::from_i32(code),
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                )
            }),
    }
}

/// A channel behind a breaker.
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    breaker: Breaker,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, breaker: Breaker) -> Self {
        Self { inner, breaker }
    }
}

impl<S, Req, B> tower::Service<Req> for Guarded<S>
where
    S: tower::Service<Req, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<B>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let Some(permit) = self.breaker.admit() else {
            let refusal: BoxError = Box::new(self.breaker.refusal());
            return Box::pin(std::future::ready(Err(refusal)));
        };
        let call = self.inner.call(request);
        let backend = self.breaker.backend();
        Box::pin(async move {
            let result = call.await.map_err(Into::into);
            let failed = unreachable(&result);
            permit.record(failed);
            if !failed {
                return result;
            }
            let name = http::HeaderValue::from_static(backend);
            match result {
                Ok(mut response) => {
                    response.headers_mut().insert(UNREACHABLE_BACKEND, name);
                    Ok(response)
                }
                Err(error) => {
                    // The status tonic would make of it, naming the backend.
                    let mut status = Status::from_error(error);
                    status
                        .metadata_mut()
                        .insert(UNREACHABLE_BACKEND, MetadataValue::from_static(backend));
                    Err(Box::new(status) as BoxError)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(open_for: Duration) -> Breaker {
        Breaker::new("jobs", 3, open_for, &Metrics::default())
    }

    #[test]
    fn opens_after_the_configured_failures_and_refuses_naming_the_backend() {
        let breaker = breaker(Duration::from_secs(60));
        for _ in 0..2 {
            breaker.admit().unwrap().record(true);
            assert_eq!(breaker.state(), State::Closed);
        }
        breaker.admit().unwrap().record(true);
        assert_eq!(breaker.state(), State::Open);
        assert!(breaker.admit().is_none());
        let refusal = breaker.refusal();
        assert_eq!(refusal.code(), tonic::Code::Unavailable);
        assert_eq!(refusal.metadata().get(OPEN_BACKEND).unwrap(), "jobs");
        assert_eq!(refusal.metadata().get(RETRY_AFTER_METADATA).unwrap(), "60");
    }

    #[test]
    fn a_success_in_between_resets_the_count() {
        let breaker = breaker(Duration::from_secs(60));
        for _ in 0..5 {
            breaker.admit().unwrap().record(true);
            breaker.admit().unwrap().record(true);
            breaker.admit().unwrap().record(false);
        }
        assert_eq!(breaker.state(), State::Closed);
    }

    #[test]
    fn half_open_lets_one_probe_through_and_its_success_closes() {
        let breaker = breaker(Duration::from_millis(20));
        for _ in 0..3 {
            breaker.admit().unwrap().record(true);
        }
        std::thread::sleep(Duration::from_millis(40));
        let probe = breaker.admit().expect("a probe after open_for");
        assert_eq!(breaker.state(), State::HalfOpen);
        assert!(breaker.admit().is_none(), "one probe at a time");
        probe.record(false);
        assert_eq!(breaker.state(), State::Closed);
        assert!(breaker.admit().is_some());
    }

    #[test]
    fn a_failed_probe_opens_again() {
        let breaker = breaker(Duration::from_millis(20));
        for _ in 0..3 {
            breaker.admit().unwrap().record(true);
        }
        std::thread::sleep(Duration::from_millis(40));
        breaker.admit().unwrap().record(true);
        assert_eq!(breaker.state(), State::Open);
        assert!(breaker.admit().is_none());
    }
}
