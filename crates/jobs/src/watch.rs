//! `WatchJobs`: a snapshot, then every change in order, on any replica.
//!
//! A stream subscribes to this replica's [`Hub`] before it reads anything, so
//! nothing published after its reads can slip past; what came before is in
//! its snapshot or its catch-up from `job_events`. Duplicates are dropped by
//! number (tenant target) or version (job target). When the hub says events
//! may have been missed, the stream catches up from PostgreSQL again. A
//! resume point whose events were pruned (`jobs.queue.event_retention`), or
//! one the target never reached, gets a fresh snapshot instead, as a new
//! stream would.

use std::collections::HashMap;

use sextant_common::{ErrorCode, db};
use sextant_proto::jobs::v1::{JobsSnapshot, WatchJobsResponse, watch_jobs_response};
use sqlx::PgPool;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use uuid::Uuid;

use crate::bus::Envelope;
use crate::convert::{jobs_with_errors, to_envelope};
use crate::events::{Hub, HubMessage};
use crate::metrics::{Metrics, WatchGuard};
use crate::store::{self, JobRow};

/// Jobs in the snapshot of the tenant target: the newest ones.
pub const SNAPSHOT_JOBS: i64 = 100;
const CATCH_UP_PAGE: i64 = 1000;
const OUTBOUND: usize = 256;

pub enum Target {
    Job(Uuid),
    Tenant {
        /// Keep events that repeat a change the snapshot already shows.
        all_events: bool,
    },
}

type Out = mpsc::Sender<Result<WatchJobsResponse, Status>>;

/// Starts a watch; errors (an unknown job) come back before the stream starts.
pub async fn start(
    pool: PgPool,
    hub: &Hub,
    metrics: &Metrics,
    shutdown: CancellationToken,
    tenant: String,
    target: Target,
    after: u64,
) -> Result<mpsc::Receiver<Result<WatchJobsResponse, Status>>, Status> {
    let feed = hub.subscribe();
    let internal = db::unavailable(store::NAME);
    let after = i64::try_from(after).map_err(|_| ErrorCode::InvalidArgument.status("after_version is out of range"))?;
    let (out, receiver) = mpsc::channel(OUTBOUND);
    match target {
        Target::Job(id) => {
            let row = store::get(&pool, &tenant, id)
                .await
                .map_err(internal)?
                .ok_or_else(|| ErrorCode::NotFound.status("job not found"))?;
            let watch = JobWatch {
                pool,
                tenant,
                id,
                id_text: id.to_string(),
                last_version: after,
                row: Some(row),
            };
            let open = metrics.watch_opened("job");
            tokio::spawn(follow(watch, feed, out, shutdown, open));
        }
        Target::Tenant { all_events } => {
            let watch = TenantWatch {
                pool,
                tenant,
                last_seq: after,
                all_events,
                snapshot_versions: HashMap::new(),
            };
            let open = metrics.watch_opened("tenant");
            tokio::spawn(follow(watch, feed, out, shutdown, open));
        }
    }
    Ok(receiver)
}

fn event_message(envelope: Envelope) -> WatchJobsResponse {
    WatchJobsResponse {
        sequence: envelope.seq,
        message: envelope.event.map(watch_jobs_response::Message::Event),
    }
}

async fn send(out: &Out, message: WatchJobsResponse) -> bool {
    out.send(Ok(message)).await.is_ok()
}

/// What to do after the feed yields.
enum Next {
    Event(std::sync::Arc<Envelope>),
    CatchUp,
    Stop,
}

async fn next(feed: &mut broadcast::Receiver<HubMessage>, out: &Out, shutdown: &CancellationToken) -> Next {
    tokio::select! {
        _ = shutdown.cancelled() => {
            // The caller (the gateway) resumes on another replica with its last version.
            let _ = out.send(Err(ErrorCode::Unavailable.status("the jobs service is shutting down"))).await;
            Next::Stop
        }
        _ = out.closed() => Next::Stop,
        message = feed.recv() => match message {
            Ok(HubMessage::Event(envelope)) => Next::Event(envelope),
            Ok(HubMessage::Resync) | Err(RecvError::Lagged(_)) => Next::CatchUp,
            Err(RecvError::Closed) => Next::Stop,
        },
    }
}

