//! A WebSocket connection's write half, shared by its session and every
//! topic it follows, and the lanes that write to sockets.
//!
//! A frame for a socket is a cheap handle on bytes encoded once for every
//! subscriber ([`bytes::Bytes`]). Queuing it costs a lock and a push; the
//! socket is then handed to its *lane*, one per worker thread, which writes
//! each socket's whole queue with one vectored, non-blocking write. So a
//! topic's frame costs one write per subscriber, frames queued together go
//! out together, no task is woken per subscriber, and the writes are spread
//! over every worker (each socket's lane is the worker that accepted it).
//!
//! A socket whose kernel buffer is full is *blocked*: its session waits for
//! it to become writable and writes the rest itself. Frames not yet taken by
//! the kernel are bounded by the outbound buffer: one more, and the socket is
//! marked slow and its session closes it (4008).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// The most frames one write takes.
const WRITE_BATCH: usize = 64;

/// Sockets a lane writes before it lets the worker's other tasks run.
const LANE_TURN: usize = 128;

pub struct Socket {
    stream: TcpStream,
    state: Mutex<State>,
    lane: Arc<Lane>,
    /// Wakes the session: see [`News`].
    wake: Notify,
    /// Frames the queue may hold (the protocol's `outbound_buffer`).
    limit: usize,
}

#[derive(Default)]
struct State {
    /// Frames not yet (wholly) taken by the kernel, oldest first.
    queue: VecDeque<Bytes>,
    /// Bytes of the oldest frame already written.
    written: usize,
    /// In its lane's list.
    scheduled: bool,
    /// The kernel took no more; the session writes once it can.
    blocked: bool,
    /// The queue overflowed: closing with 4008.
    slow: bool,
    /// A write failed: the connection is gone.
    broken: bool,
    /// The session is closing: no frame is taken but the close frame.
    closing: bool,
    /// Subscriptions their topics ended, by (topic, subscription id).
    ended: Vec<(Arc<str>, u64)>,
}

/// What the session is woken to learn.
#[derive(Default)]
pub struct News {
    pub slow: bool,
    pub broken: bool,
    pub blocked: bool,
    pub ended: Vec<(Arc<str>, u64)>,
}

