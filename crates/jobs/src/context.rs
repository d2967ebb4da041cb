//! What a running handler sees: its job, its attempt, and a way to report
//! progress (elapsed and estimated remaining time are computed here, and each
//! report also renews the attempt's lease).

use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::store;

pub struct JobContext {
    pub job_id: Uuid,
    pub tenant: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub priority: i16,
    /// `fail_fast` or `continue`; meaningful for batches.
    pub failure_policy: String,
    pub(crate) started: Instant,
    pub(crate) pool: PgPool,
    pub(crate) lease: Duration,
    pub(crate) signals: std::sync::Arc<crate::Signals>,
}

impl JobContext {
    /// Reports `step` of `total` done. Failures to record progress are logged,
    /// never fatal: the lease heartbeat keeps the attempt alive regardless.
    pub async fn progress(&self, step: u32, total: u32, message: &str) {
        let total = total.max(1);
        let step = step.min(total);
        let elapsed = self.started.elapsed();
        let remaining = (step > 0).then(|| elapsed.mul_f64(f64::from(total - step) / f64::from(step)));
        let progress = json!({
            "percent": f64::from(step) * 100.0 / f64::from(total),
            "step": step,
            "total_steps": total,
            "message": message,
            "elapsed_ms": u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            "remaining_ms": remaining.map(|r| u64::try_from(r.as_millis()).unwrap_or(u64::MAX)),
        });
        let attempt = i32::try_from(self.attempt).unwrap_or(i32::MAX);
        match store::record_progress(&self.pool, self.job_id, attempt, &progress, self.lease).await {
            Ok(true) => self.signals.changed(),
            Ok(false) => {}
            Err(error) => tracing::warn!(job_id = %self.job_id, %error, "recording progress failed"),
        }
    }
}
