//! Upkeep. Retention: exports older than `exports.retention` are deleted, file and
//! record, oldest first, `exports.sweep_batch` at a time: the files, then
//! their records. A download in between answers "unavailable", never a
//! partial file; a file whose delete failed keeps its record, to be tried
//! again on the next sweep.
//!
//! And exports whose job ended without rendering them (cancelled while
//! queued, or out of attempts while the exports service was down) would stay
//! `pending` or `rendering`: each sweep asks the jobs service about them and
//! marks those whose job ended (cancelled or failed) `failed`.
//!
//! And an export whose job was never submitted (the service stopped between
//! committing the record and submitting its job) would stay `pending`: each
//! sweep submits the job of such an export older than [`UNQUEUED_GRACE`]
//! (with the export's idempotency key: the same job, however often).

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use sextant_common::internal_auth::Caller;
use sextant_proto::jobs::v1 as jpb;

use crate::api::{JobsClient, submit_render};
use crate::store;

/// How long an export may wait for its job's submission before the sweep
/// submits it (the create submits it right after committing the record).
pub const UNQUEUED_GRACE: Duration = Duration::from_secs(10);

pub struct Sweeper {
    pub pool: PgPool,
    pub jobs: JobsClient,
    pub store: Arc<dyn ObjectStore>,
    pub retention: Duration,
    pub interval: Duration,
    pub batch: u32,
}

impl Sweeper {
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            match self.sweep().await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "deleted expired exports"),
                Err(error) => tracing::warn!(error = %format!("{error:#}"), "deleting expired exports failed"),
            }
            if let Err(error) = self.reconcile().await {
                tracing::warn!(error = %format!("{error:#}"), "checking unfinished exports failed");
            }
            if let Err(error) = self.requeue().await {
                tracing::warn!(error = %format!("{error:#}"), "queueing unqueued exports failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Deletes every expired export; answers how many.
    pub async fn sweep(&self) -> anyhow::Result<u64> {
        let mut deleted = 0;
        loop {
            let before = time::OffsetDateTime::now_utc() - self.retention;
            let expired = store::expired(&self.pool, before, i64::from(self.batch)).await?;
            if expired.is_empty() {
                break;
            }
            let mut gone = Vec::with_capacity(expired.len());
            for (tenant, id, key) in expired {
                match self.store.delete(&Path::from(key.as_str())).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => gone.push((tenant, id)),
                    Err(error) => {
                        tracing::warn!(%error, export_id = %id, "deleting an expired file failed");
                    }
                }
            }
            if gone.is_empty() {
                break;
            }
            deleted += store::delete(&self.pool, &gone).await?;
        }
        // A user's limit row at full quota holds nothing worth keeping.
        sqlx::query("DELETE FROM export_rate_limits WHERE tat < now() - interval '1 hour'")
            .execute(&self.pool)
            .await?;
        Ok(deleted)
    }
}

impl Sweeper {
    /// Submits the jobs of exports left without one; answers how many.
    pub async fn requeue(&self) -> anyhow::Result<u64> {
        let before = time::OffsetDateTime::now_utc() - UNQUEUED_GRACE;
        let mut queued = 0;
        for (tenant, user, id) in store::unqueued(&self.pool, before, i64::from(self.batch)).await? {
            let caller = Caller {
                tenant: tenant.clone(),
                user,
            };
            let job = submit_render(&self.jobs, &caller, id).await?;
            store::set_job(&self.pool, &tenant, id, job).await?;
            tracing::info!(export_id = %id, job_id = %job, "queued an export whose job was never submitted");
            queued += 1;
        }
        Ok(queued)
    }

    /// Marks `failed` the exports whose job ended without rendering them.
    pub async fn reconcile(&self) -> anyhow::Result<u64> {
        // Only a job's final state counts, so no export is too young to ask about.
        let before = time::OffsetDateTime::now_utc();
        let mut failed = 0;
        for (tenant, id, job) in store::unfinished(&self.pool, before, i64::from(self.batch)).await? {
            let mut request = tonic::Request::new(jpb::GetJobRequest { id: job.to_string() });
            Caller {
                tenant: tenant.clone(),
                user: "sextant-exports".into(),
            }
            .apply(request.metadata_mut())?;
            let status = match self.jobs.clone().get_job(request).await {
                Ok(job) => jpb::JobStatus::try_from(job.into_inner().status).unwrap_or_default(),
                Err(status) if status.code() == tonic::Code::NotFound => jpb::JobStatus::Failed,
                Err(status) => return Err(status.into()),
            };
            let error = match status {
                jpb::JobStatus::Cancelled => "its job was cancelled",
                jpb::JobStatus::Failed => "its job failed",
                // Succeeded: the render marked it ready as it finished.
                _ => continue,
            };
            if store::abandoned(&self.pool, &tenant, id, error).await? {
                tracing::info!(export_id = %id, job_id = %job, error, "an export's job ended without it");
                failed += 1;
            }
        }
        Ok(failed)
    }
}
