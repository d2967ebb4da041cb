-- Alert rules, their instances (one per rule and group), and the history of
-- every state change. Keyed by tenant first, like every table here.

CREATE TABLE alert_rules (
    tenant       text COLLATE "C" NOT NULL,
    id           uuid        NOT NULL,
    -- The validated spec (`alerts::rule::RuleSpec` as JSON).
    spec         jsonb       NOT NULL,
    enabled      boolean     NOT NULL,
    -- Rises by one with every update; an update names the version it read.
    version      bigint      NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    -- The last evaluation time T this rule was evaluated at (a multiple of
    -- `analytics.alerts.interval`); NULL before the first.
    evaluated_at timestamptz,
    -- The replica evaluating the rule, and until when that claim holds. A
    -- replica renews its claims every interval; a dead one's lapse.
    owner        text,
    lease_until  timestamptz,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX alert_rules_due ON alert_rules (lease_until) WHERE enabled;

-- One row per (rule, group): the instance's current state.
CREATE TABLE alert_instances (
    tenant          text COLLATE "C" NOT NULL,
    rule_id         uuid        NOT NULL,
    grp             text        NOT NULL,
    state           text        NOT NULL,
    -- The aggregation's value at the last evaluation; NULL for no data.
    value           double precision,
    -- Since when the condition has held (pending and firing).
    active_since    timestamptz,
    -- Firing, condition no longer holding: since when (for keep_firing_for).
    keep_firing_since timestamptz,
    last_evaluated_at timestamptz NOT NULL,
    -- The tenant's alert version of the instance's last transition.
    version         bigint      NOT NULL,
    PRIMARY KEY (tenant, rule_id, grp),
    FOREIGN KEY (tenant, rule_id) REFERENCES alert_rules (tenant, id) ON DELETE CASCADE
);

-- Every transition, numbered per tenant in commit order (`alert_streams`), so
-- a watcher resumes "after version N" exactly. Evaluating the same T twice
-- cannot record a transition twice: (rule, group, at) is unique.
CREATE TABLE alert_history (
    tenant     text COLLATE "C" NOT NULL,
    version    bigint      NOT NULL,
    rule_id    uuid        NOT NULL,
    grp        text        NOT NULL,
    from_state text        NOT NULL,
    to_state   text        NOT NULL,
    value      double precision,
    at         timestamptz NOT NULL,
    PRIMARY KEY (tenant, version),
    UNIQUE (tenant, rule_id, grp, at),
    FOREIGN KEY (tenant, rule_id) REFERENCES alert_rules (tenant, id) ON DELETE CASCADE
);
CREATE INDEX alert_history_rule ON alert_history (tenant, rule_id, at);

-- Per tenant: the newest alert version handed out, and the newest one pruned
-- from the history (a resume at or before it gets a snapshot).
CREATE TABLE alert_streams (
    tenant  text COLLATE "C" NOT NULL PRIMARY KEY,
    version bigint NOT NULL DEFAULT 0,
    pruned  bigint NOT NULL DEFAULT 0
);
