//! RabbitMQ names and declarations. Work goes to three durable classic
//! queues, one per priority band; workers take the highest priority among
//! what they hold, and keep prefetch small, so a high-priority job overtakes a
//! backlog. Messages are persistent and published with confirms; PostgreSQL
//! stays the record (the outbox), so the broker only has to carry work.
//!
//! Classic, not quorum, queues: a quorum queue delivers a message only after
//! its log is fsynced, which on the shared 2-core machine put the p95 of a
//! no-op job at ~200 ms even at 100 jobs/s (classic: 15 ms). The queues were
//! quorum before; the names changed with the type (`…jobs.work.<band>` →
//! `…jobs.queue.<band>`), since RabbitMQ cannot change a queue's type.

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

pub struct Names {
    pub work_exchange: String,
    /// Fanout exchange of job events (see `events.rs`).
    pub events_exchange: String,
    prefix: String,
}

impl Names {
    pub fn new(prefix: &str) -> Self {
        Self {
            work_exchange: format!("{prefix}.jobs.work"),
            events_exchange: format!("{prefix}.jobs.events"),
            prefix: prefix.to_owned(),
        }
    }

    pub fn work_queue(&self, band: &str) -> String {
        format!("{}.jobs.queue.{band}", self.prefix)
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
    arguments.insert("x-queue-type".into(), AMQPValue::LongString("classic".into()));
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

/// Deletes everything [`declare`] made under these names (tests and
/// decommissioning; queued messages are lost, the jobs stay in PostgreSQL).
pub async fn delete(connection: &Connection, names: &Names) -> lapin::Result<()> {
    let channel = connection.create_channel().await?;
    for band in BANDS {
        channel
            .queue_delete(names.work_queue(band).as_str().into(), QueueDeleteOptions::default())
            .await?;
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
    let result = delete(&connection, &Names::new(prefix)).await;
    let _ = connection.close(200, "done".into()).await;
    result
}
