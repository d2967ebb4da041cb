//! Alert rules, instances and history in PostgreSQL: the CRUD behind the
//! API, the evaluator's claims and its one transaction per evaluation, and
//! the reads behind `WatchAlerts`.

use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::rule::RuleSpec;
use super::state::{Instance, State};
use crate::model::{Micros, datetime, micros_of};
use crate::versioned::{self, Changed};

/// A stored rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: Uuid,
    pub spec: RuleSpec,
    pub version: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

type RuleRow = (Uuid, sqlx::types::Json<RuleSpec>, i64, OffsetDateTime, OffsetDateTime);

fn rule((id, spec, version, created_at, updated_at): RuleRow) -> Rule {
    Rule {
        id,
        spec: spec.0,
        version,
        created_at,
        updated_at,
    }
}

const RULE_COLUMNS: &str = "id, spec, version, created_at, updated_at";

pub async fn create(pool: &PgPool, tenant: &str, spec: &RuleSpec) -> Result<Rule, sqlx::Error> {
    let row: RuleRow = sqlx::query_as(&format!(
        "INSERT INTO alert_rules (tenant, id, spec, enabled) VALUES ($1, $2, $3, $4) RETURNING {RULE_COLUMNS}"
    ))
    .bind(tenant)
    .bind(Uuid::now_v7())
    .bind(sqlx::types::Json(spec))
    .bind(spec.enabled)
    .fetch_one(pool)
    .await?;
    Ok(rule(row))
}

pub async fn get(pool: &PgPool, tenant: &str, id: Uuid) -> Result<Option<Rule>, sqlx::Error> {
    let row: Option<RuleRow> = sqlx::query_as(&format!(
        "SELECT {RULE_COLUMNS} FROM alert_rules WHERE tenant = $1 AND id = $2"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(rule))
}

/// Rules after `after` in id (creation) order.
pub async fn list(pool: &PgPool, tenant: &str, after: Option<Uuid>, limit: i64) -> Result<Vec<Rule>, sqlx::Error> {
    let rows: Vec<RuleRow> = sqlx::query_as(&format!(
        "SELECT {RULE_COLUMNS} FROM alert_rules WHERE tenant = $1 AND ($2::uuid IS NULL OR id > $2)
         ORDER BY id LIMIT $3"
    ))
    .bind(tenant)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(rule).collect())
}

/// Replaces the spec if the rule is at `expected` (optimistic concurrency).
pub async fn update(
    pool: &PgPool,
    tenant: &str,
    id: Uuid,
    spec: &RuleSpec,
    expected: i64,
) -> Result<Changed<Box<Rule>>, sqlx::Error> {
    let row: Option<RuleRow> = sqlx::query_as(&format!(
        "UPDATE alert_rules SET spec = $3, enabled = $4, version = version + 1, updated_at = now(),
           -- Enabled again: evaluation starts at the next T, not over the time it was off.
           evaluated_at = CASE WHEN enabled THEN evaluated_at END
         WHERE tenant = $1 AND id = $2 AND version = $5 RETURNING {RULE_COLUMNS}"
    ))
    .bind(tenant)
    .bind(id)
    .bind(sqlx::types::Json(spec))
    .bind(spec.enabled)
    .bind(expected)
    .fetch_optional(pool)
    .await?;
    if let Some(row) = row {
        return Ok(Changed::Done(Box::new(rule(row))));
    }
    versioned::unchanged(pool, "alert_rules", tenant, id).await
}

