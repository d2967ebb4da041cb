//! Webhook notifications: the evaluator writes them to `alert_notifications`
//! in the evaluation's transaction; this loop hands each to the jobs service
//! as a `notify` job, which POSTs it with the queue's retries and backoff.
//!
//! A notification is submitted with the idempotency key of its transition,
//! so a replica that dies between submitting and recording the job id makes
//! no second job when it (or another replica) submits again: each transition
//! is delivered once. While the jobs service is unreachable, notifications
//! wait in the table.

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;

use anyhow::Context as _;
use hmac::{Hmac, Mac};
use serde_json::json;
use sextant_common::internal_auth::{Caller, ClientAuth};
use sextant_common::telemetry::TracedChannel;
use sextant_proto::jobs::v1::SubmitJobRequest;
use sextant_proto::jobs::v1::job_service_client::JobServiceClient;
use sha2::Sha256;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::codegen::InterceptedService;
use uuid::Uuid;

use super::store;

/// Notifications submitted per pass at most.
const BATCH: i64 = 50;
/// How often the outbox is checked without a cue.
const POLL: Duration = Duration::from_secs(1);

pub type JobsClient = JobServiceClient<InterceptedService<TracedChannel, ClientAuth>>;

/// The signature of a notification body: hex HMAC-SHA256 under `secret`.
pub fn sign(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

pub struct Notifier {
    pub pool: PgPool,
    pub jobs: JobsClient,
    /// Attempts per delivery (the job's max_attempts).
    pub attempts: u32,
    /// Cued after an evaluation queued notifications.
    pub cue: Arc<Notify>,
}

impl Notifier {
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.cue.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
            loop {
                match self.pass().await {
                    Ok(n) if n as i64 == BATCH => continue,
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(error = %format!("{error:#}"), "submitting alert notifications failed; retrying");
                        break;
                    }
                }
            }
        }
    }

    /// Submits a batch of pending notifications; returns how many.
    async fn pass(&self) -> anyhow::Result<usize> {
        let mut tx = self.pool.begin().await.context("beginning a notifier pass")?;
        let pending = store::pending(&mut tx, BATCH).await.context("reading the outbox")?;
        let mut done = 0;
        for n in &pending {
            let job = match self.submit(n).await {
                Ok(job) => job,
                Err(error) => {
                    // Keep what went through; the rest waits for the next pass.
                    tx.commit().await.context("committing the outbox")?;
                    return Err(error);
                }
            };
            store::submitted(&mut tx, &n.tenant, n.version, job)
                .await
                .context("recording the job")?;
            done += 1;
        }
        tx.commit().await.context("committing the outbox")?;
        Ok(done)
    }

    async fn submit(&self, n: &store::Pending) -> anyhow::Result<Uuid> {
        let payload = json!({ "url": n.url, "body": n.body, "signature": n.signature });
        let mut request = tonic::Request::new(SubmitJobRequest {
            kind: "notify".into(),
            payload_json: payload.to_string(),
            max_attempts: Some(self.attempts),
            idempotency_key: format!("alert-notification:{}:{}", n.rule_id, n.version),
            ..Default::default()
        });
        Caller {
            tenant: n.tenant.clone(),
            user: "sextant-alerts".into(),
        }
        .apply(request.metadata_mut())?;
        request.metadata_mut().insert(
            sextant_common::internal_auth::SERVICE_HEADER,
            tonic::metadata::AsciiMetadataValue::from_static("sextant-analytics"),
        );
        // In the trace of the evaluation that queued it.
        let span = tracing::info_span!(
            "alert notification",
            otel.name = "submit alert notification",
            alert.rule_id = %n.rule_id,
            alert.version = n.version,
            sextant.tenant = %n.tenant,
        );
        if let Some(parent) = &n.trace_context {
            sextant_common::telemetry::set_parent(&span, sextant_common::telemetry::from_traceparent(parent));
        }
        let response = self
            .jobs
            .clone()
            .submit_job(request)
            .instrument(span)
            .await
            .with_context(|| format!("submitting the notification of version {}", n.version))?
            .into_inner();
        let id = response.job.map(|j| j.id).unwrap_or_default();
        Uuid::parse_str(&id).context("the jobs service answered a malformed job id")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
