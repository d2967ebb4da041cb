//! Shared topics: one upstream stream per (tenant, topic) per gateway
//! process, however many local subscribers follow it. Each frame is
//! serialised and framed once, kept in a short history, and the same bytes
//! are queued on every subscriber's socket (a full queue closes that session
//! with 4008, as any slow consumer).
//!
//! A subscriber joins where it asked to:
//! - with no version: the topic's last snapshot and the history after it,
//!   when the history still reaches back to that snapshot;
//! - with `after_version`: the history after that version, when the history
//!   reaches back to it and the topic has reached it;
//! - otherwise through a catch-up stream of its own from the backend, which
//!   hands over to the shared stream as soon as the history covers the last
//!   version it forwarded: no gap, and nothing twice. A version the shared
//!   stream has not reached goes this way too: only the backend knows
//!   whether it is one this gateway has yet to see or one the topic never
//!   had (which gets a fresh snapshot).
//!
//! The upstream opens with the first subscriber, resumes from its last
//! version whenever it breaks (a backend restart is invisible to clients),
//! and closes `linger` after the last subscriber left. Nothing here knows
//! what a topic means: [`Upstream`] opens streams and renders their frames.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde_json::Value;
use sextant_common::ErrorCode;
use sextant_common::internal_auth::Caller;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tonic::{Code, Status};

use super::protocol::ServerFrame;
use super::socket::Socket;
use super::topic::Topic;
use crate::metrics::{Metrics, StreamLabels, TopicLabels};

const RESUME_MIN_DELAY: Duration = Duration::from_millis(50);
const RESUME_MAX_DELAY: Duration = Duration::from_secs(5);

/// One frame of a topic, serialised and framed once and shared by every
/// subscriber.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The point a client resumes from (see the protocol's `version`).
    pub version: u64,
    /// A snapshot restates the topic: it goes to every subscriber.
    pub snapshot: bool,
    /// The WebSocket text frame, as it goes on the wire.
    pub wire: Bytes,
}

pub type FrameStream = BoxStream<'static, Result<Frame, Status>>;

/// Opens the backend stream behind a topic.
pub trait Upstream: Send + Sync + 'static {
    /// The frames of `topic` after `after` (0: a snapshot first). A `shared`
    /// stream must carry every event, since its history serves resumes.
    fn open(
        &self,
        caller: &Caller,
        topic: &Topic,
        name: &Arc<str>,
        after: u64,
        shared: bool,
    ) -> BoxFuture<'static, Result<FrameStream, Status>>;
}

/// Where a subscriber's frames go: its socket.
pub type Sink = Arc<Socket>;

/// A subscribe op, as the hub takes it.
pub struct Subscribe {
    pub caller: Caller,
    pub topic: Topic,
    pub name: Arc<str>,
    /// 0: start with a snapshot.
    pub after: u64,
    /// The op's `id`, echoed in `subscribed` or the refusal.
    pub op: Option<Value>,
    pub sink: Sink,
}

/// Every shared topic of this gateway.
pub struct Hub {
    topics: DashMap<(Arc<str>, Arc<str>), Arc<Shared>>,
    upstream: Arc<dyn Upstream>,
    /// Frames kept per topic for subscribers joining or resuming.
    history: usize,
    /// How long an upstream outlives its last subscriber.
    linger: Duration,
    metrics: Arc<Metrics>,
    next_id: AtomicU64,
}

struct Shared {
    key: (Arc<str>, Arc<str>),
    topic: Topic,
    state: Mutex<State>,
    /// Woken when the last subscriber leaves.
    idle: Notify,
}

#[derive(Default)]
struct State {
    /// Subscribers served by the shared stream.
    live: HashMap<u64, Live>,
    /// Subscribers waiting for the upstream to open.
    waiting: HashMap<u64, Waiting>,
    /// Subscribers on a catch-up stream of their own.
    catching_up: HashMap<u64, (Sink, AbortHandle)>,
    /// The last snapshot the upstream sent.
    snapshot: Option<Frame>,
    /// Event frames after `base`, oldest first.
    history: VecDeque<Frame>,
    /// The history holds every frame after this version (`None` until the
    /// upstream has said where it starts).
    base: Option<u64>,
    /// The version of the newest frame (or `base`).
    head: u64,
    /// The backend accepted the topic at least once.
    confirmed: bool,
}

