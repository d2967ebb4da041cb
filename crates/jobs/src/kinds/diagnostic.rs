//! The diagnostic kinds, for demos, tests and benchmarks: `noop` does
//! nothing, `sleep` sleeps reporting progress, `fail` fails its first
//! attempts. Accepted only when `jobs.queue.diagnostic_kinds` is on.

use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Failure, Kind, Kinds, Outcome, parse};
use crate::context::JobContext;

/// Does nothing; payload must be an object (possibly empty).
pub struct Noop;

impl Kind for Noop {
    fn name(&self) -> &'static str {
        "noop"
    }

    fn run<'a>(&'a self, _ctx: &'a JobContext, _payload: Value) -> BoxFuture<'a, Outcome> {
        Box::pin(async { Ok(json!({})) })
    }

    fn validate(&self, payload: &Value, _kinds: &Kinds) -> Result<(), String> {
        if payload.is_object() {
            Ok(())
        } else {
            Err("invalid payload: expected a JSON object".into())
        }
    }
}

/// `{"duration_ms": 2000, "steps": 4}`: sleeps, reporting progress each step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SleepPayload {
    pub duration_ms: u64,
    #[serde(default = "default_steps")]
    pub steps: u32,
}

fn default_steps() -> u32 {
    10
}

pub struct Sleep;

impl Kind for Sleep {
    fn name(&self) -> &'static str {
        "sleep"
    }

    fn run<'a>(&'a self, ctx: &'a JobContext, payload: Value) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let p: SleepPayload = parse(&payload).map_err(|m| Failure::new("invalid_payload", m))?;
            let step = Duration::from_millis(p.duration_ms) / p.steps;
            for i in 1..=p.steps {
                tokio::time::sleep(step).await;
                ctx.progress(i, p.steps, &format!("step {i} of {}", p.steps)).await;
            }
            Ok(json!({ "slept_ms": p.duration_ms, "steps": p.steps }))
        })
    }

    fn validate(&self, payload: &Value, _kinds: &Kinds) -> Result<(), String> {
        let p: SleepPayload = parse(payload)?;
        if p.duration_ms > 3_600_000 {
            return Err("duration_ms must be at most 3600000 (one hour)".into());
        }
        if !(1..=1000).contains(&p.steps) {
            return Err("steps must be between 1 and 1000".into());
        }
        Ok(())
    }
}

/// `{"times": 2, "message": "boom"}`: fails the first `times` attempts, then succeeds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailPayload {
    pub times: u32,
    #[serde(default)]
    pub message: Option<String>,
}

pub struct Fail;

impl Kind for Fail {
    fn name(&self) -> &'static str {
        "fail"
    }

    fn run<'a>(&'a self, ctx: &'a JobContext, payload: Value) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let p: FailPayload = parse(&payload).map_err(|m| Failure::new("invalid_payload", m))?;
            if ctx.attempt <= p.times {
                let message = p
                    .message
                    .unwrap_or_else(|| format!("failing on purpose ({} of {})", ctx.attempt, p.times));
                return Err(Failure::new("diagnostic_failure", message));
            }
            Ok(json!({ "succeeded_on_attempt": ctx.attempt }))
        })
    }

    fn validate(&self, payload: &Value, _kinds: &Kinds) -> Result<(), String> {
        let p: FailPayload = parse(payload)?;
        if p.times > 100 {
            return Err("times must be at most 100".into());
        }
        Ok(())
    }
}
