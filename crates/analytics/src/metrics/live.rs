//! Live metric updates.
//!
//! Every committed ingest batch raises the version of each metric it touched
//! and records where its events fell (`metric_changes`: per touched minute,
//! the first and last second). The replica that
//! ingested it then sends a hint `(tenant, metric, version)` to its own
//! watchers at once and to every replica through a fanout exchange
//! (`<prefix>.analytics.changes`). A hint is only a cue: a watcher reads the
//! change log after the version it has sent, recomputes the buckets those
//! changes' events fall in inside its window, and sends the ones whose values
//! differ, as one update carrying the newest version. So hints may be lost,
//! duplicated or reordered without effect: watchers also re-check every
//! `analytics.live.poll`, and all of them on a broker reconnect.
//!
//! Updates for one watch are coalesced: at most one per
//! `analytics.live.coalesce`; a change after a quiet spell goes out at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use prost::Message as _;
use sextant_common::ErrorCode;
use sextant_common::amqp::{Amqp, Fanout, Heard};
use sextant_common::db;
use sextant_proto::analytics::v1 as pb;
use sqlx::PgPool;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::convert;
use crate::metrics::store::ingest::Change;
use crate::metrics::store::read::{self, Cells, Limits, QueryError};
use crate::model::{MINUTE, Micros, Query, floor_to, now_micros};

use super::STORE;

const HINT_CAPACITY: usize = 4096;
const PUBLISH_QUEUE: usize = 4096;

/// What goes over the changes exchange.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Hint {
    #[prost(string, tag = "1")]
    pub tenant: String,
    #[prost(string, tag = "2")]
    pub metric: String,
    #[prost(uint64, tag = "3")]
    pub version: u64,
    /// A cue for the tenant's alert watches (`version` is its alert
    /// version), not for a metric's.
    #[prost(bool, tag = "4")]
    pub alerts: bool,
}

#[derive(Debug, Clone)]
pub enum Cue {
    Hint(Arc<Hint>),
    /// Hints may have been missed: every watcher re-checks.
    Resync,
}

/// Settings a watch needs.
#[derive(Debug, Clone, Copy)]
pub struct WatchSettings {
    pub coalesce: Duration,
    pub poll: Duration,
    pub max_window: Micros,
    pub max_future: Micros,
    pub limits: Limits,
}

/// This replica's live side: hints in and out, and its watches.
#[derive(Clone)]
pub struct Live {
    cues: broadcast::Sender<Cue>,
    outbox: mpsc::Sender<Hint>,
    pool: PgPool,
    settings: WatchSettings,
    pub(crate) metrics: crate::telemetry::Metrics,
}

/// Runs the hint publisher and consumer (see [`Live::new`]).
pub struct LiveTasks {
    outbox: mpsc::Receiver<Hint>,
    cues: broadcast::Sender<Cue>,
    exchange: Arc<str>,
}

impl Live {
    pub fn new(
        pool: PgPool,
        prefix: &str,
        settings: WatchSettings,
        metrics: crate::telemetry::Metrics,
    ) -> (Self, LiveTasks) {
        let (cues, _) = broadcast::channel(HINT_CAPACITY);
        let (outbox, outbox_rx) = mpsc::channel(PUBLISH_QUEUE);
        let exchange: Arc<str> = format!("{prefix}.analytics.changes").into();
        (
            Self {
                cues: cues.clone(),
                outbox,
                pool,
                settings,
                metrics,
            },
            LiveTasks {
                outbox: outbox_rx,
                cues,
                exchange,
            },
        )
    }

    /// Announces committed changes: to this replica's watches now, to the
    /// others through the broker (best effort: they also poll).
    pub fn announce(&self, tenant: &str, changes: &[Change]) {
        for change in changes {
            self.send(Hint {
                tenant: tenant.to_owned(),
                metric: change.metric.clone(),
                version: change.version,
                alerts: false,
            });
        }
    }

    /// Announces committed alert transitions up to `version` of the tenant.
    pub fn announce_alerts(&self, tenant: &str, version: u64) {
        self.send(Hint {
            tenant: tenant.to_owned(),
            metric: String::new(),
            version,
            alerts: true,
        });
    }

    fn send(&self, hint: Hint) {
        let _ = self.cues.send(Cue::Hint(Arc::new(hint.clone())));
        if self.outbox.try_send(hint).is_err() {
            tracing::debug!("hint outbox full; other replicas will poll");
        }
    }

    /// Cues from this replica and every other one.
    pub fn cues(&self) -> broadcast::Receiver<Cue> {
        self.cues.subscribe()
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn poll(&self) -> Duration {
        self.settings.poll
    }

    /// Starts a watch; its messages arrive on the returned receiver.
    pub fn watch(
        &self,
        tenant: String,
        query: Query,
        window: Micros,
        after: u64,
        shutdown: CancellationToken,
    ) -> Result<mpsc::Receiver<Result<pb::WatchMetricResponse, Status>>, Status> {
        if window < MINUTE.min(query.bucket) || window > self.settings.max_window {
            return Err(convert::invalid(format!(
                "window must be between the bucket and {} s",
                self.settings.max_window / crate::model::SECOND
            )));
        }
        // A window of more buckets than a query may hold is refused now,
        // before the subscriber is told it is live, not by its first read.
        let probe = windowed(&query, window, self.settings.max_future, now_micros());
        read::check_buckets(&probe, &self.settings.limits).map_err(query_status)?;
        let (tx, rx) = mpsc::channel(16);
        let watch = Watch {
            live: self.clone(),
            tenant,
            query,
            window,
            version: 0,
            sent: HashMap::new(),
            tx,
        };
        let cues = self.cues.subscribe();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            metrics.watches.inc();
            watch.run(cues, after, shutdown).await;
            metrics.watches.dec();
        });
        Ok(rx)
    }
}