/// Deletes a rule with its instances and history; `false` when there was none.
pub async fn delete(pool: &PgPool, tenant: &str, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM alert_rules WHERE tenant = $1 AND id = $2")
        .bind(tenant)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

// ---------- evaluation ----------

/// Claims (or renews) up to `limit` enabled rules for `owner` until
/// `now + lease`: the ones it holds and the ones nobody holds. Returns them.
pub async fn claim(pool: &PgPool, owner: &str, lease: Micros, limit: i64) -> Result<Vec<(String, Uuid)>, sqlx::Error> {
    // Its own rules first (renewed), then free ones: a replica at its share
    // keeps what it has.
    sqlx::query_as(
        "UPDATE alert_rules r SET owner = $1, lease_until = now() + make_interval(secs => $2::float8 / 1e6)
         FROM (SELECT tenant, id FROM alert_rules
               WHERE enabled AND (owner = $1 OR lease_until IS NULL OR lease_until < now())
               ORDER BY owner IS NOT DISTINCT FROM $1 DESC, lease_until NULLS FIRST
               FOR UPDATE SKIP LOCKED LIMIT $3) due
         WHERE r.tenant = due.tenant AND r.id = due.id
         RETURNING r.tenant, r.id",
    )
    .bind(owner)
    .bind(lease as f64)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Notes that this replica ticked, and answers its share of the enabled
/// rules: their number over the replicas seen within `lease` (itself too).
/// A replica that died stops counting when its rules' leases lapse, so the
/// others take them over at their next tick.
pub async fn share(pool: &PgPool, owner: &str, lease: Micros) -> Result<i64, sqlx::Error> {
    sqlx::query(
        "INSERT INTO alert_evaluators (owner, seen_at) VALUES ($1, now())
         ON CONFLICT (owner) DO UPDATE SET seen_at = now()",
    )
    .bind(owner)
    .execute(pool)
    .await?;
    sqlx::query_scalar(
        "SELECT ceil((SELECT count(*) FROM alert_rules WHERE enabled)::float8
                     / greatest(1, (SELECT count(*) FROM alert_evaluators
                                    WHERE seen_at > now() - make_interval(secs => $1::float8 / 1e6))))::bigint",
    )
    .bind(lease as f64)
    .fetch_one(pool)
    .await
}

/// Gives up the rules this replica holds beyond `share` (a replica joined),
/// so that others claim them at their next tick.
pub async fn release_beyond(pool: &PgPool, owner: &str, share: i64) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE alert_rules r SET owner = NULL, lease_until = NULL
         FROM (SELECT tenant, id FROM alert_rules WHERE owner = $1 AND enabled
               ORDER BY tenant, id OFFSET $2) extra
         WHERE r.tenant = extra.tenant AND r.id = extra.id AND r.owner = $1",
    )
    .bind(owner)
    .bind(share)
    .execute(pool)
    .await?
    .rows_affected())
}

/// Gives a replica's claims up (on shutdown), so another takes over at once,
/// and takes it out of the replicas the rules are shared by.
pub async fn release(pool: &PgPool, owner: &str) -> Result<u64, sqlx::Error> {
    sqlx::query("DELETE FROM alert_evaluators WHERE owner = $1 OR seen_at < now() - interval '1 day'")
        .bind(owner)
        .execute(pool)
        .await?;
    Ok(
        sqlx::query("UPDATE alert_rules SET owner = NULL, lease_until = NULL WHERE owner = $1")
            .bind(owner)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}

/// A rule as one evaluation sees it, locked for the evaluation's transaction.
pub struct Locked {
    pub spec: RuleSpec,
    pub evaluated_at: Option<Micros>,
    pub owner: Option<String>,
}

pub async fn lock(tx: &mut PgConnection, tenant: &str, id: Uuid) -> Result<Option<Locked>, sqlx::Error> {
    let row: Option<(sqlx::types::Json<RuleSpec>, Option<OffsetDateTime>, Option<String>)> =
        sqlx::query_as("SELECT spec, evaluated_at, owner FROM alert_rules WHERE tenant = $1 AND id = $2 FOR UPDATE")
            .bind(tenant)
            .bind(id)
            .fetch_optional(tx)
            .await?;
    Ok(row.map(|(spec, evaluated_at, owner)| Locked {
        spec: spec.0,
        evaluated_at: evaluated_at.map(micros_of),
        owner,
    }))
}

/// Per group, the instance as the last evaluation left it.
pub async fn instances(
    tx: &mut PgConnection,
    tenant: &str,
    rule: Uuid,
) -> Result<Vec<(String, Instance)>, sqlx::Error> {
    let rows: Vec<(String, String, Option<OffsetDateTime>, Option<OffsetDateTime>)> = sqlx::query_as(
        "SELECT grp, state, active_since, keep_firing_since FROM alert_instances
         WHERE tenant = $1 AND rule_id = $2",
    )
    .bind(tenant)
    .bind(rule)
    .fetch_all(tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(group, state, active_since, keep_firing_since)| {
            (
                group,
                Instance {
                    state: State::parse(&state).unwrap_or(State::Inactive),
                    active_since: active_since.map(micros_of),
                    keep_firing_since: keep_firing_since.map(micros_of),
                },
            )
        })
        .collect())
}

