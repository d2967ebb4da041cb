-- Jobs: PostgreSQL is the record of truth. Every change bumps `version`;
-- `dispatched` is the outbox flag (false until the job is on RabbitMQ).
CREATE TABLE jobs (
    id               uuid PRIMARY KEY,            -- UUIDv7: time-ordered, used as the list cursor
    tenant           text        NOT NULL,
    kind             text        NOT NULL,
    status           text        NOT NULL CHECK (status IN ('scheduled', 'queued', 'running', 'succeeded', 'failed', 'cancelled')),
    payload          jsonb       NOT NULL,
    priority         smallint    NOT NULL CHECK (priority BETWEEN 0 AND 9),
    attempt          integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL CHECK (max_attempts >= 1),
    timeout_ms       bigint      NOT NULL CHECK (timeout_ms > 0),
    idempotency_key  text,
    parent_id        uuid        REFERENCES jobs (id),
    failure_policy   text        NOT NULL DEFAULT 'fail_fast' CHECK (failure_policy IN ('fail_fast', 'continue')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    run_at           timestamptz NOT NULL,
    started_at       timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    progress         jsonb,
    result           jsonb,
    cancel_requested boolean     NOT NULL DEFAULT false,
    version          bigint      NOT NULL DEFAULT 1,
    dispatched       boolean     NOT NULL DEFAULT false,
    lease_owner      text,
    lease_expires_at timestamptz,
    children_total   integer     NOT NULL DEFAULT 0,
    children_done    integer     NOT NULL DEFAULT 0
);

CREATE UNIQUE INDEX jobs_idempotency ON jobs (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_tenant_id ON jobs (tenant, id DESC);
CREATE INDEX jobs_parent ON jobs (parent_id) WHERE parent_id IS NOT NULL;
-- The dispatcher's work list: accepted but not yet on the broker.
CREATE INDEX jobs_outbox ON jobs (run_at) WHERE NOT dispatched AND status IN ('scheduled', 'queued');

-- One row per attempt, with its outcome; failed attempts keep their error.
CREATE TABLE job_attempts (
    job_id        uuid        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt       integer     NOT NULL,
    worker        text,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    error_code    text,
    error_message text,
    PRIMARY KEY (job_id, attempt)
);
