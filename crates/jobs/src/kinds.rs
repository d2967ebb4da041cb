//! The job kinds this deployment accepts, and how each validates its payload
//! at submit time, so that a job that could never run is refused up front.
//!
//! Diagnostic kinds (`noop`, `sleep`, `fail`) exist for demos, tests and
//! benchmarks, and are accepted only when `jobs.diagnostic_kinds` is on.

use serde::Deserialize;
use serde_json::Value;

/// Validates one kind's payload.
pub trait Kind: Send + Sync {
    fn name(&self) -> &'static str;
    /// `Err` says what is wrong with the payload, for the client.
    fn validate(&self, payload: &Value) -> Result<(), String>;
}

pub struct Kinds {
    kinds: Vec<Box<dyn Kind>>,
}

impl Kinds {
    pub fn new(diagnostic: bool) -> Self {
        let mut kinds: Vec<Box<dyn Kind>> = Vec::new();
        if diagnostic {
            kinds.push(Box::new(Noop));
            kinds.push(Box::new(Sleep));
            kinds.push(Box::new(Fail));
        }
        Self { kinds }
    }

    pub fn get(&self, name: &str) -> Option<&dyn Kind> {
        self.kinds.iter().find(|k| k.name() == name).map(|k| k.as_ref())
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|k| k.name()).collect()
    }
}

fn parse<T: for<'de> Deserialize<'de>>(payload: &Value) -> Result<T, String> {
    T::deserialize(payload).map_err(|e| format!("invalid payload: {e}"))
}

/// Does nothing; payload must be an object (possibly empty).
pub struct Noop;

impl Kind for Noop {
    fn name(&self) -> &'static str {
        "noop"
    }

    fn validate(&self, payload: &Value) -> Result<(), String> {
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

    fn validate(&self, payload: &Value) -> Result<(), String> {
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

    fn validate(&self, payload: &Value) -> Result<(), String> {
        let p: FailPayload = parse(payload)?;
        if p.times > 100 {
            return Err("times must be at most 100".into());
        }
        Ok(())
    }
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
        assert!(sleep.validate(&json!({"duration_ms": 100, "steps": 4})).is_ok());
        assert!(sleep.validate(&json!({"duration_ms": -1})).is_err());
        assert!(sleep.validate(&json!({"duration_ms": 100, "steps": 0})).is_err());
        assert!(sleep.validate(&json!({"duration_ms": 100, "naps": 2})).is_err());
        assert!(kinds.get("noop").unwrap().validate(&json!([1])).is_err());
        assert!(kinds.get("fail").unwrap().validate(&json!({"times": 2})).is_ok());
    }
}
