//! The evaluator: every `analytics.alerts.interval`, at times T aligned to
//! the epoch, each replica claims its share of the enabled rules (the rules
//! over the replicas that ticked within a lease): it renews its own, gives
//! up those beyond its share, and claims ones nobody holds, for 1.5
//! intervals; then it evaluates each at T.
//!
//! Exactly one evaluator per rule: a claim is a lease in the rule's row; an
//! evaluation runs in one transaction that locks the row and goes ahead only
//! if this replica still holds it and the rule was not yet evaluated at T.
//! So a replica that stalls past its lease finds the rule taken and records
//! nothing, and re-evaluating a T never records a transition twice.
//!
//! Nothing is skipped on a takeover: a rule is evaluated at every T after its
//! `evaluated_at` in turn (at most `max_catch_up` of them), so the history is
//! what one uninterrupted evaluator would have written. A replica that dies
//! is replaced within two intervals: its leases lapse 1.5 intervals after
//! its last renewal, and the next tick of another replica claims them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;

use anyhow::Context as _;
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::notifier::sign;
use super::rule::RuleSpec;
use super::state::{Instance, Observed, State, step};
use super::store::{self, Notification, Outcome};
use crate::metrics::live::Live;
use crate::metrics::store::read::{self, Limits};
use crate::model::{MINUTE, Micros, Query, floor_to, now_micros, rfc3339};

/// Rules one replica claims per tick at most.
const CLAIM_LIMIT: i64 = 10_000;

#[derive(Debug, Clone, Copy)]
pub struct EvaluatorSettings {
    pub interval: Micros,
    pub max_catch_up: u32,
    pub limits: Limits,
}

pub struct Evaluator {
    pub pool: PgPool,
    /// This replica's name in `alert_rules.owner`.
    pub owner: String,
    pub settings: EvaluatorSettings,
    pub live: Live,
    /// Cues the notifier when an evaluation queued webhook notifications.
    pub notify: Arc<Notify>,
}

