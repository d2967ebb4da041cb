//! `WatchAlerts`: a snapshot of the current instances (of one rule, or of
//! every rule of the tenant), then each transition with its version.
//!
//! Versions are the tenant's alert versions: every transition of any of its
//! rules takes the next one, in commit order. A watch of one rule sees only
//! its transitions, so its versions have gaps. A resume `after_version` N
//! gets exactly the transitions after N, or a snapshot when the history no
//! longer holds them (pruned after `analytics.alerts.history`) or N is ahead
//! of the tenant. Cues come from the evaluating replica (directly or through
//! RabbitMQ); watches also poll.

use sextant_common::db;
use sextant_proto::analytics::v1 as pb;
use sqlx::PgPool;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use uuid::Uuid;

use super::convert::{instance_pb, transition_pb};
use super::store;
use crate::metrics::live::{Cue, Live};

use super::STORE;

/// Instances a snapshot holds at most.
const SNAPSHOT_LIMIT: i64 = 10_000;
/// Transitions read per catch-up query.
const CATCH_UP_PAGE: i64 = 1_000;

type Sender = mpsc::Sender<Result<pb::WatchAlertsResponse, Status>>;

pub fn start(
    live: &Live,
    tenant: String,
    rule: Option<Uuid>,
    after: u64,
    shutdown: CancellationToken,
) -> mpsc::Receiver<Result<pb::WatchAlertsResponse, Status>> {
    let (tx, rx) = mpsc::channel(64);
    let watch = Watch {
        pool: live.pool().clone(),
        tenant,
        rule,
        version: 0,
        tx,
    };
    let cues = live.cues();
    let poll = live.poll();
    tokio::spawn(async move { watch.run(cues, poll, after, shutdown).await });
    rx
}

struct Watch {
    pool: PgPool,
    tenant: String,
    rule: Option<Uuid>,
    version: i64,
    tx: Sender,
}

impl Watch {
    async fn run(
        mut self,
        mut cues: broadcast::Receiver<Cue>,
        poll: std::time::Duration,
        after: u64,
        shutdown: CancellationToken,
    ) {
        let started = match i64::try_from(after) {
            Ok(0) | Err(_) => self.snapshot().await,
            Ok(after) => self.resume(after).await,
        };
        if !self.ok(started).await {
            return;
        }
        let mut ticker = tokio::time::interval(poll);
        ticker.reset();
        loop {
            let due = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.tx.closed() => return,
                _ = ticker.tick() => true,
                cue = cues.recv() => match cue {
                    Ok(Cue::Hint(hint)) => {
                        hint.alerts && hint.tenant == self.tenant && i64::try_from(hint.version).unwrap_or(0) > self.version
                    }
                    Ok(Cue::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => true,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            if due {
                let step = self.catch_up().await;
                if !self.ok(step).await {
                    return;
                }
            }
        }
    }

    /// Passes an error on and says whether to go on.
    async fn ok(&self, step: Result<(), Status>) -> bool {
        match step {
            Ok(()) => !self.tx.is_closed(),
            Err(status) => {
                let _ = self.tx.send(Err(status)).await;
                false
            }
        }
    }

    async fn send(&self, message: pb::watch_alerts_response::Message, version: i64) -> Result<(), Status> {
        let response = pb::WatchAlertsResponse {
            message: Some(message),
            version: u64::try_from(version).unwrap_or(0),
        };
        // A closed receiver ends the watch at the next check.
        let _ = self.tx.send(Ok(response)).await;
        Ok(())
    }

    async fn snapshot(&mut self) -> Result<(), Status> {
        let mut tx = self.pool.begin().await.map_err(db::unavailable(STORE))?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(db::unavailable(STORE))?;
        let (version, _) = store::stream_position(&mut *tx, &self.tenant)
            .await
            .map_err(db::unavailable(STORE))?;
        let instances = store::list_instances(&mut *tx, &self.tenant, self.rule, &[], None, SNAPSHOT_LIMIT)
            .await
            .map_err(db::unavailable(STORE))?;
        tx.commit().await.map_err(db::unavailable(STORE))?;
        self.version = version;
        let snapshot = pb::ListAlertInstancesResponse {
            instances: instances.iter().map(instance_pb).collect(),
            page: None,
        };
        self.send(pb::watch_alerts_response::Message::Snapshot(snapshot), version)
            .await
    }

    async fn resume(&mut self, after: i64) -> Result<(), Status> {
        let (current, pruned) = store::stream_position(&self.pool, &self.tenant)
            .await
            .map_err(db::unavailable(STORE))?;
        if after < pruned || after > current {
            return self.snapshot().await;
        }
        self.version = after;
        self.catch_up().await
    }

    /// Sends every transition after the watch's version.
    async fn catch_up(&mut self) -> Result<(), Status> {
        loop {
            let rows = store::history(
                &self.pool,
                &self.tenant,
                self.rule,
                (None, None),
                self.version,
                CATCH_UP_PAGE,
            )
            .await
            .map_err(db::unavailable(STORE))?;
            for row in &rows {
                self.version = row.version;
                self.send(
                    pb::watch_alerts_response::Message::Transition(transition_pb(row)),
                    row.version,
                )
                .await?;
            }
            if (rows.len() as i64) < CATCH_UP_PAGE {
                return Ok(());
            }
        }
    }
}
