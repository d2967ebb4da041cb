//! The outbox dispatcher: moves accepted jobs from PostgreSQL onto RabbitMQ.
//! A submit only writes PostgreSQL, so it succeeds while the broker is down;
//! this loop publishes every due, undispatched job (persistent messages,
//! publisher confirms) and only then marks it dispatched, in one transaction
//! that locks the rows, so replicas never publish the same job twice. It also
//! rescues jobs whose worker died (expired leases), and sends again the
//! message of a job that stayed queued and unclaimed too long (a broker that
//! lost it must not lose the job), and prunes events past their retention.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lapin::BasicProperties;
use lapin::PublisherConfirm;
use lapin::options::BasicPublishOptions;
use lapin::types::FieldTable;
use sextant_common::amqp::Amqp;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::topology::{self, Names, WorkItem, WorkMessage};
use crate::{Signals, store};

const BATCH: i64 = 500;
const IDLE_POLL: Duration = Duration::from_millis(100);
const REAP_EVERY: Duration = Duration::from_secs(1);
const PRUNE_BATCH: i64 = 10_000;
/// Finished jobs deleted per statement (each with its attempts and events).
const JOB_PRUNE_BATCH: i64 = 500;

/// The fast path from this replica's API to its dispatcher: jobs due at
/// submit are stored already marked dispatched and handed over in memory, so
/// their message goes out right after the submit commits, without the outbox
/// round trip (a locking read and a rewrite of each row). Used only while
/// the dispatcher has a broker channel; if publishing fails the jobs go back
/// to the outbox. A replica that dies holding some leaves them to
/// `jobs.queue.redispatch_after`, as a lost message would.
#[derive(Clone)]
pub struct Direct {
    sender: mpsc::UnboundedSender<Vec<WorkItem>>,
    ready: Arc<AtomicBool>,
}

impl Direct {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Vec<WorkItem>>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let ready = Arc::new(AtomicBool::new(false));
        (Self { sender, ready }, receiver)
    }

    /// Whether jobs submitted now may take the fast path.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Hands over committed jobs stored as dispatched; `false` if the
    /// dispatcher is gone (the caller puts them back in the outbox).
    pub fn send(&self, jobs: Vec<WorkItem>) -> bool {
        self.sender.send(jobs).is_ok()
    }
}

pub struct Dispatcher {
    pub pool: PgPool,
    pub amqp: Amqp,
    pub names: Arc<Names>,
    pub signals: Arc<Signals>,
    /// See `jobs.queue.redispatch_after`.
    pub redispatch_after: Duration,
    /// See `jobs.queue.event_retention`.
    pub event_retention: Duration,
    /// See `jobs.queue.job_retention` and `job_retention_per_tenant`.
    pub job_retention: Duration,
    pub job_retention_overrides: Vec<(String, Duration)>,
    pub direct: Direct,
    pub handed: mpsc::UnboundedReceiver<Vec<WorkItem>>,
}

impl Dispatcher {
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut reap = tokio::time::interval(REAP_EVERY);
        // A timer, not a sleep per wake-up: a steady fast path must not keep
        // postponing the look at the outbox (jobs coming due, other replicas').
        let mut poll = tokio::time::interval(IDLE_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Events and finished jobs are pruned every tenth of the shortest
        // retention (1 s to 1 min).
        let shortest = self
            .job_retention_overrides
            .iter()
            .map(|(_, keep)| *keep)
            .chain([self.event_retention, self.job_retention])
            .min()
            .unwrap_or(self.event_retention);
        let mut prune = tokio::time::interval((shortest / 10).clamp(REAP_EVERY, Duration::from_secs(60)));
        'connection: loop {
            let connection = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = self.amqp.connected() => c,
            };
            let channel = match topology::declare(&connection, &self.names).await {
                Ok(channel) => channel,
                Err(error) => {
                    tracing::warn!(%error, "declaring the job topology failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            self.direct.ready.store(true, Ordering::Release);
            // Whether to look at the outbox: at start, when told of due jobs,
            // and on each idle poll; not after each fast-path hand-over.
            let mut look = true;
            loop {
                let dispatched = if look {
                    self.dispatch_once(&channel).await
                } else {
                    Ok(0)
                };
                look = false;
                match dispatched {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::debug!(jobs = n, "dispatched");
                        look = true;
                        continue;
                    }
                    Err(error) => {
                        tracing::warn!(error = %format!("{error:#}"), "dispatch failed; retrying");
                        self.lost_channel().await;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue 'connection;
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        self.lost_channel().await;
                        return;
                    }
                    Some(first) = self.handed.recv() => {
                        if let Err(error) = self.publish_handed(&channel, first).await {
                            tracing::warn!(error = %format!("{error:#}"), "dispatch failed; retrying");
                            self.lost_channel().await;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue 'connection;
                        }
                    }
                    _ = self.signals.dispatch.notified() => look = true,
                    _ = poll.tick() => look = true,
                    _ = reap.tick() => self.reap().await,
                    _ = prune.tick() => self.prune().await,
                }
            }
        }
    }

