//! Workers: consume the work queues, claim each job in PostgreSQL (a guarded
//! update, so a duplicate delivery runs nothing), ack at once (PostgreSQL and
//! the lease now own the attempt, so long jobs never meet the broker's
//! consumer timeout), run the kind's handler under its timeout, renew the
//! lease by heartbeat while watching for a cancel, and record the outcome:
//! success, cancellation, a retry after exponential backoff with jitter, or
//! failure after the last attempt.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use sextant_common::amqp::Amqp;
use sextant_common::telemetry;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::{Mutex, Notify};

use uuid::Uuid;

use crate::Signals;
use crate::batcher::Batcher;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::WorkerConfig;
use crate::context::JobContext;
use crate::kinds::{Failure, Kinds};
use crate::store::{self, Finish};
use crate::topology::{self, BANDS, Names, WorkItem, WorkMessage};

pub struct Worker {
    pub pool: PgPool,
    pub amqp: Amqp,
    pub names: Arc<Names>,
    pub kinds: Arc<Kinds>,
    pub config: WorkerConfig,
    pub id: String,
    pub signals: Arc<Signals>,
    pub metrics: crate::metrics::Metrics,
}

/// A delivered job waiting for a free slot; the highest priority goes first.
struct Pending {
    priority: i16,
    seq: u64,
    item: WorkItem,
    message: Arc<Message>,
}

/// A delivered message and how many of its jobs are still to be claimed. The
/// last of them acks it (or, if a claim failed, requeues it: the jobs
/// claimed meanwhile are not claimed again). A message dropped unsettled
/// (the worker stopping) is redelivered when the channel closes.
struct Message {
    delivery: Delivery,
    unsettled: AtomicUsize,
    failed: AtomicBool,
}

impl Message {
    async fn settle(&self, failed: bool) {
        if failed {
            self.failed.store(true, AtomicOrdering::Relaxed);
        }
        if self.unsettled.fetch_sub(1, AtomicOrdering::AcqRel) != 1 {
            return;
        }
        if self.failed.load(AtomicOrdering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let requeue = BasicNackOptions {
                requeue: true,
                ..Default::default()
            };
            let _ = self.delivery.nack(requeue).await;
        } else {
            let _ = self.delivery.ack(BasicAckOptions::default()).await;
        }
    }
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority.cmp(&other.priority).then(other.seq.cmp(&self.seq))
    }
}

/// Most claims or finishes written in one transaction.
const BATCH: usize = 256;
/// Claim (and finish) transactions in flight at once.
const PARALLEL_BATCHES: usize = 1;

#[derive(Clone)]
struct Batchers {
    claims: Batcher<(Uuid, i32), Result<Option<store::Claimed>, String>>,
    finishes: Batcher<(Uuid, i32, Finish), Option<store::JobRow>>,
}

#[derive(Default)]
struct Inbox {
    heap: Mutex<BinaryHeap<Pending>>,
    ready: Notify,
}

impl Worker {
    pub async fn run(self, shutdown: CancellationToken, grace: Duration) {
        let this = Arc::new(self);
        let inbox = Arc::new(Inbox::default());
        let stop_taking = CancellationToken::new();
        let batchers = this.batchers();
        let mut runners = tokio::task::JoinSet::new();
        for _ in 0..this.config.concurrency {
            let (this, inbox, stop) = (this.clone(), inbox.clone(), stop_taking.clone());
            let batchers = batchers.clone();
            runners.spawn(async move {
                while let Some(pending) = next(&inbox, &stop).await {
                    this.run_one(pending.item, &pending.message, &batchers).await;
                }
            });
        }
        drop(batchers);

        this.consume(&inbox, &shutdown).await;
        stop_taking.cancel();
        // Unstarted deliveries were never acked: the broker redelivers them.
        inbox.heap.lock().await.clear();
        let drained = tokio::time::timeout(grace, async { while runners.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            runners.abort_all();
            match store::hand_back(&this.pool, &this.id).await {
                Ok(rows) => tracing::warn!(jobs = rows.len(), "grace period over; running jobs handed back"),
                Err(error) => tracing::error!(%error, "handing back running jobs failed; their leases will expire"),
            }
        }
        tracing::info!(worker = %this.id, "worker stopped");
    }

    /// Feeds deliveries into the inbox, across reconnects, until shutdown.
    async fn consume(&self, inbox: &Inbox, shutdown: &CancellationToken) {
        let mut seq = 0u64;
        loop {
            let connection = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = self.amqp.connected() => c,
            };
            let channel = match self.open(&connection).await {
                Ok(c) => c,
                Err(error) => {
                    tracing::warn!(%error, "opening the work queues failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let (channel, mut deliveries) = channel;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        let _ = channel.close(200, "worker stopping".into()).await;
                        return;
                    }
                    delivery = deliveries.next() => match delivery {
                        Some(Ok(delivery)) => {
                            let Ok(message) = serde_json::from_slice::<WorkMessage>(&delivery.data) else {
                                tracing::error!("dropping a malformed work message");
                                let _ = delivery.ack(BasicAckOptions::default()).await;
                                continue;
                            };
                            let items = message.into_items();
                            if items.is_empty() {
                                let _ = delivery.ack(BasicAckOptions::default()).await;
                                continue;
                            }
                            let message = Arc::new(Message {
                                delivery,
                                unsettled: AtomicUsize::new(items.len()),
                                failed: AtomicBool::new(false),
                            });
                            let mut heap = inbox.heap.lock().await;
                            for item in items {
                                seq += 1;
                                heap.push(Pending { priority: item.priority, seq, item, message: message.clone() });
                                inbox.ready.notify_one();
                            }
                        }
                        Some(Err(error)) => {
                            tracing::warn!(%error, "work consumer failed");
                            break;
                        }
                        None => break,
                    }
                }
            }
        }
    }

