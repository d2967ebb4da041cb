//! The hardware's floor: the least a WebSocket broadcast can cost here. A
//! process of its own (this binary with `--floor-server`) that accepts
//! WebSocket clients (a real handshake, by tungstenite), then, for each line
//! on its stdin (`{"topic": k, "frames": [...]}`), writes each frame,
//! encoded once, to every socket of topic `k` with a plain blocking `write`
//! from two threads (one per core), half the sockets each. No subscriptions,
//! no queues, no protocol beyond the handshake: what loopback TCP on this
//! machine allows. It prints its port on its first line.

use std::collections::HashMap;
use std::io::{BufRead as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, mpsc};

use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::handshake::server::{Callback, ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

const THREADS: usize = 2;

/// One writer's sockets, by topic.
type Shard = Arc<Mutex<HashMap<usize, Vec<tungstenite::WebSocket<TcpStream>>>>>;

/// A topic, and the frames (on the wire) to write to its sockets.
type Broadcast = (usize, Arc<Vec<Vec<u8>>>);

/// Notes the topic a client asks for in its URL (`/ws?topic=7`).
struct TopicOf<'a>(&'a mut usize);

impl Callback for TopicOf<'_> {
    fn on_request(self, request: &Request, response: Response) -> Result<Response, ErrorResponse> {
        *self.0 = request
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("topic="))
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        Ok(response)
    }
}

pub fn serve() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("{}", listener.local_addr()?.port());
    std::io::stdout().flush()?;
    let shards: Vec<Shard> = (0..THREADS).map(|_| Shard::default()).collect();
    let accepted = shards.clone();
    std::thread::spawn(move || {
        for (i, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { continue };
            let _ = stream.set_nodelay(true);
            let mut topic = 0;
            let callback = TopicOf(&mut topic);
            if let Ok(socket) = tungstenite::accept_hdr(stream, callback) {
                let mut shard = accepted[i % THREADS].lock().unwrap();
                shard.entry(topic).or_default().push(socket);
            }
        }
    });
    let writers: Vec<mpsc::Sender<Broadcast>> = shards
        .into_iter()
        .map(|shard| {
            let (tx, rx) = mpsc::channel::<Broadcast>();
            std::thread::spawn(move || {
                for (topic, frames) in rx {
                    let mut shard = shard.lock().unwrap();
                    let Some(sockets) = shard.get_mut(&topic) else { continue };
                    for frame in frames.iter() {
                        for socket in sockets.iter_mut() {
                            let _ = socket.get_mut().write_all(frame);
                        }
                    }
                }
            });
            tx
        })
        .collect();
    for line in std::io::stdin().lock().lines() {
        let event: serde_json::Value = serde_json::from_str(&line?)?;
        let topic = event["topic"].as_u64().unwrap_or(0) as usize;
        let frames: Vec<Vec<u8>> = event["frames"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|frame| {
                let mut wire = Vec::new();
                Frame::message(frame.to_string().into_bytes(), OpCode::Data(Data::Text), true)
                    .format(&mut wire)
                    .expect("a frame encodes");
                wire
            })
            .collect();
        let frames = Arc::new(frames);
        for writer in &writers {
            writer.send((topic, frames.clone()))?;
        }
    }
    Ok(())
}
