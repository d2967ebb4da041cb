//! Alert rules: their CRUD, their evaluation, and the watches that follow
//! their instances.
//!
//! - `rule`: the spec and its checks; `state`: the state machine (Prometheus
//!   alerting semantics plus `no_data`), pure;
//! - `store`: rules, instances and history in PostgreSQL;
//! - `evaluator`: the per-replica loop that claims and evaluates rules;
//! - `notifier`: hands queued webhook notifications to the jobs service;
//! - `watch`: `WatchAlerts` streams.
//!
//! [`Alerts`] is what the gRPC API calls; it never picks a status code of
//! its own beyond the shared table.

pub mod convert;
pub mod evaluator;
pub mod notifier;
pub mod rule;
pub mod state;
pub mod store;
pub mod watch;

use sextant_common::ErrorCode;
use sextant_common::db;
use sextant_proto::analytics::v1 as pb;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use uuid::Uuid;

use crate::convert::{invalid, page_of, page_size};
use crate::metrics::live::Live;
use crate::versioned::{self, Changed};
use convert::{instance_pb, rule_pb, spec, state, transition_pb};
use rule::RuleLimits;

/// What a database failure names, for the caller.
const STORE: &str = "the alert store";

#[derive(Clone)]
pub struct Alerts {
    pub pool: PgPool,
    pub live: Live,
    pub limits: RuleLimits,
}

/// A rule id; anything that is not one names no rule of the caller's (404).
fn rule_id(id: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(id).map_err(|_| not_found())
}

fn not_found() -> Status {
    ErrorCode::NotFound.status("no such alert rule")
}

/// An optional rule filter: empty for all; a malformed id matches nothing
/// the caller has, so it is a 404 like an unknown one.
fn rule_filter(id: &str) -> Result<Option<Uuid>, Status> {
    if id.is_empty() { Ok(None) } else { rule_id(id).map(Some) }
}

fn cursor_error() -> Status {
    invalid("page.cursor is malformed")
}

impl Alerts {
    fn checked(&self, s: Option<pb::AlertRuleSpec>) -> Result<rule::RuleSpec, Status> {
        let s = spec(s.ok_or_else(|| invalid("spec is required"))?)?;
        self.limits.check(&s).map_err(invalid)?;
        Ok(s)
    }

    pub async fn create(&self, tenant: &str, r: pb::CreateAlertRuleRequest) -> Result<pb::AlertRule, Status> {
        let s = self.checked(r.spec)?;
        if s.webhook.as_ref().is_some_and(|w| w.secret.is_empty()) {
            return Err(invalid("spec.webhook.secret is required"));
        }
        let rule = store::create(&self.pool, tenant, &s)
            .await
            .map_err(db::unavailable(STORE))?;
        Ok(rule_pb(&rule))
    }

    pub async fn get(&self, tenant: &str, r: pb::GetAlertRuleRequest) -> Result<pb::AlertRule, Status> {
        let id = rule_id(&r.id)?;
        let rule = store::get(&self.pool, tenant, id)
            .await
            .map_err(db::unavailable(STORE))?;
        rule.map(|r| rule_pb(&r)).ok_or_else(not_found)
    }

    pub async fn list(&self, tenant: &str, r: pb::ListAlertRulesRequest) -> Result<pb::ListAlertRulesResponse, Status> {
        let page = r.page.unwrap_or_default();
        let size = page_size(page.page_size)?;
        let after = match page.cursor.as_str() {
            "" => None,
            c => Some(Uuid::parse_str(c).map_err(|_| cursor_error())?),
        };
        let rules = store::list(&self.pool, tenant, after, size + 1)
            .await
            .map_err(db::unavailable(STORE))?;
        let (rules, page) = page_of(rules, size, |last| last.id.to_string());
        Ok(pb::ListAlertRulesResponse {
            rules: rules.iter().map(rule_pb).collect(),
            page: Some(page),
        })
    }