impl Evaluator {
    pub fn new(pool: PgPool, settings: EvaluatorSettings, live: Live, notify: Arc<Notify>) -> Self {
        Self {
            pool,
            owner: Uuid::new_v4().to_string(),
            settings,
            live,
            notify,
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let interval = self.settings.interval;
        loop {
            let now = now_micros();
            let t = floor_to(now, interval) + interval;
            let wait = Duration::from_micros(u64::try_from(t - now).unwrap_or(0));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
            if let Err(error) = self.tick(t, &shutdown).await {
                tracing::warn!(error = %format!("{error:#}"), "alert evaluation failed; retrying next tick");
            }
        }
        // Hand the rules over now rather than when the leases lapse.
        match store::release(&self.pool, &self.owner).await {
            Ok(n) => tracing::info!(rules = n, "alert rules released"),
            Err(error) => tracing::warn!(%error, "releasing alert rules failed; their leases will lapse"),
        }
    }

    async fn tick(&self, t: Micros, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let lease = self.settings.interval * 3 / 2;
        // Each replica evaluates its share: one that joined gets rules that
        // others give up; one that died leaves its rules to the others.
        let share = store::share(&self.pool, &self.owner, lease)
            .await
            .context("counting the evaluators")?;
        let released = store::release_beyond(&self.pool, &self.owner, share)
            .await
            .context("releasing alert rules beyond this replica's share")?;
        if released > 0 {
            tracing::info!(rules = released, share, "alert rules handed over to other replicas");
        }
        let rules = store::claim(&self.pool, &self.owner, lease, share.min(CLAIM_LIMIT))
            .await
            .context("claiming alert rules")?;
        let metrics = &self.live.metrics;
        metrics.alert_rules_claimed.set(rules.len() as i64);
        for (tenant, id) in rules {
            if shutdown.is_cancelled() {
                break;
            }
            if let Err(error) = self.evaluate_rule(&tenant, id, t).await {
                tracing::warn!(%tenant, rule_id = %id, error = %format!("{error:#}"), "evaluating an alert rule failed");
            }
        }
        Ok(())
    }

    /// Evaluates the rule at every due T up to `t`, oldest first.
    async fn evaluate_rule(&self, tenant: &str, id: Uuid, t: Micros) -> anyhow::Result<()> {
        loop {
            // One trace per evaluation: its notifications continue it.
            let span = tracing::info_span!(
                "alert evaluation",
                otel.name = "evaluate alert rule",
                alert.rule_id = %id,
                sextant.tenant = %tenant,
            );
            if !self.evaluate_once(tenant, id, t).instrument(span).await? {
                break;
            }
        }
        Ok(())
    }

    /// One transaction: locks the rule and evaluates its first due T (≤ `t`).
    /// `true` when that was not `t`, so more are due.
    async fn evaluate_once(&self, tenant: &str, id: Uuid, t: Micros) -> anyhow::Result<bool> {
        let interval = self.settings.interval;
        let mut tx = self.pool.begin().await.context("beginning an evaluation")?;
        let Some(rule) = store::lock(&mut tx, tenant, id).await.context("locking the rule")? else {
            return Ok(false);
        };
        if rule.owner.as_deref() != Some(self.owner.as_str()) || !rule.spec.enabled {
            return Ok(false);
        }
        let oldest = t - interval * Micros::from(self.settings.max_catch_up);
        let at = match rule.evaluated_at {
            None => t,
            Some(last) if last >= t => return Ok(false),
            Some(last) => {
                let first = floor_to(last, interval) + interval;
                if first < oldest {
                    tracing::warn!(%tenant, rule_id = %id, missed = (oldest - first) / interval,
                        "alert evaluations too far behind to catch up; skipping to the newest");
                    oldest
                } else {
                    first
                }
            }
        };
        let outcomes = self.observe(tenant, id, &rule.spec, at, &mut tx).await?;
        let versions = store::record(&mut tx, tenant, id, at, &outcomes)
            .await
            .context("recording the evaluation")?;
        let notifications = notifications(id, &rule.spec, at, &outcomes, &versions);
        store::enqueue(&mut tx, tenant, id, &notifications)
            .await
            .context("queueing notifications")?;
        tx.commit().await.context("committing the evaluation")?;
        let metrics = &self.live.metrics;
        metrics.alert_evaluations.inc();
        metrics.alert_transitions.inc_by(versions.len() as u64);
        metrics
            .alert_evaluation_lag
            .observe((now_micros() - at).max(0) as f64 / 1e6);
        if !notifications.is_empty() {
            self.notify.notify_one();
        }
        if let Some((_, version)) = versions.last() {
            self.live.announce_alerts(tenant, u64::try_from(*version).unwrap_or(0));
        }
        Ok(at < t)
    }

    /// Evaluates the rule's condition at `at` for every group.
    async fn observe(
        &self,
        tenant: &str,
        id: Uuid,
        spec: &RuleSpec,
        at: Micros,
        tx: &mut sqlx::PgConnection,
    ) -> anyhow::Result<Vec<Outcome>> {
        let query = Query {
            metric: spec.metric.clone(),
            aggregations: vec![spec.aggregation],
            bucket: MINUTE,
            start: at - spec.window,
            end: at,
            filters: spec.filters.clone(),
            group_by: spec.group_by.clone(),
        };
        let (groups, aggs) = read::window(&self.pool, tenant, &query, &self.settings.limits)
            .await
            .map_err(|e| anyhow::anyhow!("reading the window: {e}"))?;
        let previous: BTreeMap<String, Instance> = store::instances(tx, tenant, id)
            .await
            .context("reading the instances")?
            .into_iter()
            .collect();
        // One instance per group: the groups the metric has now, the ones
        // that had instances before, and "" for a rule that groups nothing.
        let mut all: BTreeSet<&str> = groups.iter().map(String::as_str).collect();
        all.extend(previous.keys().map(String::as_str));
        if spec.group_by.is_none() {
            all.insert("");
        }
        let values: BTreeMap<&str, f64> = aggs
            .iter()
            .map(|(g, agg)| (groups[*g].as_str(), agg.value(spec.aggregation)))
            .filter(|(_, v)| !v.is_nan())
            .collect();
        Ok(all
            .into_iter()
            .map(|group| {
                let before = previous.get(group).unwrap_or(&Instance::NEW);
                let value = values.get(group).copied();
                let observed = match value {
                    None => Observed::NoData,
                    Some(v) => Observed::Holds(spec.comparator.holds(v, spec.threshold)),
                };
                Outcome {
                    group: group.to_owned(),
                    before: before.state,
                    after: step(before, observed, at, spec.timing()),
                    value,
                }
            })
            .collect())
    }
}

/// The webhook notifications of an evaluation: one per transition into
/// `firing` and per transition out of it (to `resolved` or `no_data`), signed.
fn notifications(
    rule: Uuid,
    spec: &RuleSpec,
    at: Micros,
    outcomes: &[Outcome],
    versions: &[(usize, i64)],
) -> Vec<Notification> {
    let Some(webhook) = &spec.webhook else {
        return Vec::new();
    };
    versions
        .iter()
        .filter_map(|(i, version)| {
            let o = &outcomes[*i];
            let notify = (o.after.state == State::Firing) != (o.before == State::Firing);
            notify.then(|| {
                let body = json!({
                    "rule_id": rule,
                    "rule_name": spec.name,
                    "metric": spec.metric,
                    "group": o.group,
                    "from": o.before.as_str(),
                    "to": o.after.state.as_str(),
                    "value": o.value,
                    "at": rfc3339(at),
                    "version": version,
                    "annotations": spec.annotations,
                })
                .to_string();
                Notification {
                    version: *version,
                    url: webhook.url.clone(),
                    signature: sign(&webhook.secret, &body),
                    body,
                }
            })
        })
        .collect()
}
