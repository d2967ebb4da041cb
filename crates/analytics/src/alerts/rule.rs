//! An alert rule's spec in domain form, as stored (JSON in `alert_rules.spec`)
//! and checked. The checks that need the service's configuration (the
//! evaluation interval, the longest window) are in [`RuleLimits::check`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::state::Timing;
use crate::model::{Aggregation, Matcher, Micros, SECOND};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparator {
    Gt,
    Gte,
    Lt,
    Lte,
    Eq,
    Neq,
}

impl Comparator {
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparator::Gt => value > threshold,
            Comparator::Gte => value >= threshold,
            Comparator::Lt => value < threshold,
            Comparator::Lte => value <= threshold,
            Comparator::Eq => value == threshold,
            Comparator::Neq => value != threshold,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleSpec {
    pub name: String,
    pub metric: String,
    pub aggregation: Aggregation,
    /// The trailing window aggregated at each evaluation (µs).
    pub window: Micros,
    pub comparator: Comparator,
    pub threshold: f64,
    /// How long the condition must hold before pending becomes firing (µs).
    pub for_: Micros,
    /// How long firing lasts after the condition stops holding (µs).
    pub keep_firing_for: Micros,
    pub filters: Vec<Matcher>,
    pub group_by: Option<String>,
    pub enabled: bool,
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub webhook: Option<Webhook>,
}

/// Where firing and resolved notifications go, and the secret that signs them.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    pub url: String,
    pub secret: String,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// A webhook secret's length, in characters.
pub const SECRET_LEN: std::ops::RangeInclusive<usize> = 16..=256;

impl RuleSpec {
    pub fn timing(&self) -> Timing {
        Timing {
            for_: self.for_,
            keep_firing_for: self.keep_firing_for,
        }
    }
}

/// Longest rule name, annotation key and annotation value.
pub const MAX_NAME: usize = 200;
pub const MAX_ANNOTATIONS: usize = 32;
pub const MAX_ANNOTATION_VALUE: usize = 4096;
/// The longest `for` and `keep_firing_for`.
pub const MAX_HOLD: Micros = 7 * 24 * 3600 * SECOND;

/// The limits a spec is checked against that come from configuration.
#[derive(Debug, Clone)]
pub struct RuleLimits {
    /// The evaluation interval: a window must be at least this long.
    pub interval: Micros,
    /// The longest window.
    pub max_window: Micros,
    /// Where webhooks may point.
    pub webhook_hosts: sextant_common::outbound::AllowList,
}

impl RuleLimits {
    /// `Err` names the field and says what is wrong.
    pub fn check(&self, spec: &RuleSpec) -> Result<(), String> {
        let seconds = |m: Micros| m / SECOND;
        if spec.window < self.interval || spec.window > self.max_window {
            return Err(format!(
                "spec.window must be between the evaluation interval ({} s) and {} s",
                seconds(self.interval),
                seconds(self.max_window)
            ));
        }
        if spec.window % SECOND != 0 {
            return Err("spec.window must be a whole number of seconds".into());
        }
        if let Some(webhook) = &spec.webhook {
            self.webhook_hosts
                .check(&webhook.url)
                .map_err(|e| format!("spec.webhook.url {e}"))?;
        }
        Ok(())
    }
}
