//! Job events, from PostgreSQL to every replica's watchers.
//!
//! A trigger records each change of a job as a `job_events` row in the
//! change's own transaction, numbered from the transaction's id (see
//! `0008_event_numbers_at_insert.sql`). The [`Relay`] of one replica (it holds
//! a session advisory lock) publishes the events below the horizon (numbers
//! no event can appear under any more) in number order to the events
//! exchange, in batches. Every replica's [`Hub`] consumes the exchange through
//! its own exclusive queue and fans events out to its `WatchJobs` streams;
//! when it may have missed some (a reconnect, a missed message) it tells them
//! to catch up from PostgreSQL, which holds every event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use prost::Message as _;
use sextant_common::amqp::{Amqp, Fanout, Heard};
use sqlx::postgres::PgListener;
use sqlx::{ConnectOptions as _, PgPool};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::bus::{BATCH_CONTENT_TYPE, EVENTS_PER_MESSAGE, Envelope, EnvelopeBatch};
use crate::convert::to_envelope;
use crate::store::{self, EventRow};
use crate::topology::Names;

const RELAY_BATCH: i64 = 2000;
const RELAY_POLL: Duration = Duration::from_millis(100);
/// While newer events wait for an older transaction to end, the relay looks
/// again after 1 ms, doubling up to 20 ms while none of them can go.
const RELAY_WAIT_MIN: Duration = Duration::from_millis(1);
const RELAY_WAIT_MAX: Duration = Duration::from_millis(20);
/// How often the publisher records how far it got (at most).
const RECORD_EVERY: Duration = Duration::from_millis(250);
const HUB_CAPACITY: usize = 4096;

/// The events exchange: durable, since the relay publishes to it whether or
/// not a replica listens.
fn events_exchange(names: &Names) -> Fanout {
    Fanout {
        exchange: names.events_exchange.clone(),
        durable: true,
    }
}

/// Publishes recorded events, in order, to the events exchange. One replica's
/// relay publishes (it holds [`store::RELAY_LOCK`] until it stops); the others
/// wake it through [`store::RELAY_CHANNEL`] when they have changed jobs.
pub struct Relay {
    pub pool: PgPool,
    pub amqp: Amqp,
    pub names: Arc<Names>,
    pub signals: Arc<crate::Signals>,
}

/// The publishing relay's database session (the lock lives and dies with it).
struct Session {
    conn: sqlx::PgConnection,
    leader: bool,
    /// Highest number confirmed by the broker, recorded with the next batch.
    published: i64,
    /// Highest number recorded as published, and when.
    recorded: i64,
    recorded_at: Instant,
    /// How long to wait before looking again while newer events wait for an
    /// older transaction to end (see [`RELAY_WAIT_MIN`]).
    waiting: Option<Duration>,
}

