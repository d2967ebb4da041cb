//! Alerts: JSON ⇄ the analytics service's protobuf, for the
//! `/api/v1/alerts…` routes and the `alerts` / `alert:<id>` topics.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use sextant_proto::analytics::v1 as pb;

use super::metrics::{AggregationName, Filter, aggregation_name, filter_json, number, seconds};
use super::rfc3339;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComparatorName {
    Gt,
    Gte,
    Lt,
    Lte,
    Eq,
    Neq,
}

impl ComparatorName {
    fn pb(self) -> pb::Comparator {
        match self {
            Self::Gt => pb::Comparator::Gt,
            Self::Gte => pb::Comparator::Gte,
            Self::Lt => pb::Comparator::Lt,
            Self::Lte => pb::Comparator::Lte,
            Self::Eq => pb::Comparator::Eq,
            Self::Neq => pb::Comparator::Neq,
        }
    }
}

fn comparator_name(c: pb::Comparator) -> &'static str {
    match c {
        pb::Comparator::Gt => "gt",
        pb::Comparator::Gte => "gte",
        pb::Comparator::Lt => "lt",
        pb::Comparator::Lte => "lte",
        pb::Comparator::Eq => "eq",
        pb::Comparator::Neq => "neq",
        pb::Comparator::Unspecified => "unknown",
    }
}

pub fn state_name(s: pb::AlertState) -> &'static str {
    match s {
        pb::AlertState::Inactive => "inactive",
        pb::AlertState::Pending => "pending",
        pb::AlertState::Firing => "firing",
        pb::AlertState::Resolved => "resolved",
        pb::AlertState::NoData => "no_data",
        pb::AlertState::Unspecified => "unknown",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateName {
    Inactive,
    Pending,
    Firing,
    Resolved,
    NoData,
}

impl StateName {
    pub fn pb(self) -> pb::AlertState {
        match self {
            Self::Inactive => pb::AlertState::Inactive,
            Self::Pending => pb::AlertState::Pending,
            Self::Firing => pb::AlertState::Firing,
            Self::Resolved => pb::AlertState::Resolved,
            Self::NoData => pb::AlertState::NoData,
        }
    }
}

/// An alert rule as a client writes it (`POST`, and `PUT` with `version`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleBody {
    pub name: String,
    pub metric: String,
    pub aggregation: AggregationName,
    pub window_seconds: u64,
    pub comparator: ComparatorName,
    pub threshold: f64,
    #[serde(default)]
    pub for_seconds: u64,
    #[serde(default)]
    pub keep_firing_for_seconds: u64,
    #[serde(default)]
    pub filters: Vec<Filter>,
    #[serde(default)]
    pub group_by: Option<String>,
    #[serde(default = "enabled")]
    pub enabled: bool,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    #[serde(default)]
    pub webhook: Option<WebhookBody>,
    /// Only on `PUT`: the version the change was made from.
    #[serde(default)]
    pub version: Option<u64>,
}

fn enabled() -> bool {
    true
}

/// A rule's webhook as written; the secret is write-only (left out on
/// `PUT`: the rule keeps its current one).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookBody {
    pub url: String,
    #[serde(default)]
    pub secret: Option<String>,
}

impl RuleBody {
    pub fn spec(&self) -> Result<pb::AlertRuleSpec, String> {
        if self.group_by.as_deref() == Some("") {
            return Err("group_by must name a label, or be null for one instance".into());
        }
        Ok(pb::AlertRuleSpec {
            name: self.name.clone(),
            metric: self.metric.clone(),
            aggregation: self.aggregation.pb() as i32,
            window: Some(seconds(self.window_seconds)),
            comparator: self.comparator.pb() as i32,
            threshold: self.threshold,
            r#for: Some(seconds(self.for_seconds)),
            keep_firing_for: Some(seconds(self.keep_firing_for_seconds)),
            filters: self.filters.iter().map(Filter::pb).collect(),
            group_by: self.group_by.clone().unwrap_or_default(),
            enabled: self.enabled,
            annotations: self.annotations.clone(),
            webhook: self.webhook.as_ref().map(|w| pb::Webhook {
                url: w.url.clone(),
                secret: w.secret.clone().unwrap_or_default(),
            }),
        })
    }
}

fn whole_seconds(d: &Option<prost_types::Duration>) -> Value {
    json!(d.as_ref().map_or(0, |d| d.seconds))
}

pub fn rule_json(rule: &pb::AlertRule) -> Value {
    let spec = rule.spec.clone().unwrap_or_default();
    json!({
        "id": rule.id,
        "name": spec.name,
        "metric": spec.metric,
        "aggregation": aggregation_name(pb::Aggregation::try_from(spec.aggregation).unwrap_or_default()),
        "window_seconds": whole_seconds(&spec.window),
        "comparator": comparator_name(pb::Comparator::try_from(spec.comparator).unwrap_or_default()),
        "threshold": number(spec.threshold),
        "for_seconds": whole_seconds(&spec.r#for),
        "keep_firing_for_seconds": whole_seconds(&spec.keep_firing_for),
        "filters": spec.filters.iter().map(filter_json).collect::<Vec<_>>(),
        "group_by": if spec.group_by.is_empty() { Value::Null } else { Value::from(spec.group_by) },
        "enabled": spec.enabled,
        "annotations": spec.annotations,
        "webhook": spec.webhook.as_ref().map(|w| json!({ "url": w.url })),
        "version": rule.version,
        "created_at": rfc3339(&rule.created_at),
        "updated_at": rfc3339(&rule.updated_at),
    })
}

fn state_of(value: i32) -> &'static str {
    state_name(pb::AlertState::try_from(value).unwrap_or_default())
}

pub fn instance_json(i: &pb::AlertInstance) -> Value {
    json!({
        "rule_id": i.rule_id,
        "group": i.group,
        "state": state_of(i.state),
        "value": number(i.value),
        "active_since": rfc3339(&i.active_since),
        "last_evaluated_at": rfc3339(&i.last_evaluated_at),
        "version": i.version,
    })
}

/// A transition's fields (the history's items, and the body of a
/// `transition` frame).
pub fn transition_json(t: &pb::AlertTransition) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("rule_id".into(), json!(t.rule_id));
    body.insert("group".into(), json!(t.group));
    body.insert("from".into(), json!(state_of(t.from)));
    body.insert("to".into(), json!(state_of(t.to)));
    body.insert("value".into(), number(t.value));
    body.insert("at".into(), rfc3339(&t.at));
    body.insert("version".into(), json!(t.version));
    body.insert(
        "notification_job_id".into(),
        if t.notification_job_id.is_empty() {
            Value::Null
        } else {
            json!(t.notification_job_id)
        },
    );
    body
}
