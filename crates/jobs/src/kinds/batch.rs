//! `batch`: a parent job whose children are other jobs. The first attempt
//! creates the children (idempotently, so a rerun after a crash finds the
//! same ones), then follows them: progress is children done / total; under
//! `fail_fast` the first failed child cancels the rest and fails the parent;
//! under `continue` the parent succeeds once every child has finished, and its
//! result lists each child's outcome.

use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Failure, Kind, Kinds, Outcome, parse};
use crate::context::JobContext;
use crate::store::{self, NewJob};

const MAX_CHILDREN: usize = 1000;
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchPayload {
    children: Vec<Child>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Child {
    kind: String,
    #[serde(default)]
    payload: Option<Value>,
    priority: Option<u8>,
    max_attempts: Option<u32>,
    timeout_ms: Option<u64>,
}

pub struct Batch;

impl Kind for Batch {
    fn name(&self) -> &'static str {
        "batch"
    }

    fn validate(&self, payload: &Value, kinds: &Kinds) -> Result<(), String> {
        let batch: BatchPayload = parse(payload)?;
        if batch.children.is_empty() || batch.children.len() > MAX_CHILDREN {
            return Err(format!("children must hold 1 to {MAX_CHILDREN} jobs"));
        }
        for (i, child) in batch.children.iter().enumerate() {
            if child.kind == "batch" {
                return Err(format!("children[{i}]: batches do not nest"));
            }
            let kind = kinds
                .get_for(&child.kind, false)
                .ok_or_else(|| format!("children[{i}]: unknown kind {:?}", child.kind))?;
            let payload = child.payload.clone().unwrap_or_else(|| json!({}));
            kind.validate(&payload, kinds)
                .map_err(|e| format!("children[{i}]: {e}"))?;
            if child.priority.is_some_and(|p| p > 9) {
                return Err(format!("children[{i}]: priority must be between 0 and 9"));
            }
            if child.max_attempts.is_some_and(|m| !(1..=100).contains(&m)) {
                return Err(format!("children[{i}]: max_attempts must be between 1 and 100"));
            }
            if child.timeout_ms.is_some_and(|t| !(1000..=86_400_000).contains(&t)) {
                return Err(format!("children[{i}]: timeout_ms must be between 1000 and 86400000"));
            }
        }
        Ok(())
    }

    fn run<'a>(&'a self, ctx: &'a JobContext, payload: Value) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let batch: BatchPayload = parse(&payload).map_err(|m| Failure::new("invalid_payload", m))?;
            let unavailable = |e: sqlx::Error| Failure::new("unavailable", format!("job store: {e}"));
            // The batch's attempt span: each child's trace goes on from it.
            let trace_context = sextant_common::telemetry::current_traceparent();
            let children: Vec<NewJob> = batch
                .children
                .into_iter()
                .enumerate()
                .map(|(i, child)| NewJob {
                    id: Uuid::now_v7(),
                    tenant: ctx.tenant.clone(),
                    kind: child.kind,
                    payload: child.payload.unwrap_or_else(|| json!({})),
                    priority: child.priority.map_or(ctx.priority, i16::from),
                    max_attempts: child.max_attempts.map_or(3, |m| i32::try_from(m).unwrap_or(3)),
                    timeout_ms: child
                        .timeout_ms
                        .map_or(300_000, |t| i64::try_from(t).unwrap_or(300_000)),
                    idempotency_key: Some(format!("batch:{}:{i}", ctx.job_id)),
                    run_at: OffsetDateTime::now_utc(),
                    failure_policy: "fail_fast",
                    parent_id: Some(ctx.job_id),
                    requested: store::Requested::Now,
                    trace_context: trace_context.clone(),
                })
                .collect();
            store::insert_many(&ctx.pool, &children, false)
                .await
                .map_err(unavailable)?;
            ctx.signals.new_work();

            let fail_fast = ctx.failure_policy != "continue";
            let mut reported = None;
            loop {
                let counts = store::child_counts(&ctx.pool, ctx.job_id).await.map_err(unavailable)?;
                let (done, total) = (counts.done(), counts.total.max(1));
                // Progress (an event for watchers) only when a child has finished.
                if reported != Some(done) {
                    store::set_children(&ctx.pool, ctx.job_id, counts.total, done)
                        .await
                        .map_err(unavailable)?;
                    ctx.progress(
                        u32::try_from(done).unwrap_or(0),
                        u32::try_from(total).unwrap_or(1),
                        &format!("{done} of {total} children done"),
                    )
                    .await;
                    reported = Some(done);
                }
                if fail_fast && counts.failed > 0 {
                    let mut conn = ctx.pool.acquire().await.map_err(unavailable)?;
                    store::cancel_children(&mut conn, ctx.job_id)
                        .await
                        .map_err(unavailable)?;
                    return Err(Failure::new(
                        "child_failed",
                        format!("{} of {total} children failed; the rest were cancelled", counts.failed),
                    ));
                }
                if done >= counts.total {
                    let children = store::children(&ctx.pool, ctx.job_id).await.map_err(unavailable)?;
                    return Ok(json!({
                        "total": counts.total,
                        "succeeded": counts.succeeded,
                        "failed": counts.failed,
                        "cancelled": counts.cancelled,
                        "children": children.iter().map(|c| json!({
                            "id": c.id, "kind": c.kind, "status": c.status, "result": c.result,
                        })).collect::<Vec<_>>(),
                    }));
                }
                tokio::time::sleep(POLL).await;
            }
        })
    }
}