impl Relay {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut listener = None;
        'connection: loop {
            let connection = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = self.amqp.connected() => c,
            };
            let channel = match self.open(&connection).await {
                Ok(channel) => channel,
                Err(error) => {
                    tracing::warn!(%error, "opening the events channel failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let mut session: Option<Session> = None;
            let mut woken = true;
            loop {
                if listener.is_none() {
                    listener = self.listen().await;
                }
                let result = match &mut session {
                    Some(session) => self.relay_once(session, &channel, woken).await,
                    None => match self.pool.connect_options().connect().await {
                        Ok(conn) => {
                            let fresh = session.insert(Session {
                                conn,
                                leader: false,
                                published: 0,
                                recorded: 0,
                                recorded_at: Instant::now(),
                                waiting: None,
                            });
                            self.relay_once(fresh, &channel, woken).await
                        }
                        Err(error) => Err(error.into()),
                    },
                };
                let waiting = session.as_ref().and_then(|s| s.waiting);
                match result {
                    // Published some: there may be more.
                    Ok(n) if n > 0 => continue,
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(error = %format!("{error:#}"), "relaying events failed; retrying");
                        // Dropping the session releases the lock if we held it.
                        session = None;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        if !channel.status().connected() {
                            continue 'connection;
                        }
                        continue;
                    }
                }
                // Newer events wait for an older transaction: look again soon
                // (or as soon as another change commits, whichever is first).
                woken = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.signals.events.notified() => true,
                    notified = recv(&mut listener) => {
                        if notified.is_err() {
                            listener = None;
                        }
                        false
                    }
                    _ = tokio::time::sleep(waiting.unwrap_or(RELAY_POLL)) => false,
                };
            }
        }
    }

    async fn open(&self, connection: &lapin::Connection) -> lapin::Result<lapin::Channel> {
        let channel = connection.create_channel().await?;
        events_exchange(&self.names).declare(&channel).await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(channel)
    }

    async fn listen(&self) -> Option<PgListener> {
        let mut listener = PgListener::connect_with(&self.pool).await.ok()?;
        listener.listen(store::RELAY_CHANNEL).await.ok()?;
        Some(listener)
    }

    /// Publishes one batch if this replica is the publisher; otherwise, when
    /// this replica has new events (`woken`), tells the publisher.
    async fn relay_once(&self, session: &mut Session, channel: &lapin::Channel, woken: bool) -> anyhow::Result<usize> {
        if !session.leader {
            session.leader = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(store::RELAY_LOCK)
                .fetch_one(&mut session.conn)
                .await?;
            if !session.leader {
                if woken {
                    sqlx::query("SELECT pg_notify($1, '')")
                        .bind(store::RELAY_CHANNEL)
                        .execute(&mut session.conn)
                        .await?;
                }
                return Ok(0);
            }
            tracing::info!("this replica now publishes job events");
            // From where the last publisher recorded it got (what it sent
            // after that goes again; hubs drop what they already have).
            session.published = store::published_through(&mut session.conn).await?;
            session.recorded = session.published;
        }
        // Recorded now and then, not per batch (a write transaction each): a
        // publisher taking over sends again what came after, and hubs drop it.
        if session.recorded < session.published && session.recorded_at.elapsed() >= RECORD_EVERY {
            store::record_published(&mut session.conn, session.published).await?;
            session.recorded = session.published;
            session.recorded_at = Instant::now();
        }
        let (events, waiting) = store::publishable_events(&mut session.conn, session.published, RELAY_BATCH).await?;
        let count = events.len();
        // Back off only while nothing moves: a batch published starts over at 1 ms.
        session.waiting = waiting.then(|| match session.waiting {
            Some(wait) if count == 0 => (wait * 2).min(RELAY_WAIT_MAX),
            _ => RELAY_WAIT_MIN,
        });
        if count > 0 {
            self.publish(session, channel, events).await?;
        }
        Ok(count)
    }

    async fn publish(
        &self,
        session: &mut Session,
        channel: &lapin::Channel,
        events: Vec<EventRow>,
    ) -> anyhow::Result<()> {
        let mut confirms = Vec::with_capacity(events.len() / EVENTS_PER_MESSAGE + 1);
        let mut after = session.published;
        for chunk in events.chunks(EVENTS_PER_MESSAGE) {
            let batch = EnvelopeBatch {
                envelopes: chunk.iter().cloned().map(to_envelope).collect(),
                after: u64::try_from(after).unwrap_or(0),
            };
            after = chunk.last().map_or(after, |e| e.seq);
            let confirm = channel
                .basic_publish(
                    self.names.events_exchange.as_str().into(),
                    "".into(),
                    BasicPublishOptions::default(),
                    &batch.encode_to_vec(),
                    BasicProperties::default().with_content_type(BATCH_CONTENT_TYPE.into()),
                )
                .await?;
            confirms.push(confirm);
        }
        for confirm in confirms {
            anyhow::ensure!(confirm.await?.is_ack(), "the broker refused an event");
        }
        session.published = session.published.max(after);
        Ok(())
    }
}

async fn recv(listener: &mut Option<PgListener>) -> Result<(), sqlx::Error> {
    match listener {
        Some(listener) => listener.recv().await.map(|_| ()),
        None => std::future::pending().await,
    }
}

/// What a replica's watchers receive.
#[derive(Debug, Clone)]
pub enum HubMessage {
    Event(Arc<Envelope>),
    /// Events may have been missed: catch up from PostgreSQL.
    Resync,
}

/// This replica's feed of every job event, for its `WatchJobs` streams.
#[derive(Clone)]
pub struct Hub {
    sender: broadcast::Sender<HubMessage>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(HUB_CAPACITY).0,
        }
    }
}

impl Hub {
    pub fn subscribe(&self) -> broadcast::Receiver<HubMessage> {
        self.sender.subscribe()
    }

    /// Consumes the events exchange until shutdown, across reconnects.
    pub async fn run(self, amqp: Amqp, names: Arc<Names>, shutdown: CancellationToken) {
        let mut last_seq = 0u64;
        events_exchange(&names)
            .consume(&amqp, "job events", shutdown, |heard| {
                let delivery = match heard {
                    // Whatever was published while we were away is only in PostgreSQL.
                    Heard::Subscribed => {
                        let _ = self.sender.send(HubMessage::Resync);
                        return;
                    }
                    Heard::Message(delivery) => delivery,
                };
                let batch = delivery.properties.content_type().as_ref().map(|t| t.as_str()) == Some(BATCH_CONTENT_TYPE);
                let Some(batch) = batch
                    .then(|| EnvelopeBatch::decode(delivery.data.as_slice()).ok())
                    .flatten()
                else {
                    tracing::error!("dropping an unreadable job event message");
                    return;
                };
                // The relay publishes in order; a republished event is old news.
                if last_seq != 0 && batch.after > last_seq {
                    tracing::warn!(last_seq, after = batch.after, "job events missed; watchers catch up");
                    let _ = self.sender.send(HubMessage::Resync);
                }
                for envelope in batch.envelopes {
                    if envelope.seq <= last_seq {
                        continue;
                    }
                    last_seq = envelope.seq;
                    let _ = self.sender.send(HubMessage::Event(Arc::new(envelope)));
                }
            })
            .await;
    }
}
