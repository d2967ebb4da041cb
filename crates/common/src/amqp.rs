//! A RabbitMQ connection that reconnects. A supervisor task connects with
//! jittered exponential backoff, watches the connection for errors, and
//! connects again when it breaks; users read the current connection (if any)
//! from a watch channel, so they can re-declare their topology on every
//! reconnect. [`Fanout`] is the exchange every replica of a service hears,
//! consumed across reconnects.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::{Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Problems, Validate};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpConfig {
    /// `amqp://user:pass@host:port/vhost`.
    pub url: SecretString,
    /// Prefix of every exchange and queue this deployment declares, so that
    /// several deployments (or test runs) can share one broker.
    pub prefix: String,
    #[serde(with = "humantime_serde")]
    pub reconnect_max_delay: Duration,
}

impl Validate for AmqpConfig {
    fn validate(&self, problems: &mut Problems) {
        self.validate_at("amqp", problems);
    }
}

impl AmqpConfig {
    pub fn validate_at(&self, key: &str, problems: &mut Problems) {
        let ok = url::Url::parse(self.url.expose_secret()).is_ok_and(|u| matches!(u.scheme(), "amqp" | "amqps"));
        problems.check(ok, &format!("{key}.url"), "must be an amqp:// or amqps:// URL");
        problems.check(
            !self.prefix.is_empty()
                && self
                    .prefix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            &format!("{key}.prefix"),
            "must be non-empty ASCII letters, digits, '-', '_' or '.'",
        );
    }
}

/// A handle on the supervised connection; cheap to clone.
#[derive(Clone)]
pub struct Amqp {
    current: watch::Receiver<Option<Arc<Connection>>>,
}

impl Amqp {
    /// Starts the supervisor; it stops and closes the connection on `shutdown`.
    pub fn start(config: AmqpConfig, connection_name: &str, shutdown: CancellationToken) -> Self {
        let (tx, rx) = watch::channel(None);
        let name = connection_name.to_owned();
        tokio::spawn(supervise(config, name, tx, shutdown));
        Self { current: rx }
    }

    pub fn is_connected(&self) -> bool {
        self.current.borrow().as_ref().is_some_and(|c| c.status().connected())
    }

    /// The live connection, if there is one now.
    pub fn connection(&self) -> Option<Arc<Connection>> {
        self.current.borrow().clone()
    }

    /// Waits for a live connection.
    pub async fn connected(&self) -> Arc<Connection> {
        let mut rx = self.current.clone();
        let conn = rx
            .wait_for(|c| c.as_ref().is_some_and(|c| c.status().connected()))
            .await
            .expect("the supervisor outlives every handle");
        conn.clone().expect("checked above")
    }

    /// Notified on every connect and disconnect.
    pub fn watch(&self) -> watch::Receiver<Option<Arc<Connection>>> {
        self.current.clone()
    }
}

async fn supervise(
    config: AmqpConfig,
    name: String,
    tx: watch::Sender<Option<Arc<Connection>>>,
    shutdown: CancellationToken,
) {
    let mut delay = Duration::from_millis(100);
    loop {
        let properties = ConnectionProperties::default().with_connection_name(name.clone().into());
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = Connection::connect(config.url.expose_secret(), properties) => r,
        };
        let conn = match attempt {
            Ok(conn) => Arc::new(conn),
            Err(error) => {
                let wait = jitter(delay);
                tracing::warn!(%error, retry_in = ?wait, "rabbitmq not reachable");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                delay = (delay * 2).min(config.reconnect_max_delay);
                continue;
            }
        };
        delay = Duration::from_millis(100);
        tracing::info!("connected to rabbitmq");
        let mut events = conn.events_listener();
        tx.send_replace(Some(conn.clone()));

        // Broken when an error event arrives or the status says so (the poll
        // catches failures that raise no event).
        let mut poll = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    tx.send_replace(None);
                    let _ = conn.close(200, "shutting down".into()).await;
                    return;
                }
                event = events.next() => match event {
                    Some(lapin::Event::Error(error)) => {
                        tracing::warn!(%error, "rabbitmq connection lost");
                        break;
                    }
                    Some(_) => {}
                    None => break,
                },
                _ = poll.tick() => if !conn.status().connected() {
                    tracing::warn!("rabbitmq connection closed");
                    break;
                },
            }
        }
        tx.send_replace(None);
    }
}

fn jitter(d: Duration) -> Duration {
    // Up to +50 %, so that replicas do not reconnect in lockstep.
    d.mul_f64(1.0 + rand::random_range(0.0..0.5))
}

/// A fanout exchange every replica of a service hears: each replica binds a
/// queue of its own (exclusive, gone with its connection) and gets every
/// message. What goes over one is a cue or a copy: the record stays in
/// PostgreSQL, and a consumer that was away catches up from there.
#[derive(Debug, Clone)]
pub struct Fanout {
    pub exchange: String,
    /// Kept across broker restarts (publishers rely on it existing), or gone
    /// with the last replica listening.
    pub durable: bool,
}

/// What a fanout consumer hears.
pub enum Heard<'a> {
    /// Subscribed (again): whatever went by while it was not is missed.
    Subscribed,
    /// One message, in publication order.
    Message(&'a lapin::message::Delivery),
}

impl Fanout {
    /// Declares the exchange (idempotent).
    pub async fn declare(&self, channel: &lapin::Channel) -> lapin::Result<()> {
        let options = lapin::options::ExchangeDeclareOptions {
            durable: self.durable,
            auto_delete: !self.durable,
            ..Default::default()
        };
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                lapin::ExchangeKind::Fanout,
                options,
                lapin::types::FieldTable::default(),
            )
            .await
    }

    /// Hears the exchange until `shutdown`, across reconnects: `on` gets
    /// [`Heard::Subscribed`] after every (re)subscription, then each message.
    /// `what` names the feed in logs.
    pub async fn consume(&self, amqp: &Amqp, what: &str, shutdown: CancellationToken, mut on: impl FnMut(Heard<'_>)) {
        loop {
            let connection = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = amqp.connected() => c,
            };
            let mut consumer = match self.subscribe(&connection).await {
                Ok(consumer) => consumer,
                Err(error) => {
                    tracing::warn!(%error, feed = what, "subscribing failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            on(Heard::Subscribed);
            loop {
                let delivery = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    d = consumer.next() => d,
                };
                let Some(Ok(delivery)) = delivery else {
                    tracing::warn!(feed = what, "feed interrupted; resubscribing");
                    break;
                };
                on(Heard::Message(&delivery));
            }
        }
    }

    async fn subscribe(&self, connection: &Connection) -> lapin::Result<lapin::Consumer> {
        use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
        use lapin::types::FieldTable;
        let channel = connection.create_channel().await?;
        self.declare(&channel).await?;
        let own = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        };
        let queue = channel.queue_declare("".into(), own, FieldTable::default()).await?;
        channel
            .queue_bind(
                queue.name().as_str().into(),
                self.exchange.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let no_ack = BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        channel
            .basic_consume(queue.name().as_str().into(), "".into(), no_ack, FieldTable::default())
            .await
    }
}