    async fn dispatch_once(&self, channel: &lapin::Channel) -> anyhow::Result<usize> {
        let mut tx = self.pool.begin().await?;
        let due = store::lock_due(&mut tx, BATCH).await?;
        if due.is_empty() {
            return Ok(0);
        }
        // `due` is in priority order.
        let items: Vec<WorkItem> = due
            .iter()
            .map(|job| WorkItem {
                id: job.id,
                attempt: job.attempt,
                priority: job.priority,
            })
            .collect();
        self.publish_all(channel, &items).await?;
        let ids: Vec<_> = due.iter().map(|j| j.id).collect();
        store::mark_dispatched(&mut tx, &ids).await?;
        tx.commit().await?;
        // A due scheduled job became queued: that is an event.
        if due.iter().any(|j| j.status == "scheduled") {
            self.signals.changed();
        }
        Ok(due.len())
    }

    /// Publishes jobs handed over by the API (`first` and whatever else is
    /// waiting), in priority order. If that fails they go back to the outbox.
    async fn publish_handed(&mut self, channel: &lapin::Channel, first: Vec<WorkItem>) -> anyhow::Result<()> {
        let mut jobs = first;
        while jobs.len() < BATCH as usize {
            match self.handed.try_recv() {
                Ok(more) => jobs.extend(more),
                Err(_) => break,
            }
        }
        jobs.sort_by_key(|j| std::cmp::Reverse(j.priority));
        let confirms = match self.send_all(channel, &jobs).await {
            Ok(confirms) => confirms,
            Err(error) => {
                undispatch(&self.pool, &self.signals, &jobs).await;
                return Err(error);
            }
        };
        // The broker's confirms are awaited beside the loop, so the next jobs
        // handed over go out meanwhile instead of queueing behind its disk.
        let (pool, signals) = (self.pool.clone(), self.signals.clone());
        tokio::spawn(async move {
            if let Err(error) = confirmed(confirms).await {
                tracing::warn!(error = %format!("{error:#}"), jobs = jobs.len(), "publishing jobs failed; back to the outbox");
                undispatch(&pool, &signals, &jobs).await;
            }
        });
        Ok(())
    }

    /// The broker channel is gone: jobs take the outbox until it is back, and
    /// those already handed over go back to it.
    async fn lost_channel(&mut self) {
        self.direct.ready.store(false, Ordering::Release);
        let mut stranded = Vec::new();
        while let Ok(more) = self.handed.try_recv() {
            stranded.extend(more);
        }
        undispatch(&self.pool, &self.signals, &stranded).await;
    }

    /// Publishes `jobs` (in priority order, so each band's are consecutive)
    /// as messages of up to [`topology::JOBS_PER_MESSAGE`] jobs of one band,
    /// and waits for the broker to confirm every one.
    async fn publish_all(&self, channel: &lapin::Channel, jobs: &[WorkItem]) -> anyhow::Result<()> {
        confirmed(self.send_all(channel, jobs).await?).await
    }

    /// Sends [`Self::publish_all`]'s messages; the broker's confirms to come.
    async fn send_all(&self, channel: &lapin::Channel, jobs: &[WorkItem]) -> anyhow::Result<Vec<PublisherConfirm>> {
        let mut confirms = Vec::new();
        for band in jobs.chunk_by(|a, b| topology::band(a.priority) == topology::band(b.priority)) {
            for chunk in band.chunks(topology::JOBS_PER_MESSAGE) {
                confirms.push(self.publish(channel, chunk).await?);
            }
        }
        Ok(confirms)
    }