impl LiveTasks {
    /// Publishes hints and consumes every replica's, until `shutdown`.
    pub async fn run(self, amqp: Amqp, shutdown: CancellationToken) {
        let LiveTasks {
            mut outbox,
            cues,
            exchange,
        } = self;
        let publisher = {
            let (amqp, exchange, shutdown) = (amqp.clone(), exchange.clone(), shutdown.clone());
            tokio::spawn(async move { publish(&mut outbox, amqp, &exchange, shutdown).await })
        };
        consume(cues, amqp, &exchange, shutdown).await;
        let _ = publisher.await;
    }
}

/// The hint exchange. Hints are only cues (the change log is the record):
/// the exchange lives while some replica listens, and goes with the last.
fn hints(exchange: &str) -> Fanout {
    Fanout {
        exchange: exchange.to_owned(),
        durable: false,
    }
}

async fn publish(outbox: &mut mpsc::Receiver<Hint>, amqp: Amqp, exchange: &str, shutdown: CancellationToken) {
    let mut channel: Option<lapin::Channel> = None;
    loop {
        let hint = tokio::select! {
            _ = shutdown.cancelled() => return,
            hint = outbox.recv() => match hint { Some(h) => h, None => return },
        };
        if channel.as_ref().is_none_or(|c| !c.status().connected()) {
            channel = None;
            if let Some(connection) = amqp.connection()
                && let Ok(fresh) = connection.create_channel().await
                && hints(exchange).declare(&fresh).await.is_ok()
            {
                channel = Some(fresh);
            }
        }
        // Without a broker the hint is dropped: other replicas' watches poll.
        if let Some(c) = &channel
            && let Err(error) = c
                .basic_publish(
                    exchange.into(),
                    "".into(),
                    BasicPublishOptions::default(),
                    &hint.encode_to_vec(),
                    BasicProperties::default(),
                )
                .await
        {
            tracing::debug!(%error, "publishing a change hint failed");
            channel = None;
        }
    }
}

async fn consume(cues: broadcast::Sender<Cue>, amqp: Amqp, exchange: &str, shutdown: CancellationToken) {
    hints(exchange)
        .consume(&amqp, "metric change hints", shutdown, |heard| match heard {
            // Whatever went by while we were away is only in PostgreSQL.
            Heard::Subscribed => {
                let _ = cues.send(Cue::Resync);
            }
            Heard::Message(delivery) => {
                if let Ok(hint) = Hint::decode(delivery.data.as_slice()) {
                    let _ = cues.send(Cue::Hint(Arc::new(hint)));
                }
            }
        })
        .await;
}

/// One `WatchMetric` stream.
struct Watch {
    live: Live,
    tenant: String,
    query: Query,
    window: Micros,
    /// The version of the last message sent.
    version: u64,
    /// Values last sent, per (group, bucket start), inside the window.
    sent: HashMap<(String, Micros), Vec<f64>>,
    tx: mpsc::Sender<Result<pb::WatchMetricResponse, Status>>,
}

enum Step {
    Continue,
    Stop,
}