/// One group's outcome of an evaluation at `at`.
pub struct Outcome {
    pub group: String,
    pub before: State,
    pub after: Instance,
    /// The aggregation's value; `None` for no data.
    pub value: Option<f64>,
}

/// Writes an evaluation at `at`: every instance, a history row per state
/// change (numbered by the tenant's alert version), and the rule's
/// `evaluated_at`. Returns the version given to each outcome that changed
/// state (by index into `outcomes`), oldest first.
pub async fn record(
    tx: &mut Transaction<'_, Postgres>,
    tenant: &str,
    rule: Uuid,
    at: Micros,
    outcomes: &[Outcome],
) -> Result<Vec<(usize, i64)>, sqlx::Error> {
    let changed: Vec<&Outcome> = outcomes.iter().filter(|o| o.before != o.after.state).collect();
    let mut first_version = 0;
    if !changed.is_empty() {
        let n = changed.len() as i64;
        let top: i64 = sqlx::query_scalar(
            "INSERT INTO alert_streams (tenant, version) VALUES ($1, $2)
             ON CONFLICT (tenant) DO UPDATE SET version = alert_streams.version + $2
             RETURNING version",
        )
        .bind(tenant)
        .bind(n)
        .fetch_one(&mut **tx)
        .await?;
        first_version = top - n + 1;
    }
    let mut version_of = std::collections::HashMap::new();
    for (i, o) in changed.iter().enumerate() {
        version_of.insert(o.group.as_str(), first_version + i as i64);
    }
    if !changed.is_empty() {
        sqlx::query(
            "INSERT INTO alert_history (tenant, version, rule_id, grp, from_state, to_state, value, at)
             SELECT $1, v, $2, g, f, t, val, $3
             FROM unnest($4::int8[], $5::text[], $6::text[], $7::text[], $8::float8[]) AS x(v, g, f, t, val)",
        )
        .bind(tenant)
        .bind(rule)
        .bind(datetime(at))
        .bind(changed.iter().map(|o| version_of[o.group.as_str()]).collect::<Vec<_>>())
        .bind(changed.iter().map(|o| o.group.as_str()).collect::<Vec<_>>())
        .bind(changed.iter().map(|o| o.before.as_str()).collect::<Vec<_>>())
        .bind(changed.iter().map(|o| o.after.state.as_str()).collect::<Vec<_>>())
        .bind(changed.iter().map(|o| o.value).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    let opt_time = |m: Option<Micros>| m.map(datetime);
    sqlx::query(
        "INSERT INTO alert_instances AS i (tenant, rule_id, grp, state, value, active_since, keep_firing_since,
                                           last_evaluated_at, version)
         SELECT $1, $2, g, s, val, a, k, $3, coalesce(v, 0)
         FROM unnest($4::text[], $5::text[], $6::float8[], $7::timestamptz[], $8::timestamptz[], $9::int8[])
              AS x(g, s, val, a, k, v)
         ON CONFLICT (tenant, rule_id, grp) DO UPDATE SET
           state = excluded.state, value = excluded.value, active_since = excluded.active_since,
           keep_firing_since = excluded.keep_firing_since, last_evaluated_at = excluded.last_evaluated_at,
           version = CASE WHEN excluded.version > 0 THEN excluded.version ELSE i.version END",
    )
    .bind(tenant)
    .bind(rule)
    .bind(datetime(at))
    .bind(outcomes.iter().map(|o| o.group.as_str()).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.after.state.as_str()).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.value).collect::<Vec<_>>())
    .bind(
        outcomes
            .iter()
            .map(|o| opt_time(o.after.active_since))
            .collect::<Vec<_>>(),
    )
    .bind(
        outcomes
            .iter()
            .map(|o| opt_time(o.after.keep_firing_since))
            .collect::<Vec<_>>(),
    )
    .bind(
        outcomes
            .iter()
            .map(|o| version_of.get(o.group.as_str()).copied())
            .collect::<Vec<_>>(),
    )
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE alert_rules SET evaluated_at = $3 WHERE tenant = $1 AND id = $2")
        .bind(tenant)
        .bind(rule)
        .bind(datetime(at))
        .execute(&mut **tx)
        .await?;
    Ok(outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, o)| version_of.get(o.group.as_str()).map(|v| (i, *v)))
        .collect())
}