/// One kind of watch: how it starts, catches up, and takes a live event.
/// Each returns `false` when the stream is over (the caller went away).
trait Watcher {
    async fn start(&mut self, out: &Out) -> bool;
    async fn catch_up(&mut self, out: &Out) -> bool;
    async fn on_event(&mut self, envelope: &Envelope, out: &Out) -> bool;
}

async fn follow(
    mut watcher: impl Watcher,
    mut feed: broadcast::Receiver<HubMessage>,
    out: Out,
    shutdown: CancellationToken,
    _open: WatchGuard,
) {
    if !watcher.start(&out).await {
        return;
    }
    loop {
        let alive = match next(&mut feed, &out, &shutdown).await {
            Next::Stop => false,
            Next::CatchUp => watcher.catch_up(&out).await,
            Next::Event(envelope) => watcher.on_event(&envelope, &out).await,
        };
        if !alive {
            return;
        }
    }
}

struct JobWatch {
    pool: PgPool,
    tenant: String,
    id: Uuid,
    id_text: String,
    last_version: i64,
    /// The job as read at the start, for the snapshot.
    row: Option<JobRow>,
}

impl Watcher for JobWatch {
    async fn start(&mut self, out: &Out) -> bool {
        let Some(row) = self.row.take() else {
            return false;
        };
        // No resume point, or one this job never had (a client sends only
        // versions it was sent, and those are committed before they go out).
        if self.last_version == 0 || self.last_version > row.version {
            return self.snapshot(row, out).await;
        }
        let Some(events) = self.events(out).await else {
            return false;
        };
        // The job moved on, but nothing after the resume point is left: those
        // events were pruned.
        if events.is_empty() && row.version > self.last_version {
            return self.snapshot(row, out).await;
        }
        self.send_events(events, out).await
    }

    async fn on_event(&mut self, envelope: &Envelope, out: &Out) -> bool {
        let version = i64::try_from(envelope.version()).unwrap_or(i64::MAX);
        if envelope.job_id() != self.id_text || version <= self.last_version {
            return true;
        }
        self.last_version = version;
        send(out, event_message(envelope.clone())).await
    }

    async fn catch_up(&mut self, out: &Out) -> bool {
        match self.events(out).await {
            Some(events) => self.send_events(events, out).await,
            None => false,
        }
    }
}

impl JobWatch {
    /// The job's events after the last version sent; `None` once the stream has failed.
    async fn events(&self, out: &Out) -> Option<Vec<store::EventRow>> {
        match store::job_events(&self.pool, self.id, self.last_version).await {
            Ok(rows) => Some(rows),
            Err(error) => {
                fail(out, error).await;
                None
            }
        }
    }

    async fn send_events(&mut self, events: Vec<store::EventRow>, out: &Out) -> bool {
        // Versions rise by one per change; a gap means its events were pruned.
        if events
            .first()
            .is_some_and(|first| first.version > self.last_version + 1)
        {
            return match store::get(&self.pool, &self.tenant, self.id).await {
                Ok(Some(row)) => self.snapshot(row, out).await,
                Ok(None) => false,
                Err(error) => {
                    fail(out, error).await;
                    false
                }
            };
        }
        for event in events {
            let version = event.version;
            if !send(out, event_message(to_envelope(event))).await {
                return false;
            }
            self.last_version = version;
        }
        true
    }

    async fn snapshot(&mut self, row: JobRow, out: &Out) -> bool {
        let version = row.version;
        let jobs = match jobs_with_errors(&self.pool, vec![row]).await {
            Ok(jobs) => jobs,
            Err(error) => {
                fail(out, error).await;
                return false;
            }
        };
        let snapshot = WatchJobsResponse {
            sequence: 0,
            message: Some(watch_jobs_response::Message::Snapshot(JobsSnapshot {
                jobs,
                version: u64::try_from(version).unwrap_or(0),
            })),
        };
        self.last_version = version;
        send(out, snapshot).await
    }
}