    pub async fn update(&self, tenant: &str, r: pb::UpdateAlertRuleRequest) -> Result<pb::AlertRule, Status> {
        let id = rule_id(&r.id)?;
        let mut s = self.checked(r.spec)?;
        if let Some(webhook) = s.webhook.as_mut().filter(|w| w.secret.is_empty()) {
            // An empty secret keeps the rule's current one.
            let current = store::get(&self.pool, tenant, id)
                .await
                .map_err(db::unavailable(STORE))?
                .ok_or_else(not_found)?;
            webhook.secret = current
                .spec
                .webhook
                .map(|w| w.secret)
                .ok_or_else(|| invalid("spec.webhook.secret is required: the rule has no webhook yet"))?;
        }
        let expected = i64::try_from(r.expected_version)
            .ok()
            .filter(|v| *v >= 1)
            .ok_or_else(|| invalid("expected_version is required: the version the update was made from"))?;
        match store::update(&self.pool, tenant, id, &s, expected)
            .await
            .map_err(db::unavailable(STORE))?
        {
            Changed::Done(rule) => Ok(rule_pb(&rule)),
            Changed::NotFound => Err(not_found()),
            Changed::Stale(current) => Err(versioned::stale("rule", current, expected)),
        }
    }

    pub async fn delete(&self, tenant: &str, r: pb::DeleteAlertRuleRequest) -> Result<(), Status> {
        let id = rule_id(&r.id)?;
        if store::delete(&self.pool, tenant, id)
            .await
            .map_err(db::unavailable(STORE))?
        {
            Ok(())
        } else {
            Err(not_found())
        }
    }

    /// A rule filter must name one of the caller's rules.
    async fn existing(&self, tenant: &str, id: &str) -> Result<Option<Uuid>, Status> {
        let Some(id) = rule_filter(id)? else {
            return Ok(None);
        };
        match store::get(&self.pool, tenant, id)
            .await
            .map_err(db::unavailable(STORE))?
        {
            Some(_) => Ok(Some(id)),
            None => Err(not_found()),
        }
    }

    pub async fn instances(
        &self,
        tenant: &str,
        r: pb::ListAlertInstancesRequest,
    ) -> Result<pb::ListAlertInstancesResponse, Status> {
        let rule = self.existing(tenant, &r.rule_id).await?;
        let states = r
            .states
            .iter()
            .map(|s| state(*s).ok_or_else(|| invalid(format!("states: unknown state {s}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let page = r.page.unwrap_or_default();
        let size = page_size(page.page_size)?;
        let after = match page.cursor.split_once('/') {
            None if page.cursor.is_empty() => None,
            Some((rule, group)) => Some((Uuid::parse_str(rule).map_err(|_| cursor_error())?, group.to_owned())),
            None => return Err(cursor_error()),
        };
        let rows = store::list_instances(&self.pool, tenant, rule, &states, after, size + 1)
            .await
            .map_err(db::unavailable(STORE))?;
        let (rows, page) = page_of(rows, size, |last| format!("{}/{}", last.rule_id, last.group));
        Ok(pb::ListAlertInstancesResponse {
            instances: rows.iter().map(instance_pb).collect(),
            page: Some(page),
        })
    }

    pub async fn history(
        &self,
        tenant: &str,
        r: pb::ListAlertHistoryRequest,
    ) -> Result<pb::ListAlertHistoryResponse, Status> {
        let rule = self.existing(tenant, &r.rule_id).await?;
        let range = r.range.unwrap_or_default();
        let time = |t: Option<prost_types::Timestamp>, field: &str| {
            t.map(|t| crate::convert::micros(&t).ok_or_else(|| invalid(format!("range.{field} is not a valid time"))))
                .transpose()
        };
        let from = time(range.start, "start")?;
        let to = time(range.end, "end")?;
        if let (Some(from), Some(to)) = (from, to)
            && from > to
        {
            return Err(invalid("range.start must not be after range.end"));
        }
        let page = r.page.unwrap_or_default();
        let size = page_size(page.page_size)?;
        let after = match page.cursor.as_str() {
            "" => 0,
            c => c.parse::<i64>().map_err(|_| cursor_error())?,
        };
        let rows = store::history(&self.pool, tenant, rule, (from, to), after, size + 1)
            .await
            .map_err(db::unavailable(STORE))?;
        let (rows, page) = page_of(rows, size, |last| last.version.to_string());
        Ok(pb::ListAlertHistoryResponse {
            transitions: rows.iter().map(transition_pb).collect(),
            page: Some(page),
        })
    }

    pub async fn watch(
        &self,
        tenant: String,
        r: pb::WatchAlertsRequest,
        shutdown: CancellationToken,
    ) -> Result<mpsc::Receiver<Result<pb::WatchAlertsResponse, Status>>, Status> {
        let rule = self.existing(&tenant, &r.rule_id).await?;
        Ok(watch::start(&self.live, tenant, rule, r.after_version, shutdown))
    }
}