impl Socket {
    pub fn new(stream: TcpStream, lane: Arc<Lane>, limit: usize) -> Arc<Self> {
        Arc::new(Self {
            stream,
            state: Mutex::default(),
            lane,
            wake: Notify::new(),
            limit: limit.max(1),
        })
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Queues a frame for its lane to write; `false` when the socket takes
    /// no more (gone, closing, or too slow: its session then closes it).
    pub fn send(self: &Arc<Self>, frame: Bytes) -> bool {
        let mut state = self.lock();
        if !self.admit(&mut state) {
            return false;
        }
        state.queue.push_back(frame);
        if state.scheduled || state.blocked {
            return true;
        }
        state.scheduled = true;
        drop(state);
        self.lane.schedule(self.clone());
        true
    }

    /// Queues a frame of the session's own (a reply, a ping) and writes at
    /// once, behind whatever is queued.
    pub fn send_now(&self, frame: Bytes) -> bool {
        let mut state = self.lock();
        if !self.admit(&mut state) {
            return false;
        }
        state.queue.push_back(frame);
        if !state.blocked {
            self.write(&mut state);
        }
        true
    }

    /// Queues the last frame, whatever the queue holds, and takes no more.
    pub fn close(&self, frame: Bytes) {
        let mut state = self.lock();
        if state.closing || state.broken {
            return;
        }
        state.closing = true;
        state.queue.push_back(frame);
        if !state.blocked {
            self.write(&mut state);
        }
    }

    /// Whether one more frame fits; marks the socket slow when it does not,
    /// after a write has tried to make room.
    fn admit(&self, state: &mut State) -> bool {
        if state.closing || state.slow || state.broken {
            return false;
        }
        if state.queue.len() >= self.limit {
            // The kernel may have room again before the session has noticed.
            state.blocked = false;
            self.write(state);
        }
        if state.queue.len() < self.limit {
            return true;
        }
        state.slow = true;
        self.wake.notify_one();
        false
    }

    /// Writes what the lane scheduled this socket for.
    fn flush_scheduled(&self) {
        let mut state = self.lock();
        state.scheduled = false;
        if !state.blocked {
            self.write(&mut state);
        }
    }

    /// Writes after the socket became writable again; `true` while it is
    /// still blocked (or broken) with frames left.
    pub fn flush_blocked(&self) -> bool {
        let mut state = self.lock();
        state.blocked = false;
        self.write(&mut state);
        state.blocked
    }

    /// Whether every queued frame has been written (or never will be).
    pub fn drained(&self) -> bool {
        let state = self.lock();
        state.queue.is_empty() || state.broken
    }

    /// Records a subscription its topic ended, for the session to drop.
    pub fn ended(&self, topic: Arc<str>, subscription: u64) {
        self.lock().ended.push((topic, subscription));
        self.wake.notify_one();
    }

    /// Resolves when there is news for the session; take it with [`Self::news`].
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    pub fn news(&self) -> News {
        let mut state = self.lock();
        News {
            slow: state.slow,
            broken: state.broken,
            blocked: state.blocked,
            ended: std::mem::take(&mut state.ended),
        }
    }

    /// Writes the queue until it is empty or the kernel takes no more.
    fn write(&self, state: &mut State) {
        while !state.queue.is_empty() && !state.broken {
            let mut slices = [IoSlice::new(&[]); WRITE_BATCH];
            let mut count = 0;
            for (i, frame) in state.queue.iter().take(WRITE_BATCH).enumerate() {
                let skip = if i == 0 { state.written } else { 0 };
                slices[i] = IoSlice::new(&frame[skip..]);
                count += 1;
            }
            match self.stream.try_write_vectored(&slices[..count]) {
                Ok(0) => self.fail(state),
                Ok(mut n) => {
                    while n > 0 {
                        let front = &state.queue[0];
                        let left = front.len() - state.written;
                        if n < left {
                            state.written += n;
                            break;
                        }
                        n -= left;
                        state.written = 0;
                        state.queue.pop_front();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !state.blocked {
                        state.blocked = true;
                        self.wake.notify_one();
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.fail(state),
            }
        }
        if state.queue.is_empty() && state.queue.capacity() > WRITE_BATCH {
            // A burst is over: do not keep its room.
            state.queue = VecDeque::new();
        }
    }

    fn fail(&self, state: &mut State) {
        state.broken = true;
        state.queue.clear();
        state.written = 0;
        self.wake.notify_one();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one is still consistent.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The sockets of one worker thread that have frames to write.
pub struct Lane {
    due: Mutex<Vec<Arc<Socket>>>,
    wake: Notify,
}

impl Lane {
    /// A lane whose writer runs on the calling worker thread (an actix-rt
    /// worker: the writer is a task of its local set).
    pub fn start() -> Arc<Self> {
        let lane = Arc::new(Self {
            due: Mutex::new(Vec::new()),
            wake: Notify::new(),
        });
        actix_web::rt::spawn(lane.clone().run());
        lane
    }

    fn schedule(&self, socket: Arc<Socket>) {
        let first = {
            let mut due = self.lock();
            due.push(socket);
            due.len() == 1
        };
        if first {
            self.wake.notify_one();
        }
    }

    async fn run(self: Arc<Self>) {
        let mut batch = Vec::new();
        loop {
            self.wake.notified().await;
            loop {
                std::mem::swap(&mut batch, &mut *self.lock());
                if batch.is_empty() {
                    break;
                }
                for (i, socket) in batch.drain(..).enumerate() {
                    socket.flush_scheduled();
                    if i % LANE_TURN == LANE_TURN - 1 {
                        tokio::task::yield_now().await;
                    }
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Socket>>> {
        self.due.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncReadExt as _;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// The server's end of a loopback connection, as a socket, and the client's end.
    async fn pair(limit: usize) -> (Arc<Socket>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Socket::new(server, Lane::start(), limit), client)
    }

    async fn read_exactly(client: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut bytes = vec![0; n];
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut bytes))
            .await
            .expect("the bytes arrive")
            .unwrap();
        bytes
    }

    #[actix_rt::test]
    async fn frames_from_topics_and_the_session_arrive_whole_and_in_order() {
        let (socket, mut client) = pair(8).await;
        assert!(socket.send(Bytes::from_static(b"one,")));
        assert!(socket.send(Bytes::from_static(b"two,")));
        // The session's own frame goes behind what its topics queued.
        assert!(socket.send_now(Bytes::from_static(b"three,")));
        assert!(socket.send(Bytes::from_static(b"four")));
        assert_eq!(read_exactly(&mut client, 18).await, b"one,two,three,four");
        assert!(socket.drained());
    }

    #[actix_rt::test]
    async fn a_client_that_stops_reading_fills_the_queue_and_is_marked_slow() {
        let (socket, mut client) = pair(4).await;
        let frame = Bytes::from(vec![b'x'; 64 * 1024]);
        // Until the kernel takes no more...
        while !socket.news().blocked {
            assert!(socket.send(frame.clone()));
            tokio::task::yield_now().await;
        }
        // ...then the queue holds exactly `outbound_buffer` frames, and the
        // next one is refused and the session told.
        while socket.lock().queue.len() < 4 {
            assert!(socket.send(frame.clone()));
        }
        assert!(!socket.send(frame.clone()));
        tokio::time::timeout(Duration::from_secs(5), socket.woken())
            .await
            .unwrap();
        let news = socket.news();
        assert!(news.slow && !news.broken);
        assert!(!socket.send(Bytes::from_static(b"more")), "a slow socket takes no more");
        // What was taken before is still delivered whole, in order.
        let taken = read_exactly(&mut client, 64 * 1024).await;
        assert!(taken.iter().all(|b| *b == b'x'));
    }

    #[actix_rt::test]
    async fn a_blocked_socket_is_written_again_once_the_client_reads() {
        let (socket, mut client) = pair(1_000).await;
        let frame = Bytes::from(vec![b'y'; 64 * 1024]);
        let mut sent = 0;
        while !socket.news().blocked {
            assert!(socket.send(frame.clone()));
            sent += 1;
            tokio::task::yield_now().await;
        }
        assert!(!socket.drained());
        let reader = tokio::spawn(async move { read_exactly(&mut client, sent * 64 * 1024).await });
        // The session's loop: wait until writable, write, until drained.
        while !socket.drained() {
            socket.stream().writable().await.unwrap();
            socket.flush_blocked();
        }
        let read = reader.await.unwrap();
        assert_eq!(read.len(), sent * 64 * 1024);
    }

    #[actix_rt::test]
    async fn after_the_close_frame_nothing_more_is_taken() {
        let (socket, mut client) = pair(8).await;
        assert!(socket.send(Bytes::from_static(b"last frame,")));
        socket.close(Bytes::from_static(b"close"));
        assert!(!socket.send(Bytes::from_static(b"too late")));
        assert!(!socket.send_now(Bytes::from_static(b"too late")));
        assert_eq!(read_exactly(&mut client, 16).await, b"last frame,close");
    }

    #[actix_rt::test]
    async fn a_socket_whose_peer_is_gone_is_broken() {
        let (socket, client) = pair(8).await;
        drop(client);
        // Writing into a reset connection fails at the first or second try.
        for _ in 0..100 {
            socket.send_now(Bytes::from_static(b"anyone?"));
            if socket.news().broken {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the socket never noticed its peer left");
    }
}