    /// Publishes one message for `jobs` (all of one band), in a producer
    /// span whose context the message carries: each job's `process` span
    /// links to it (the jobs' own traces are their submitters').
    async fn publish(&self, channel: &lapin::Channel, jobs: &[WorkItem]) -> anyhow::Result<PublisherConfirm> {
        let message = WorkMessage::Batch { jobs: jobs.to_vec() };
        let body = serde_json::to_vec(&message)?;
        let exchange = &self.names.work_exchange;
        let span = tracing::info_span!(
            "publish",
            otel.name = %format!("publish {exchange}"),
            otel.kind = "producer",
            messaging.system = "rabbitmq",
            messaging.operation.type = "send",
            messaging.operation.name = "publish",
            messaging.destination.name = %exchange,
            messaging.rabbitmq.destination.routing_key = topology::band(jobs[0].priority),
            messaging.batch.message_count = jobs.len(),
            messaging.message.body.size = body.len(),
        );
        let mut headers = FieldTable::default();
        span.in_scope(|| sextant_common::telemetry::inject_amqp(&mut headers));
        let confirm = channel
            .basic_publish(
                self.names.work_exchange.as_str().into(),
                topology::band(jobs[0].priority).into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into())
                    .with_headers(headers),
            )
            .instrument(span)
            .await?;
        Ok(confirm)
    }

    /// Deletes events older than the retention, then finished jobs past
    /// theirs, a bounded batch per statement so no lock is held long.
    async fn prune(&self) {
        let pruned = in_batches(PRUNE_BATCH, "pruning old job events", || {
            store::prune_events(&self.pool, self.event_retention, PRUNE_BATCH)
        })
        .await;
        if pruned > 0 {
            tracing::info!(events = pruned, retention = ?self.event_retention, "pruned old job events");
        }
        let deleted = in_batches(JOB_PRUNE_BATCH, "deleting finished jobs", || {
            store::delete_finished(
                &self.pool,
                self.job_retention,
                &self.job_retention_overrides,
                JOB_PRUNE_BATCH,
            )
        })
        .await;
        if deleted > 0 {
            tracing::info!(jobs = deleted, retention = ?self.job_retention, "deleted finished jobs past their retention");
        }
    }

    async fn reap(&self) {
        match store::redispatch_stale(&self.pool, self.redispatch_after).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(jobs = n, after = ?self.redispatch_after, "queued jobs unclaimed too long; sending them again");
                self.signals.new_work();
            }
            Err(error) => tracing::warn!(%error, "looking for unclaimed jobs failed"),
        }
        match store::reap_expired(&self.pool).await {
            Ok(rows) if !rows.is_empty() => {
                for row in &rows {
                    tracing::warn!(job_id = %row.id, attempt = row.attempt, status = %row.status, "lease expired; job rescued");
                }
                self.signals.new_work();
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "reaping expired leases failed"),
        }
    }
}

/// Waits until the broker has confirmed every message.
async fn confirmed(confirms: Vec<PublisherConfirm>) -> anyhow::Result<()> {
    for confirm in confirms {
        anyhow::ensure!(confirm.await?.is_ack(), "the broker refused a job message");
    }
    Ok(())
}

/// Jobs handed over in memory whose message may not have gone out return to
/// the outbox. Retried while the database is away: until this lands, only
/// `redispatch_after` would send them.
async fn undispatch(pool: &PgPool, signals: &Signals, jobs: &[WorkItem]) {
    if jobs.is_empty() {
        return;
    }
    let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
    let mut delay = Duration::from_millis(100);
    while let Err(error) = store::undispatch(pool, &ids).await {
        tracing::warn!(%error, retry_in = ?delay, "returning jobs to the outbox failed; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
    signals.new_work();
}

/// Runs `step` (which removes up to `batch` rows) until it removes fewer, or
/// fails (logged as `what` failed); returns how many rows went.
async fn in_batches<F, Fut>(batch: i64, what: &str, mut step: F) -> u64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = sqlx::Result<u64>>,
{
    let mut total = 0;
    loop {
        match step().await {
            Ok(n) => {
                total += n;
                if n < batch as u64 {
                    return total;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "{what} failed");
                return total;
            }
        }
    }
}
