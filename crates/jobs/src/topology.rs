//! RabbitMQ names and declarations. Work goes to three durable queues, one
//! per priority band; workers take the highest priority among what they
//! hold, and keep prefetch small, so a high-priority job overtakes a backlog.
//! Messages are persistent and published with confirms; PostgreSQL stays the
//! record (the outbox), so the broker only has to carry work.
//!
//! The queues' type is `jobs.queue.work_queues`:
//! - `quorum` (the default): replicated over a cluster's nodes by Raft, so a
//!   node's loss loses no message and stops no consumer. A message is
//!   delivered only once its log is fsynced on a majority. With up to 16
//!   jobs a message that costs little: `make bench-jobs` with
//!   `BENCH_WORK_QUEUES`, alternated twice on one node (2026-12-04), gave a
//!   no-op job's p50 at 500 jobs/s of 13.5–14.1 ms over gRPC (classic
//!   10.3–15.6) and 4,870–5,132 jobs/s (classic 4,037–5,095). (One job a
//!   message, in an earlier release, it was a p95 of ~200 ms.)
//! - `classic`: on one node only. Faster, but a node's loss strands its
//!   queue's messages until that node is back (the jobs are safe in
//!   PostgreSQL and sent again after `jobs.queue.redispatch_after`).
//!
//! RabbitMQ cannot change a queue's type, so the names carry it: classic
//! `…jobs.queue.<band>`, quorum `…jobs.quorum.<band>`.

use lapin::options::{
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ExchangeKind};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const BANDS: [&str; 3] = ["high", "normal", "low"];

/// Start attempt `attempt + 1` of job `id`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct WorkItem {
    pub id: Uuid,
    pub attempt: i32,
    pub priority: i16,
}

/// Most jobs in one work message. Under load the dispatcher packs the jobs of
/// one band into a message, so the broker's cost is per batch, not per job;
/// a lone job goes alone. A worker acks the message once it has claimed (or
/// dropped) every job in it.
pub const JOBS_PER_MESSAGE: usize = 16;

/// A message on a work queue: `{"jobs": [WorkItem, …]}`. A bare `WorkItem`
/// (what earlier releases sent) still reads as a batch of one.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WorkMessage {
    Batch { jobs: Vec<WorkItem> },
    One(WorkItem),
}

impl WorkMessage {
    pub fn into_items(self) -> Vec<WorkItem> {
        match self {
            WorkMessage::Batch { jobs } => jobs,
            WorkMessage::One(item) => vec![item],
        }
    }
}

pub fn band(priority: i16) -> &'static str {
    match priority {
        7.. => "high",
        4..=6 => "normal",
        _ => "low",
    }
}

/// The type of the work queues (`jobs.queue.work_queues`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    Quorum,
    Classic,
}

impl QueueType {
    fn argument(self) -> &'static str {
        match self {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        }
    }

    /// The name segment of its queues.
    fn segment(self) -> &'static str {
        match self {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "queue",
        }
    }
}

pub struct Names {
    pub work_exchange: String,
    /// Fanout exchange of job events (see `events.rs`).
    pub events_exchange: String,
    pub queue_type: QueueType,
    prefix: String,
}

impl Names {
    pub fn new(prefix: &str, queue_type: QueueType) -> Self {
        Self {
            work_exchange: format!("{prefix}.jobs.work"),
            events_exchange: format!("{prefix}.jobs.events"),
            queue_type,
            prefix: prefix.to_owned(),
        }
    }

    pub fn work_queue(&self, band: &str) -> String {
        self.work_queue_of(self.queue_type, band)
    }

    fn work_queue_of(&self, queue_type: QueueType, band: &str) -> String {
        format!("{}.jobs.{}.{band}", self.prefix, queue_type.segment())
    }
}

/// Declares the work exchange and queues (idempotent), and returns a channel
/// with publisher confirms on.
pub async fn declare(connection: &Connection, names: &Names) -> lapin::Result<Channel> {
    let channel = connection.create_channel().await?;
    channel
        .exchange_declare(
            names.work_exchange.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(names.queue_type.argument().into()),
    );
    for band in BANDS {
        let queue = names.work_queue(band);
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                arguments.clone(),
            )
            .await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                names.work_exchange.as_str().into(),
                band.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(channel)
}

/// Deletes everything [`declare`] made under these names, with the queues of
/// either type (tests and decommissioning; queued messages are lost, the
/// jobs stay in PostgreSQL).
pub async fn delete(connection: &Connection, names: &Names) -> lapin::Result<()> {
    let channel = connection.create_channel().await?;
    for queue_type in [QueueType::Quorum, QueueType::Classic] {
        for band in BANDS {
            channel
                .queue_delete(
                    names.work_queue_of(queue_type, band).as_str().into(),
                    QueueDeleteOptions::default(),
                )
                .await?;
        }
    }
    for exchange in [&names.work_exchange, &names.events_exchange] {
        channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await?;
    }
    channel.close(200, "topology deleted".into()).await
}

/// Connects to `url` and deletes the topology of `prefix`; for test teardown.
pub async fn delete_at(url: &str, prefix: &str) -> lapin::Result<()> {
    let connection = Connection::connect(url, lapin::ConnectionProperties::default()).await?;
    let result = delete(&connection, &Names::new(prefix, QueueType::Quorum)).await;
    let _ = connection.close(200, "done".into()).await;
    result
}
