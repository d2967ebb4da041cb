//! Alerts: protobuf ↔ domain (rule specs, instances, transitions).

use std::collections::BTreeMap;

use sextant_proto::analytics::v1 as pb;
use tonic::Status;

use super::rule::{
    Comparator, MAX_ANNOTATION_VALUE, MAX_ANNOTATIONS, MAX_HOLD, MAX_NAME, RuleSpec, SECRET_LEN, Webhook,
};
use super::state::State;
use super::store::{InstanceRow, Rule, TransitionRow};
use crate::convert::{
    aggregation, aggregation_pb, duration, invalid, matcher, matcher_pb, offset_timestamp, timestamp,
};
use crate::model::{self, valid_name};

fn comparator(value: i32) -> Option<Comparator> {
    Some(match pb::Comparator::try_from(value).ok()? {
        pb::Comparator::Unspecified => return None,
        pb::Comparator::Gt => Comparator::Gt,
        pb::Comparator::Gte => Comparator::Gte,
        pb::Comparator::Lt => Comparator::Lt,
        pb::Comparator::Lte => Comparator::Lte,
        pb::Comparator::Eq => Comparator::Eq,
        pb::Comparator::Neq => Comparator::Neq,
    })
}

fn comparator_pb(c: Comparator) -> pb::Comparator {
    match c {
        Comparator::Gt => pb::Comparator::Gt,
        Comparator::Gte => pb::Comparator::Gte,
        Comparator::Lt => pb::Comparator::Lt,
        Comparator::Lte => pb::Comparator::Lte,
        Comparator::Eq => pb::Comparator::Eq,
        Comparator::Neq => pb::Comparator::Neq,
    }
}

pub fn state_pb(s: State) -> pb::AlertState {
    match s {
        State::Inactive => pb::AlertState::Inactive,
        State::Pending => pb::AlertState::Pending,
        State::Firing => pb::AlertState::Firing,
        State::Resolved => pb::AlertState::Resolved,
        State::NoData => pb::AlertState::NoData,
    }
}

pub fn state(value: i32) -> Option<State> {
    Some(match pb::AlertState::try_from(value).ok()? {
        pb::AlertState::Unspecified => return None,
        pb::AlertState::Inactive => State::Inactive,
        pb::AlertState::Pending => State::Pending,
        pb::AlertState::Firing => State::Firing,
        pb::AlertState::Resolved => State::Resolved,
        pb::AlertState::NoData => State::NoData,
    })
}

/// A duration field of a spec: present or zero, not negative, at most `max`.
fn hold(d: Option<&prost_types::Duration>, field: &str, max: model::Micros) -> Result<model::Micros, Status> {
    let Some(d) = d else { return Ok(0) };
    let micros = duration(d).ok_or_else(|| invalid(format!("spec.{field} must not be negative")))?;
    if micros > max {
        return Err(invalid(format!(
            "spec.{field} must be at most {} s",
            max / model::SECOND
        )));
    }
    Ok(micros)
}