struct Live {
    sink: Sink,
    /// The version of the last frame this subscriber was sent.
    last: u64,
}

struct Waiting {
    sink: Sink,
    after: u64,
    op: Option<Value>,
    caller: Caller,
}

impl State {
    fn is_idle(&self) -> bool {
        self.live.is_empty() && self.waiting.is_empty() && self.catching_up.is_empty()
    }

    /// Whether the history holds every frame after `version`.
    fn covers(&self, version: u64) -> bool {
        self.base.is_some_and(|base| base <= version)
    }

    /// Queues the history after `after`; `false` if the sink failed.
    fn replay(&self, sink: &Sink, after: u64) -> bool {
        self.history
            .iter()
            .filter(|f| f.version > after)
            .all(|f| sink.send(f.wire.clone()))
    }
}

/// A subscriber's place in a topic; dropping it leaves the topic.
pub struct Subscription {
    hub: Arc<Hub>,
    shared: Arc<Shared>,
    id: u64,
}

impl Subscription {
    /// This subscription's number, which [`Socket::ended`] names.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.detach(&self.shared, self.id);
        self.hub
            .metrics
            .ws_subscribers
            .get_or_create(&TopicLabels {
                kind: self.shared.topic.kind(),
            })
            .dec();
    }
}

impl Hub {
    pub fn new(upstream: Arc<dyn Upstream>, history: usize, linger: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            topics: DashMap::new(),
            upstream,
            history: history.max(1),
            linger,
            metrics,
            next_id: AtomicU64::new(1),
        }
    }

    /// Joins (or opens) the topic. `subscribed` and the frames follow on the
    /// socket; so does a refusal, as an error frame, after which the socket
    /// is told the subscription ended ([`Socket::ended`]).
    pub fn subscribe(self: &Arc<Self>, request: Subscribe) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let key = (Arc::<str>::from(request.caller.tenant.as_str()), request.name.clone());
        // The map's entry stays locked while the subscriber is admitted, so a
        // lingering upstream cannot close the topic under it.
        let entry = self.topics.entry(key.clone()).or_insert_with(|| {
            let shared = Arc::new(Shared {
                key,
                topic: request.topic.clone(),
                state: Mutex::default(),
                idle: Notify::new(),
            });
            actix_web::rt::spawn(self.clone().run(shared.clone(), request.caller.clone(), request.after));
            shared
        });
        let shared = entry.value().clone();
        let waiting = Waiting {
            sink: request.sink,
            after: request.after,
            op: request.op,
            caller: request.caller,
        };
        self.admit(&shared, &mut lock(&shared), id, waiting);
        drop(entry);
        self.metrics
            .ws_subscribers
            .get_or_create(&TopicLabels {
                kind: shared.topic.kind(),
            })
            .inc();
        Subscription {
            hub: self.clone(),
            shared,
            id,
        }
    }

    fn admit(self: &Arc<Self>, shared: &Arc<Shared>, state: &mut State, id: u64, waiting: Waiting) {
        if !state.confirmed || state.base.is_none() {
            state.waiting.insert(id, waiting);
            return;
        }
        let subscribed = ServerFrame::Subscribed {
            id: waiting.op,
            topic: &shared.key.1,
        };
        if waiting.sink.send(subscribed.to_wire()) {
            self.attach(shared, state, id, waiting.sink, waiting.after, waiting.caller);
        }
    }

    /// Serves a confirmed subscriber from the history, or starts its catch-up.
    fn attach(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        state: &mut State,
        id: u64,
        sink: Sink,
        after: u64,
        caller: Caller,
    ) {
        let from = match (&state.snapshot, after) {
            (Some(snapshot), 0) if state.covers(snapshot.version) => {
                if !sink.send(snapshot.wire.clone()) {
                    return;
                }
                Some(snapshot.version)
            }
            (_, after) if after > 0 && after <= state.head && state.covers(after) => Some(after),
            _ => None,
        };
        match from {
            Some(from) => {
                if state.replay(&sink, from) {
                    let last = from.max(state.head);
                    state.live.insert(id, Live { sink, last });
                }
            }
            None => {
                let task = actix_web::rt::spawn(self.clone().catch_up(shared.clone(), id, sink.clone(), caller, after));
                state.catching_up.insert(id, (sink, task.abort_handle()));
            }
        }
    }

    /// Admits the waiting subscribers once the upstream says where it starts.
    fn settle(self: &Arc<Self>, shared: &Arc<Shared>, state: &mut State) {
        if !state.confirmed || state.base.is_none() {
            return;
        }
        for (id, waiting) in std::mem::take(&mut state.waiting) {
            self.admit(shared, state, id, waiting);
        }
    }

    fn detach(&self, shared: &Shared, id: u64) {
        let mut state = lock(shared);
        state.live.remove(&id);
        state.waiting.remove(&id);
        if let Some((_, task)) = state.catching_up.remove(&id) {
            task.abort();
        }
        if state.is_idle() {
            shared.idle.notify_one();
        }
    }

    /// Keeps, and fans out, one frame of the shared stream.
    fn publish(self: &Arc<Self>, shared: &Arc<Shared>, frame: Frame) {
        let mut state = lock(shared);
        if frame.snapshot {
            state.history.clear();
            state.base = Some(frame.version);
            state.snapshot = Some(frame.clone());
        } else {
            if frame.version <= state.head {
                return;
            }
            state.history.push_back(frame.clone());
            while state.history.len() > self.history {
                let oldest = state.history.pop_front().expect("a non-empty history");
                state.base = Some(oldest.version);
            }
        }
        state.head = frame.version;

        let mut delivered = 0;
        state.live.retain(|_, live| {
            if !frame.snapshot && frame.version <= live.last {
                return true;
            }
            // A subscriber whose queue is full is closing (4008): drop it.
            let sent = live.sink.send(frame.wire.clone());
            live.last = frame.version;
            delivered += u64::from(sent);
            sent
        });
        if state.is_idle() {
            shared.idle.notify_one();
        }
        self.settle(shared, &mut state);
        drop(state);
        self.metrics
            .ws_frames_fanned_out
            .get_or_create(&TopicLabels {
                kind: shared.topic.kind(),
            })
            .inc_by(delivered);
    }

    /// The backend refused the topic (not found, invalid): every subscriber
    /// gets the error, and the topic is gone.
    fn refuse(&self, shared: &Shared, status: &Status) {
        self.topics.remove_if(&shared.key, |_, s| std::ptr::eq(&**s, shared));
        let mut state = lock(shared);
        let name = &shared.key.1;
        let refusal = |op: Option<Value>| ServerFrame::Error {
            id: op,
            code: ErrorCode::of_status(status).as_str(),
            message: status.message().to_owned(),
            topic: Some(name.to_string()),
        };
        let waiting = std::mem::take(&mut state.waiting)
            .into_iter()
            .map(|(id, w)| (id, w.sink, w.op));
        let live = std::mem::take(&mut state.live)
            .into_iter()
            .map(|(id, l)| (id, l.sink, None));
        let catching_up = std::mem::take(&mut state.catching_up)
            .into_iter()
            .map(|(id, (sink, task))| {
                task.abort();
                (id, sink, None)
            });
        for (id, sink, op) in waiting.chain(live).chain(catching_up) {
            end(&sink, refusal(op).to_wire(), name, id);
        }
    }

    /// The upstream's life: open, fan out, resume after a break, and close
    /// once no subscriber has been left for `linger`.
    async fn run(self: Arc<Self>, shared: Arc<Shared>, caller: Caller, first_after: u64) {
        let labels = StreamLabels {
            kind: shared.topic.kind(),
            role: "shared",
        };
        let closed = self.closed(&shared);
        tokio::pin!(closed);
        let mut delay = RESUME_MIN_DELAY;
        loop {
            let after = {
                let state = lock(&shared);
                if state.base.is_some() { state.head } else { first_after }
            };
            let opened = tokio::select! {
                opened = self.upstream.open(&caller, &shared.topic, &shared.key.1, after, true) => opened,
                _ = &mut closed => return,
            };
            let status = match opened {
                Ok(mut stream) => {
                    delay = RESUME_MIN_DELAY;
                    {
                        let mut state = lock(&shared);
                        state.confirmed = true;
                        if state.base.is_none() && after > 0 {
                            state.base = Some(after);
                            state.head = after;
                        }
                        self.settle(&shared, &mut state);
                    }
                    let _open = self.count_stream(&labels);
                    loop {
                        tokio::select! {
                            message = stream.next() => match message {
                                Some(Ok(frame)) => self.publish(&shared, frame),
                                Some(Err(status)) => break status,
                                None => break ErrorCode::Unavailable.status("the stream ended"),
                            },
                            _ = &mut closed => return,
                        }
                    }
                }
                Err(status) => status,
            };
            if !transient(&status) {
                self.refuse(&shared, &status);
                return;
            }
            tracing::debug!(topic = %shared.key.1, code = ?status.code(), after, ?delay, "resuming the shared stream");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = &mut closed => return,
            }
            delay = (delay * 2).min(RESUME_MAX_DELAY);
        }
    }

    /// Resolves once the topic has had no subscriber for `linger` and is
    /// removed from the map (under its entry lock, so no subscriber can be
    /// joining it at that moment).
    async fn closed(&self, shared: &Arc<Shared>) {
        loop {
            if !lock(shared).is_idle() {
                shared.idle.notified().await;
                continue;
            }
            tokio::time::sleep(self.linger).await;
            let removed = self
                .topics
                .remove_if(&shared.key, |_, s| Arc::ptr_eq(s, shared) && lock(s).is_idle());
            if removed.is_some() {
                return;
            }
        }
    }

    /// Counts an open backend stream until the guard drops.
    fn count_stream(&self, labels: &StreamLabels) -> impl Drop {
        let open = self.metrics.ws_upstreams.get_or_create(labels).clone();
        open.inc();
        scopeguard(move || {
            open.dec();
        })
    }

    /// A subscriber the history could not serve: its own stream from the
    /// backend, until the shared history covers what it has forwarded.
    async fn catch_up(self: Arc<Self>, shared: Arc<Shared>, id: u64, sink: Sink, caller: Caller, mut after: u64) {
        let labels = StreamLabels {
            kind: shared.topic.kind(),
            role: "catch_up",
        };
        let mut delay = RESUME_MIN_DELAY;
        loop {
            let status = match self
                .upstream
                .open(&caller, &shared.topic, &shared.key.1, after, false)
                .await
            {
                Ok(mut stream) => {
                    delay = RESUME_MIN_DELAY;
                    let _open = self.count_stream(&labels);
                    loop {
                        let frame = match stream.next().await {
                            Some(Ok(frame)) => frame,
                            Some(Err(status)) => break status,
                            None => break ErrorCode::Unavailable.status("the stream ended"),
                        };
                        if !frame.snapshot && frame.version <= after {
                            continue;
                        }
                        if !sink.send(frame.wire) {
                            self.detach(&shared, id);
                            return;
                        }
                        after = frame.version;
                        let mut state = lock(&shared);
                        if state.covers(after) && state.catching_up.remove(&id).is_some() {
                            if state.replay(&sink, after) {
                                let last = after.max(state.head);
                                state.live.insert(id, Live { sink, last });
                            }
                            return;
                        }
                    }
                }
                Err(status) => status,
            };
            if !transient(&status) {
                let refusal = ServerFrame::Error {
                    id: None,
                    code: ErrorCode::of_status(&status).as_str(),
                    message: status.message().to_owned(),
                    topic: Some(shared.key.1.to_string()),
                };
                end(&sink, refusal.to_wire(), &shared.key.1, id);
                self.detach(&shared, id);
                return;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RESUME_MAX_DELAY);
        }
    }
}

/// Sends a subscription's last frame, then tells its session it is over.
fn end(sink: &Sink, error: Bytes, topic: &Arc<str>, subscription: u64) {
    if sink.send(error) {
        sink.ended(topic.clone(), subscription);
    }
}

/// Errors after which a stream is resumed rather than given up: the backend
/// restarting or unreachable, never a refusal of the topic itself.
fn transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled | Code::DeadlineExceeded
    )
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    // No code panics while holding the lock; a poisoned one is still consistent.
    shared.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
