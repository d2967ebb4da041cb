//! Retention: exports older than `exports.retention` are deleted, file and
//! record, oldest first, `exports.sweep_batch` at a time: the files, then
//! their records. A download in between answers "unavailable", never a
//! partial file; a file whose delete failed keeps its record, to be tried
//! again on the next sweep.

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::store;

pub struct Sweeper {
    pub pool: PgPool,
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