    async fn open(
        &self,
        connection: &lapin::Connection,
    ) -> lapin::Result<(lapin::Channel, futures::stream::SelectAll<lapin::Consumer>)> {
        topology::declare(connection, &self.names).await?;
        let channel = connection.create_channel().await?;
        let prefetch = u16::try_from(self.config.concurrency).unwrap_or(u16::MAX);
        channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
        let mut consumers = Vec::new();
        for band in BANDS {
            let consumer = channel
                .basic_consume(
                    self.names.work_queue(band).as_str().into(),
                    format!("{}-{band}", self.id).as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            consumers.push(consumer);
        }
        Ok((channel, futures::stream::select_all(consumers)))
    }

    /// Claims and finishes are batched across this worker's runners.
    fn batchers(&self) -> Batchers {
        let (pool, worker, lease) = (self.pool.clone(), self.id.clone(), self.config.lease);
        let claims = Batcher::spawn(BATCH, PARALLEL_BATCHES, move |mut messages: Vec<(Uuid, i32)>| {
            let (pool, worker) = (pool.clone(), worker.clone());
            async move {
                let order = messages.clone();
                // One lock order for every claimer: no deadlocks between replicas.
                messages.sort();
                match store::claim_many(&pool, &messages, &worker, lease).await {
                    Ok(rows) => {
                        let mut rows: HashMap<Uuid, store::Claimed> = rows.into_iter().map(|r| (r.job.id, r)).collect();
                        order
                            .iter()
                            .map(|(id, attempt)| Ok(rows.remove(id).filter(|r| r.job.attempt == attempt + 1)))
                            .collect()
                    }
                    Err(error) => order.iter().map(|_| Err(error.to_string())).collect(),
                }
            }
        });
        let pool = self.pool.clone();
        let finishes = Batcher::spawn(BATCH, PARALLEL_BATCHES, move |outcomes: Vec<(Uuid, i32, Finish)>| {
            let pool = pool.clone();
            async move {
                // Retried while the database is away: giving up would let the
                // lease expire and run the job a second time.
                let mut delay = Duration::from_millis(100);
                let rows = loop {
                    match store::finish_many(&pool, &outcomes).await {
                        Ok(rows) => break rows,
                        Err(error) => {
                            tracing::warn!(%error, retry_in = ?delay, "recording outcomes failed; retrying");
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(2));
                        }
                    }
                };
                let mut rows: HashMap<Uuid, store::JobRow> = rows.into_iter().map(|r| (r.id, r)).collect();
                outcomes.iter().map(|(id, _, _)| rows.remove(id)).collect()
            }
        });
        Batchers { claims, finishes }
    }

    async fn run_one(&self, item: WorkItem, message: &Message, batchers: &Batchers) {
        let claimed = batchers
            .claims
            .call((item.id, item.attempt))
            .await
            .unwrap_or_else(|| Err("the worker is stopping".into()));
        let claimed = match claimed {
            Ok(Some(claimed)) => {
                self.signals.changed();
                message.settle(false).await;
                claimed
            }
            Ok(None) => {
                tracing::debug!(job_id = %item.id, attempt = item.attempt, "stale or duplicate delivery dropped");
                message.settle(false).await;
                return;
            }
            Err(error) => {
                tracing::warn!(job_id = %item.id, %error, "claiming failed; requeueing the message");
                message.settle(true).await;
                return;
            }
        };

        let row = claimed.job;
        // The attempt continues the submitter's trace: `process <queue>` (a
        // consumer span, as OpenTelemetry's messaging conventions name it),
        // linked to the span that published the message, and in it the
        // job's own span.
        let queue = self.names.work_queue(topology::band(row.priority));
        let process = tracing::info_span!(
            "process",
            otel.name = %format!("process {queue}"),
            otel.kind = "consumer",
            messaging.system = "rabbitmq",
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            messaging.destination.name = %queue,
            messaging.consumer.group.name = %queue,
            messaging.message.body.size = message.delivery.data.len(),
        );
        if let Some(parent) = &claimed.trace_context {
            telemetry::set_parent(&process, telemetry::from_traceparent(parent));
        }
        if let Some(headers) = message.delivery.properties.headers() {
            telemetry::add_link(&process, &telemetry::extract_amqp(headers));
        }
        let span = tracing::info_span!(
            parent: &process,
            "job",
            otel.name = %format!("job {}", row.kind),
            job_id = %row.id,
            kind = %row.kind,
            attempt = row.attempt,
            job.id = %row.id,
            job.kind = %row.kind,
            job.attempt = row.attempt,
            sextant.tenant = %row.tenant,
            otel.status_code = tracing::field::Empty,
        );
        self.execute(row, batchers).instrument(span).instrument(process).await;
    }