/// A webhook notification to send, as written with its transition.
pub struct Notification {
    pub version: i64,
    pub url: String,
    pub body: String,
    pub signature: String,
}

/// Queues notifications in the evaluation's transaction (the outbox).
pub async fn enqueue(
    tx: &mut Transaction<'_, Postgres>,
    tenant: &str,
    rule: Uuid,
    notifications: &[Notification],
) -> Result<(), sqlx::Error> {
    if notifications.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO alert_notifications (tenant, version, rule_id, url, body, signature, trace_context)
         SELECT $1, v, $2, u, b, s, $7 FROM unnest($3::int8[], $4::text[], $5::text[], $6::text[]) AS x(v, u, b, s)",
    )
    .bind(tenant)
    .bind(rule)
    .bind(notifications.iter().map(|n| n.version).collect::<Vec<_>>())
    .bind(notifications.iter().map(|n| n.url.as_str()).collect::<Vec<_>>())
    .bind(notifications.iter().map(|n| n.body.as_str()).collect::<Vec<_>>())
    .bind(notifications.iter().map(|n| n.signature.as_str()).collect::<Vec<_>>())
    // The evaluation's trace, continued by the submit and the delivery.
    .bind(sextant_common::telemetry::current_traceparent())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A queued notification not yet handed to the jobs service.
#[derive(Debug, sqlx::FromRow)]
pub struct Pending {
    pub tenant: String,
    pub version: i64,
    pub rule_id: Uuid,
    pub url: String,
    pub body: String,
    pub signature: String,
    pub trace_context: Option<String>,
}

/// Locks up to `limit` unsubmitted notifications, oldest first.
pub async fn pending(tx: &mut PgConnection, limit: i64) -> Result<Vec<Pending>, sqlx::Error> {
    sqlx::query_as(
        "SELECT tenant, version, rule_id, url, body, signature, trace_context FROM alert_notifications
         WHERE job_id IS NULL ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(tx)
    .await
}

pub async fn submitted(tx: &mut PgConnection, tenant: &str, version: i64, job: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE alert_notifications SET job_id = $3 WHERE tenant = $1 AND version = $2")
        .bind(tenant)
        .bind(version)
        .bind(job)
        .execute(tx)
        .await?;
    Ok(())
}

// ---------- reads ----------

/// An instance as listed and watched.
#[derive(Debug, Clone)]
pub struct InstanceRow {
    pub rule_id: Uuid,
    pub group: String,
    pub state: State,
    pub value: Option<f64>,
    pub active_since: Option<OffsetDateTime>,
    pub last_evaluated_at: OffsetDateTime,
    pub version: i64,
}

type InstanceTuple = (
    Uuid,
    String,
    String,
    Option<f64>,
    Option<OffsetDateTime>,
    OffsetDateTime,
    i64,
);

fn instance_row(
    (rule_id, group, state, value, active_since, last_evaluated_at, version): InstanceTuple,
) -> InstanceRow {
    InstanceRow {
        rule_id,
        group,
        state: State::parse(&state).unwrap_or(State::Inactive),
        value,
        active_since,
        last_evaluated_at,
        version,
    }
}

/// Instances of one rule (or all), in some states (or all), after the
/// cursor `(rule, group)`, in that order.
pub async fn list_instances(
    executor: impl sqlx::PgExecutor<'_>,
    tenant: &str,
    rule: Option<Uuid>,
    states: &[State],
    after: Option<(Uuid, String)>,
    limit: i64,
) -> Result<Vec<InstanceRow>, sqlx::Error> {
    let states: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
    let (after_rule, after_group) = after.unzip();
    let rows: Vec<InstanceTuple> = sqlx::query_as(
        "SELECT rule_id, grp, state, value, active_since, last_evaluated_at, version FROM alert_instances
         WHERE tenant = $1 AND ($2::uuid IS NULL OR rule_id = $2)
           AND (cardinality($3::text[]) = 0 OR state = ANY($3))
           AND ($4::uuid IS NULL OR (rule_id, grp) > ($4, $5))
         ORDER BY rule_id, grp LIMIT $6",
    )
    .bind(tenant)
    .bind(rule)
    .bind(&states)
    .bind(after_rule)
    .bind(after_group.unwrap_or_default())
    .bind(limit)
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(instance_row).collect())
}