/// A spec as received, checked field by field (the checks that need the
/// service's configuration come after, in `RuleLimits::check`).
pub fn spec(s: pb::AlertRuleSpec) -> Result<RuleSpec, Status> {
    if s.name.is_empty() || s.name.chars().count() > MAX_NAME || s.name.contains('\0') {
        return Err(invalid(format!(
            "spec.name is required: 1 to {MAX_NAME} characters, without U+0000"
        )));
    }
    if !valid_name(&s.metric) {
        return Err(invalid(format!("spec.metric {:?} {}", s.metric, model::NAME_RULE)));
    }
    let aggregation = aggregation(s.aggregation)
        .ok_or_else(|| invalid("spec.aggregation must be one of count, sum, avg, min, max, p50, p90, p95, p99"))?;
    let window = s
        .window
        .as_ref()
        .and_then(duration)
        .filter(|w| *w > 0)
        .ok_or_else(|| invalid("spec.window is required and must be positive"))?;
    let comparator =
        comparator(s.comparator).ok_or_else(|| invalid("spec.comparator must be one of gt, gte, lt, lte, eq, neq"))?;
    if !s.threshold.is_finite() {
        return Err(invalid("spec.threshold must be a finite number"));
    }
    let for_ = hold(s.r#for.as_ref(), "for", MAX_HOLD)?;
    let keep_firing_for = hold(s.keep_firing_for.as_ref(), "keep_firing_for", MAX_HOLD)?;
    if s.filters.len() > 32 {
        return Err(invalid("spec.filters holds at most 32 matchers"));
    }
    let filters = s
        .filters
        .into_iter()
        .enumerate()
        .map(|(i, m)| matcher(m, &format!("spec.filters[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let group_by = match s.group_by.as_str() {
        "" => None,
        label if valid_name(label) => Some(label.to_owned()),
        label => return Err(invalid(format!("spec.group_by {label:?} {}", model::NAME_RULE))),
    };
    if s.annotations.len() > MAX_ANNOTATIONS {
        return Err(invalid(format!(
            "spec.annotations holds at most {MAX_ANNOTATIONS} entries"
        )));
    }
    for (key, value) in &s.annotations {
        if !valid_name(key) {
            return Err(invalid(format!("spec.annotations key {key:?} {}", model::NAME_RULE)));
        }
        if value.chars().count() > MAX_ANNOTATION_VALUE || value.contains('\0') {
            return Err(invalid(format!(
                "spec.annotations.{key} must be at most {MAX_ANNOTATION_VALUE} characters, without U+0000"
            )));
        }
    }
    let webhook = match s.webhook {
        None => None,
        Some(w) => {
            if w.url.is_empty() || w.url.len() > 2048 {
                return Err(invalid("spec.webhook.url is required: 1 to 2048 bytes"));
            }
            // Empty: keep the rule's current secret (checked on create and update).
            if !w.secret.is_empty() && !SECRET_LEN.contains(&w.secret.chars().count()) {
                return Err(invalid(format!(
                    "spec.webhook.secret must be {} to {} characters",
                    SECRET_LEN.start(),
                    SECRET_LEN.end()
                )));
            }
            Some(Webhook {
                url: w.url,
                secret: w.secret,
            })
        }
    };
    Ok(RuleSpec {
        name: s.name,
        metric: s.metric,
        aggregation,
        window,
        comparator,
        threshold: s.threshold,
        for_,
        keep_firing_for,
        filters,
        group_by,
        enabled: s.enabled,
        annotations: s.annotations.into_iter().collect::<BTreeMap<_, _>>(),
        webhook,
    })
}

fn duration_pb(micros: model::Micros) -> prost_types::Duration {
    prost_types::Duration {
        seconds: micros.div_euclid(model::SECOND),
        nanos: i32::try_from(micros.rem_euclid(model::SECOND) * 1000).unwrap_or(0),
    }
}

pub fn spec_pb(s: &RuleSpec) -> pb::AlertRuleSpec {
    pb::AlertRuleSpec {
        name: s.name.clone(),
        metric: s.metric.clone(),
        aggregation: aggregation_pb(s.aggregation) as i32,
        window: Some(duration_pb(s.window)),
        comparator: comparator_pb(s.comparator) as i32,
        threshold: s.threshold,
        r#for: Some(duration_pb(s.for_)),
        keep_firing_for: Some(duration_pb(s.keep_firing_for)),
        filters: s.filters.iter().map(matcher_pb).collect(),
        group_by: s.group_by.clone().unwrap_or_default(),
        enabled: s.enabled,
        annotations: s.annotations.clone().into_iter().collect(),
        // The secret is write-only.
        webhook: s.webhook.as_ref().map(|w| pb::Webhook {
            url: w.url.clone(),
            secret: String::new(),
        }),
    }
}

pub fn rule_pb(r: &Rule) -> pb::AlertRule {
    pb::AlertRule {
        id: r.id.to_string(),
        spec: Some(spec_pb(&r.spec)),
        created_at: Some(offset_timestamp(r.created_at)),
        updated_at: Some(offset_timestamp(r.updated_at)),
        version: u64::try_from(r.version).unwrap_or(0),
    }
}

pub fn instance_pb(i: &InstanceRow) -> pb::AlertInstance {
    pb::AlertInstance {
        rule_id: i.rule_id.to_string(),
        group: i.group.clone(),
        state: state_pb(i.state) as i32,
        value: i.value.unwrap_or(f64::NAN),
        active_since: i.active_since.map(offset_timestamp),
        last_evaluated_at: Some(offset_timestamp(i.last_evaluated_at)),
        version: u64::try_from(i.version).unwrap_or(0),
    }
}

pub fn transition_pb(t: &TransitionRow) -> pb::AlertTransition {
    pb::AlertTransition {
        rule_id: t.rule_id.to_string(),
        group: t.group.clone(),
        from: state_pb(t.from) as i32,
        to: state_pb(t.to) as i32,
        value: t.value.unwrap_or(f64::NAN),
        at: Some(timestamp(model::micros_of(t.at))),
        version: u64::try_from(t.version).unwrap_or(0),
        notification_job_id: t.notification_job_id.map(|id| id.to_string()).unwrap_or_default(),
    }
}