    async fn execute(&self, row: store::JobRow, batchers: &Batchers) {
        let attempt = row.attempt;
        let ctx = JobContext {
            job_id: row.id,
            tenant: row.tenant.clone(),
            attempt: u32::try_from(attempt).unwrap_or(0),
            priority: row.priority,
            failure_policy: row.failure_policy.clone(),
            started: Instant::now(),
            pool: self.pool.clone(),
            lease: self.config.lease,
            signals: self.signals.clone(),
        };
        let cancel = CancellationToken::new();
        let heartbeat = tokio::spawn(heartbeat(
            self.pool.clone(),
            row.id,
            attempt,
            self.config.lease,
            self.config.heartbeat,
            cancel.clone(),
        ));

        let timeout = Duration::from_millis(u64::try_from(row.timeout_ms).unwrap_or(u64::MAX));
        let outcome = match self.kinds.get(&row.kind) {
            None => Err(Failure::new(
                "unknown_kind",
                format!("this deployment cannot run kind {:?}", row.kind),
            )),
            Some(kind) => tokio::select! {
                r = tokio::time::timeout(timeout, kind.run(&ctx, row.payload.clone())) => {
                    r.unwrap_or_else(|_| Err(Failure::new("timeout", format!("attempt exceeded its timeout of {timeout:?}"))))
                }
                _ = cancel.cancelled() => Err(Failure::new("cancelled", "cancelled while running")),
            },
        };
        heartbeat.abort();

        let finish = match outcome {
            Ok(result) => Finish::Succeeded(result),
            Err(failure) if failure.code == "cancelled" => Finish::Cancelled,
            Err(failure) => {
                let retry_at = (attempt < row.max_attempts).then(|| OffsetDateTime::now_utc() + self.backoff(attempt));
                Finish::Failed {
                    code: failure.code,
                    message: failure.message,
                    retry_at,
                }
            }
        };
        if !matches!(finish, Finish::Succeeded(_)) {
            tracing::Span::current().record("otel.status_code", "ERROR");
        }
        let retrying = matches!(finish, Finish::Failed { retry_at: Some(_), .. });
        let outcome = match &finish {
            Finish::Succeeded(_) => "succeeded",
            Finish::Cancelled => "cancelled",
            Finish::Failed { retry_at: Some(_), .. } => "retried",
            Finish::Failed { retry_at: None, .. } => "failed",
        };
        self.metrics.attempt_finished(&row.kind, outcome, ctx.started.elapsed());
        match batchers.finishes.call((row.id, attempt, finish)).await.flatten() {
            Some(row) => {
                tracing::info!(status = %row.status, "attempt finished");
                if retrying {
                    self.signals.new_work();
                } else {
                    self.signals.changed();
                }
            }
            None => tracing::warn!("attempt was taken over before it finished; outcome dropped"),
        }
    }

    /// `base · 2^(attempt-1)`, capped, with "equal jitter" (half fixed, half
    /// random), so successive delays grow while replicas spread out.
    fn backoff(&self, attempt: i32) -> Duration {
        let exponent = u32::try_from(attempt.saturating_sub(1)).unwrap_or(0).min(20);
        let full = self
            .config
            .retry_base
            .saturating_mul(1 << exponent)
            .min(self.config.retry_max);
        full / 2 + full.mul_f64(rand::random_range(0.0..0.5))
    }
}

async fn next(inbox: &Inbox, stop: &CancellationToken) -> Option<Pending> {
    loop {
        let ready = inbox.ready.notified();
        if stop.is_cancelled() {
            return None;
        }
        if let Some(pending) = inbox.heap.lock().await.pop() {
            return Some(pending);
        }
        tokio::select! {
            _ = ready => {}
            _ = stop.cancelled() => return None,
        }
    }
}

/// Renews the lease and turns a requested cancel (or a lost lease) into `cancel`.
async fn heartbeat(
    pool: PgPool,
    id: uuid::Uuid,
    attempt: i32,
    lease: Duration,
    every: Duration,
    cancel: CancellationToken,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        match store::heartbeat(&pool, id, attempt, lease).await {
            Ok(Some(false)) => {}
            Ok(Some(true)) => {
                tracing::info!(job_id = %id, "cancel requested; stopping the handler");
                cancel.cancel();
                return;
            }
            Ok(None) => {
                tracing::warn!(job_id = %id, "lease lost; stopping the handler");
                cancel.cancel();
                return;
            }
            // The database is briefly away: keep running, the lease has slack.
            Err(error) => tracing::warn!(job_id = %id, %error, "heartbeat failed"),
        }
    }
}