/// A recorded transition.
#[derive(Debug, Clone)]
pub struct TransitionRow {
    pub version: i64,
    pub rule_id: Uuid,
    pub group: String,
    pub from: State,
    pub to: State,
    pub value: Option<f64>,
    pub at: OffsetDateTime,
    pub notification_job_id: Option<Uuid>,
}

type TransitionTuple = (
    i64,
    Uuid,
    String,
    String,
    String,
    Option<f64>,
    OffsetDateTime,
    Option<Uuid>,
);

fn transition_row((version, rule_id, group, from, to, value, at, job): TransitionTuple) -> TransitionRow {
    TransitionRow {
        version,
        rule_id,
        group,
        from: State::parse(&from).unwrap_or(State::Inactive),
        to: State::parse(&to).unwrap_or(State::Inactive),
        value,
        at,
        notification_job_id: job,
    }
}

/// Transitions of one rule (or all) in `[from, to)`, after version `after`,
/// oldest first.
pub async fn history(
    pool: &PgPool,
    tenant: &str,
    rule: Option<Uuid>,
    range: (Option<Micros>, Option<Micros>),
    after: i64,
    limit: i64,
) -> Result<Vec<TransitionRow>, sqlx::Error> {
    let rows: Vec<TransitionTuple> = sqlx::query_as(
        "SELECT h.version, h.rule_id, h.grp, h.from_state, h.to_state, h.value, h.at, n.job_id
         FROM alert_history h
         LEFT JOIN alert_notifications n ON n.tenant = h.tenant AND n.version = h.version
         WHERE h.tenant = $1 AND ($2::uuid IS NULL OR h.rule_id = $2)
           AND ($3::timestamptz IS NULL OR h.at >= $3) AND ($4::timestamptz IS NULL OR h.at < $4)
           AND h.version > $5
         ORDER BY h.version LIMIT $6",
    )
    .bind(tenant)
    .bind(rule)
    .bind(range.0.map(datetime))
    .bind(range.1.map(datetime))
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(transition_row).collect())
}

/// The tenant's newest alert version and the newest pruned one.
pub async fn stream_position(executor: impl sqlx::PgExecutor<'_>, tenant: &str) -> Result<(i64, i64), sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as("SELECT version, pruned FROM alert_streams WHERE tenant = $1")
        .bind(tenant)
        .fetch_optional(executor)
        .await?;
    Ok(row.unwrap_or((0, 0)))
}

/// Deletes history older than `keep` (µs) for every tenant, with the webhook
/// notifications of those transitions, noting per tenant the newest version
/// deleted.
pub async fn prune_history(pool: &PgPool, keep: Micros) -> Result<u64, sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "WITH gone AS (
           DELETE FROM alert_history WHERE at < now() - make_interval(secs => $1::float8 / 1e6)
           RETURNING tenant, version),
         notifications AS (
           DELETE FROM alert_notifications n USING gone g WHERE n.tenant = g.tenant AND n.version = g.version)
         SELECT tenant, max(version) FROM gone GROUP BY tenant",
    )
    .bind(keep as f64)
    .fetch_all(pool)
    .await?;
    for (tenant, version) in &rows {
        sqlx::query("UPDATE alert_streams SET pruned = greatest(pruned, $2) WHERE tenant = $1")
            .bind(tenant)
            .bind(version)
            .execute(pool)
            .await?;
    }
    Ok(rows.len() as u64)
}
