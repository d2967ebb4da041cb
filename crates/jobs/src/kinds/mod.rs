//! The job kinds this deployment accepts. A kind is one type implementing
//! [`Kind`]: it validates its payload at submit time (so a job that could
//! never run is refused up front) and runs it in a worker, reporting progress
//! through its [`JobContext`]. Adding a kind is one file in this folder plus
//! a line in [`Kinds::with`] (or in `Application::build`, for a kind that
//! needs configuration).
//!
//! Diagnostic kinds (`noop`, `sleep`, `fail`) exist for demos, tests and
//! benchmarks, and are accepted only when `jobs.queue.diagnostic_kinds` is on.

pub mod analyze;
pub mod batch;
pub mod diagnostic;
pub mod export;
pub mod notify;

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::Value;

use crate::context::JobContext;

/// Why an attempt failed; kept with the attempt and shown to the client.
#[derive(Debug, Clone)]
pub struct Failure {
    pub code: String,
    pub message: String,
}

impl Failure {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

pub type Outcome = Result<Value, Failure>;

pub trait Kind: Send + Sync {
    fn name(&self) -> &'static str;
    /// `Err` says what is wrong with the payload, for the client.
    /// `kinds` is the registry, for kinds whose payload names other kinds.
    fn validate(&self, payload: &Value, kinds: &Kinds) -> Result<(), String>;
    /// Runs one attempt. The worker drops the future when the job is
    /// cancelled or times out, so a handler need not poll for either.
    fn run<'a>(&'a self, ctx: &'a JobContext, payload: Value) -> BoxFuture<'a, Outcome>;
    /// Submitted only by another service on its own behalf (never through
    /// the gateway, nor as a batch child); to anyone else it does not exist.
    fn internal(&self) -> bool {
        false
    }
}

pub struct Kinds {
    kinds: Vec<Box<dyn Kind>>,
}

impl Kinds {
    pub fn new(diagnostic: bool) -> Self {
        Self::with(diagnostic, Vec::new())
    }

    /// The built-in kinds, plus `extra` (kinds that need configuration).
    pub fn with(diagnostic: bool, extra: Vec<Box<dyn Kind>>) -> Self {
        let mut kinds: Vec<Box<dyn Kind>> = vec![Box::new(batch::Batch)];
        kinds.extend(extra);
        if diagnostic {
            kinds.push(Box::new(diagnostic::Noop));
            kinds.push(Box::new(diagnostic::Sleep));
            kinds.push(Box::new(diagnostic::Fail));
        }
        Self { kinds }
    }

    pub fn get(&self, name: &str) -> Option<&dyn Kind> {
        self.kinds.iter().find(|k| k.name() == name).map(|k| k.as_ref())
    }

    /// The kind, if a caller that is (`internal`) or is not a service may submit it.
    pub fn get_for(&self, name: &str, internal: bool) -> Option<&dyn Kind> {
        self.get(name).filter(|k| internal || !k.internal())
    }

    /// The kinds anyone may submit.
    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.iter().filter(|k| !k.internal()).map(|k| k.name()).collect()
    }
}

pub(crate) fn parse<T: for<'de> Deserialize<'de>>(payload: &Value) -> Result<T, String> {
    T::deserialize(payload).map_err(|e| format!("invalid payload: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diagnostic_kinds_exist_only_when_enabled() {
        assert!(Kinds::new(false).get("sleep").is_none());
        assert!(Kinds::new(true).get("sleep").is_some());
    }

    #[test]
    fn payloads_are_checked_per_kind() {
        let kinds = Kinds::new(true);
        let sleep = kinds.get("sleep").unwrap();
        assert!(sleep.validate(&json!({"duration_ms": 100, "steps": 4}), &kinds).is_ok());
        assert!(sleep.validate(&json!({"duration_ms": -1}), &kinds).is_err());
        assert!(
            sleep
                .validate(&json!({"duration_ms": 100, "steps": 0}), &kinds)
                .is_err()
        );
        assert!(sleep.validate(&json!({"duration_ms": 100, "naps": 2}), &kinds).is_err());
        assert!(kinds.get("noop").unwrap().validate(&json!([1]), &kinds).is_err());
        assert!(
            kinds
                .get("fail")
                .unwrap()
                .validate(&json!({"times": 2}), &kinds)
                .is_ok()
        );
    }
}