impl Watch {
    async fn run(mut self, mut cues: broadcast::Receiver<Cue>, after: u64, shutdown: CancellationToken) {
        let first = if after == 0 {
            self.snapshot().await
        } else {
            self.catch_up(after).await
        };
        if matches!(self.deliver(first).await, Step::Stop) {
            return;
        }
        let settings = self.live.settings;
        let mut poll = tokio::time::interval(settings.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.reset();
        let mut last_sent = tokio::time::Instant::now();
        loop {
            let due = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.tx.closed() => return,
                _ = poll.tick() => true,
                cue = cues.recv() => match cue {
                    Ok(Cue::Hint(hint)) => {
                        !hint.alerts
                            && hint.version > self.version
                            && hint.tenant == self.tenant
                            && hint.metric == self.query.metric
                    }
                    Ok(Cue::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => true,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            if !due {
                continue;
            }
            // Coalesce: at most one update per interval. A cue after a quiet
            // spell goes out at once; cues close behind an update wait for the
            // interval's end and go out together.
            let wait = settings.coalesce.saturating_sub(last_sent.elapsed());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            while cues.try_recv().is_ok() {}
            poll.reset();
            last_sent = tokio::time::Instant::now();
            let step = self.catch_up(self.version).await;
            if matches!(self.deliver(step).await, Step::Stop) {
                return;
            }
        }
    }

    async fn deliver(&mut self, message: Result<Option<pb::WatchMetricResponse>, Status>) -> Step {
        match message {
            Ok(None) => Step::Continue,
            Ok(Some(message)) => {
                self.version = message.version;
                self.live.metrics.updates.inc();
                if self.tx.send(Ok(message)).await.is_err() {
                    Step::Stop
                } else {
                    Step::Continue
                }
            }
            Err(status) => {
                let _ = self.tx.send(Err(status)).await;
                Step::Stop
            }
        }
    }

    /// The window's query as of now.
    fn windowed(&self) -> Query {
        windowed(&self.query, self.window, self.live.settings.max_future, now_micros())
    }

    async fn snapshot(&mut self) -> Result<Option<pb::WatchMetricResponse>, Status> {
        let pool = &self.live.pool;
        let version = read::metric_version(pool, &self.tenant, &self.query.metric)
            .await
            .map_err(db::unavailable(STORE))?;
        let query = self.windowed();
        let limits = self.live.settings.limits;
        let series = read::query(pool, &self.tenant, &query, &limits)
            .await
            .map_err(query_status)?;
        self.sent.clear();
        for s in &series {
            for b in &s.buckets {
                self.sent.insert((s.group.clone(), b.start), b.values.clone());
            }
        }
        Ok(Some(pb::WatchMetricResponse {
            message: Some(pb::watch_metric_response::Message::Snapshot(convert::query_response(
                &query, &series,
            ))),
            version,
        }))
    }

    /// What changed after `after`, as one update (`None`: nothing to show);
    /// a snapshot when the change log no longer reaches back that far.
    async fn catch_up(&mut self, after: u64) -> Result<Option<pb::WatchMetricResponse>, Status> {
        let pool = self.live.pool.clone();
        let Some(changes) = read::changes_after(&pool, &self.tenant, &self.query.metric, after)
            .await
            .map_err(db::unavailable(STORE))?
        else {
            return self.snapshot().await;
        };
        let newest = changes.newest;
        if newest <= after {
            return Ok(None);
        }
        let query = self.windowed();
        // The buckets inside the window that the changes' events fall in.
        let starts = changes.bucket_starts(query.bucket, query.start, query.end);
        self.sent.retain(|(_, start), _| *start >= query.start);
        let limits = self.live.settings.limits;
        let selection = read::select(&pool, &self.tenant, &query, &limits)
            .await
            .map_err(query_status)?;
        let mut cells = Cells::new();
        let scope = read::Scope {
            pool: &pool,
            tenant: &self.tenant,
            query: &query,
            selection: &selection,
            limits: &limits,
        };
        let mut starts = starts.into_iter().peekable();
        while let Some(from) = starts.next() {
            // Merge adjacent buckets into one read.
            let mut to = from + query.bucket;
            while starts.peek() == Some(&to) {
                starts.next();
                to += query.bucket;
            }
            read::accumulate(scope, from, to, &mut cells)
                .await
                .map_err(query_status)?;
        }
        let mut changed: HashMap<usize, Vec<pb::Bucket>> = HashMap::new();
        for ((group, start), agg) in &cells {
            let bucket = read::bucket_result(&query, *start, agg);
            let key = (selection.groups[*group].clone(), *start);
            if self.sent.get(&key).is_some_and(|v| same(v, &bucket.values)) {
                continue;
            }
            self.sent.insert(key, bucket.values.clone());
            changed.entry(*group).or_default().push(convert::bucket(&bucket));
        }
        if changed.is_empty() {
            // Nothing this query shows changed; the next message still starts after `newest`.
            self.version = newest;
            return Ok(None);
        }
        let mut series: Vec<(usize, Vec<pb::Bucket>)> = changed.into_iter().collect();
        series.sort_by_key(|(group, _)| *group);
        let series = series
            .into_iter()
            .map(|(group, mut buckets)| {
                buckets.sort_by_key(|b| b.start.map(|t| (t.seconds, t.nanos)));
                pb::SeriesUpdate {
                    group: selection.groups[group].clone(),
                    buckets,
                }
            })
            .collect();
        Ok(Some(pb::WatchMetricResponse {
            message: Some(pb::watch_metric_response::Message::Updates(pb::MetricUpdate { series })),
            version: newest,
        }))
    }
}

/// Equal, counting NaN (an empty percentile) as equal to itself.
fn same(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits() || x == y)
}

/// A live query's range at `now`: from `now − window` (rounded down to the
/// bucket) through the bucket holding `now + max_future` (events may be
/// stamped that far ahead).
fn windowed(query: &Query, window: Micros, max_future: Micros, now: Micros) -> Query {
    let mut query = query.clone();
    query.start = floor_to(now - window, query.bucket);
    query.end = floor_to(now + max_future, query.bucket) + query.bucket;
    query
}

pub fn query_status(error: QueryError) -> Status {
    match error {
        QueryError::Limit(message) => convert::invalid(message),
        QueryError::Db(error) => db::unavailable(STORE)(error),
        QueryError::Other(error) => {
            tracing::error!(error = %format!("{error:#}"), "query failed");
            ErrorCode::Internal.status("the query failed")
        }
    }
}
