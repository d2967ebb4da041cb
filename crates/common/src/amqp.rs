//! A RabbitMQ connection that reconnects. A supervisor task connects to one
//! of the configured brokers (a single node, or the nodes of a cluster, tried
//! in turn from a random first one so that replicas spread over the nodes),
//! with jittered exponential backoff once every node has refused; it watches
//! the connection for errors and heartbeats, and connects again, to the next
//! node, when it breaks. Users read the current connection (if any) from a
//! watch channel, so they can re-declare their topology on every reconnect. [`Fanout`] is the exchange every replica of a service hears,
//! consumed across reconnects.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Problems, Validate};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpConfig {
    /// `amqp://user:pass@host:port/vhost`, or a list of them: the nodes of a
    /// cluster, any of which will do.
    pub url: BrokerUrls,
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
        let ok = !self.url.0.is_empty()
            && self.url.0.iter().all(|url| {
                url::Url::parse(url.expose_secret()).is_ok_and(|u| matches!(u.scheme(), "amqp" | "amqps"))
                    && AMQPUri::from_str(url.expose_secret()).is_ok()
            });
        problems.check(
            ok,
            &format!("{key}.url"),
            "must be an amqp:// or amqps:// URL, or a non-empty list of them",
        );
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

/// One broker URL or several (the nodes of a cluster): a TOML string or array;
/// from the environment, `amqp://a` or `["amqp://a", "amqp://b"]`.
#[derive(Clone)]
pub struct BrokerUrls(Vec<SecretString>);

impl BrokerUrls {
    pub fn one(url: &str) -> Self {
        Self(vec![SecretString::from(url.to_owned())])
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The URL to connect to at `index` (modulo the list), with Sextant's
    /// defaults where it sets none: a 10 s heartbeat, so that a node cut off
    /// from the network is noticed within 20 s, and a 5 s TCP connect timeout,
    /// so that an unreachable node does not hold up trying the next.
    fn uri(&self, index: usize) -> AMQPUri {
        let mut uri = AMQPUri::from_str(self.0[index % self.0.len()].expose_secret()).expect("validated at load");
        uri.query.heartbeat.get_or_insert(DEFAULT_HEARTBEAT_SECS);
        uri.query
            .connection_timeout
            .get_or_insert(CONNECT_TIMEOUT.as_millis() as u64);
        uri
    }
}

const DEFAULT_HEARTBEAT_SECS: u16 = 10;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The whole handshake, for a node that accepts TCP but does not answer.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl std::fmt::Debug for BrokerUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BrokerUrls([{} redacted])", self.0.len())
    }
}

impl<'de> Deserialize<'de> for BrokerUrls {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(SecretString),
            Many(Vec<SecretString>),
        }
        Ok(match OneOrMany::deserialize(deserializer)? {
            OneOrMany::One(url) => Self(vec![url]),
            OneOrMany::Many(urls) => Self(urls),
        })
    }
}

/// `host:port` of a broker URI, for logs (never the credentials).
fn node_of(uri: &AMQPUri) -> String {
    format!("{}:{}", uri.authority.host, uri.authority.port)
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
    // Replicas start at different nodes, and each moves on to the next node
    // when its own goes.
    let mut next = rand::random_range(0..config.url.len());
    loop {
        let mut connected = None;
        for _ in 0..config.url.len() {
            let uri = config.url.uri(next);
            next = (next + 1) % config.url.len();
            let node = node_of(&uri);
            let properties = ConnectionProperties::default().with_connection_name(name.clone().into());
            let attempt = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = tokio::time::timeout(HANDSHAKE_TIMEOUT, Connection::connect_uri(uri, properties)) => r,
            };
            match attempt {
                Ok(Ok(conn)) => {
                    connected = Some((Arc::new(conn), node));
                    break;
                }
                Ok(Err(error)) => tracing::warn!(%error, %node, "rabbitmq not reachable"),
                Err(_) => tracing::warn!(%node, "rabbitmq did not answer in {HANDSHAKE_TIMEOUT:?}"),
            }
        }
        let Some((conn, node)) = connected else {
            let wait = jitter(delay);
            tracing::warn!(retry_in = ?wait, nodes = config.url.len(), "no rabbitmq node reachable");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            delay = (delay * 2).min(config.reconnect_max_delay);
            continue;
        };
        delay = Duration::from_millis(100);
        tracing::info!(%node, "connected to rabbitmq");
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
                        tracing::warn!(%error, %node, "rabbitmq connection lost");
                        break;
                    }
                    Some(_) => {}
                    None => break,
                },
                _ = poll.tick() => if !conn.status().connected() {
                    tracing::warn!(%node, "rabbitmq connection closed");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigError, ConfigSource, load};

    #[derive(Debug, Deserialize)]
    struct Config {
        amqp: AmqpConfig,
    }

    impl Validate for Config {
        fn validate(&self, problems: &mut Problems) {
            self.amqp.validate(problems);
        }
    }

    const DEFAULTS: &str = r#"
[amqp]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
prefix = "sextant"
reconnect_max_delay = "5s"
"#;

    fn load_with(url: &str) -> Result<Config, ConfigError> {
        load(DEFAULTS, &ConfigSource::from_env([("SEXTANT_AMQP__URL", url)]))
    }

    #[test]
    fn one_url_or_a_list_of_a_clusters_nodes() {
        let one = load_with("amqp://guest:guest@10.0.0.2:5672/%2f").unwrap();
        assert_eq!(one.amqp.url.len(), 1);
        assert_eq!(node_of(&one.amqp.url.uri(0)), "10.0.0.2:5672");

        let three = load_with(r#"["amqp://a:5672/%2f", "amqp://b:5673/%2f", "amqps://c/%2f"]"#).unwrap();
        let nodes: Vec<String> = (0..4).map(|i| node_of(&three.amqp.url.uri(i))).collect();
        assert_eq!(
            nodes,
            ["a:5672", "b:5673", "c:5671", "a:5672"],
            "tried in turn, round and round"
        );
    }

    #[test]
    fn a_bad_url_in_the_list_or_an_empty_list_is_refused_naming_the_key() {
        for bad in [r#"["amqp://a/%2f", "http://b/"]"#, "[]", "not a url"] {
            let error = load_with(bad).unwrap_err();
            assert_eq!(error.problems.len(), 1, "{bad}: {error}");
            let problem = &error.problems[0];
            assert_eq!(problem.key, "amqp.url", "{bad}");
            assert!(problem.message.contains("amqp:// or amqps://"), "{bad}: {problem}");
            assert_eq!(problem.origin.as_deref(), Some("SEXTANT_AMQP__URL"));
        }
    }

    #[test]
    fn a_heartbeat_and_connect_timeout_are_set_unless_the_url_sets_them() {
        let defaults = load_with("amqp://a/%2f").unwrap().amqp.url.uri(0);
        assert_eq!(defaults.query.heartbeat, Some(10));
        assert_eq!(defaults.query.connection_timeout, Some(5000));
        let own = load_with("amqp://a/%2f?heartbeat=30&connection_timeout=1000")
            .unwrap()
            .amqp
            .url
            .uri(0);
        assert_eq!(own.query.heartbeat, Some(30));
        assert_eq!(own.query.connection_timeout, Some(1000));
    }

    #[test]
    fn urls_never_show_their_credentials_in_debug_output() {
        let config = load_with(r#"["amqp://user:hunter2@a/%2f"]"#).unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