struct TenantWatch {
    pool: PgPool,
    tenant: String,
    last_seq: i64,
    all_events: bool,
    /// Versions the snapshot already showed; later copies of those changes
    /// are dropped (unless `all_events`).
    snapshot_versions: HashMap<String, u64>,
}

impl Watcher for TenantWatch {
    async fn start(&mut self, out: &Out) -> bool {
        if self.last_seq == 0 {
            return self.snapshot(out).await;
        }
        // Every event sent was numbered below the horizon when it went out,
        // so a resume point at or past it is one the stream never reached.
        match store::settled_seq(&self.pool).await {
            Ok(settled) if self.last_seq > settled => self.snapshot(out).await,
            Ok(_) => self.catch_up(out).await,
            Err(error) => {
                fail(out, error).await;
                false
            }
        }
    }

    async fn on_event(&mut self, envelope: &Envelope, out: &Out) -> bool {
        if envelope.tenant != self.tenant {
            return true;
        }
        self.forward(envelope.clone(), out).await
    }

    async fn catch_up(&mut self, out: &Out) -> bool {
        loop {
            // Read the events, then how far pruning got: if it is still
            // behind the resume point, nothing after that point was missing.
            let read = async {
                let rows = store::tenant_events(&self.pool, &self.tenant, self.last_seq, CATCH_UP_PAGE).await?;
                Ok::<_, sqlx::Error>((rows, store::pruned_through(&self.pool).await?))
            };
            let (rows, pruned) = match read.await {
                Ok(read) => read,
                Err(error) => {
                    fail(out, error).await;
                    return false;
                }
            };
            if pruned > self.last_seq {
                return self.snapshot(out).await;
            }
            let full = rows.len() as i64 == CATCH_UP_PAGE;
            for row in rows {
                if !self.forward(to_envelope(row), out).await {
                    return false;
                }
            }
            if !full {
                return true;
            }
        }
    }
}

impl TenantWatch {
    async fn snapshot(&mut self, out: &Out) -> bool {
        // Read the number first: every event up to it is reflected in the rows read next.
        let loaded = async {
            let seq = store::settled_seq(&self.pool).await?;
            let filter = store::ListFilter {
                limit: SNAPSHOT_JOBS,
                ..Default::default()
            };
            let rows = store::list(&self.pool, &self.tenant, &filter).await?;
            Ok::<_, sqlx::Error>((seq, jobs_with_errors(&self.pool, rows).await?))
        };
        let (seq, jobs) = match loaded.await {
            Ok(loaded) => loaded,
            Err(error) => {
                fail(out, error).await;
                return false;
            }
        };
        if !self.all_events {
            self.snapshot_versions = jobs.iter().map(|j| (j.id.clone(), j.version)).collect();
        }
        self.last_seq = seq;
        let snapshot = WatchJobsResponse {
            sequence: u64::try_from(seq).unwrap_or(0),
            message: Some(watch_jobs_response::Message::Snapshot(JobsSnapshot {
                jobs,
                version: u64::try_from(seq).unwrap_or(0),
            })),
        };
        send(out, snapshot).await
    }

    async fn forward(&mut self, envelope: Envelope, out: &Out) -> bool {
        let seq = i64::try_from(envelope.seq).unwrap_or(i64::MAX);
        if seq <= self.last_seq {
            return true;
        }
        self.last_seq = seq;
        if let Some(&shown) = self.snapshot_versions.get(envelope.job_id()) {
            if envelope.version() <= shown {
                return true;
            }
            self.snapshot_versions.remove(envelope.job_id());
        }
        send(out, event_message(envelope)).await
    }
}

async fn fail(out: &Out, error: sqlx::Error) {
    tracing::warn!(%error, "watch stream ended: job store unavailable");
    let _ = out
        .send(Err(ErrorCode::Unavailable.status(
            "the job store is unavailable; resume with the last version seen",
        )))
        .await;
}
