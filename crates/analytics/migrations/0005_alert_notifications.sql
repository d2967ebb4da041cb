-- Webhook notifications of alert transitions, written in the evaluation's
-- transaction (an outbox): a notifier submits each to the jobs service as a
-- `notify` job (its idempotency key is the transition's, so a resubmission
-- after a crash makes no second job) and records the job's id.
CREATE TABLE alert_notifications (
    tenant     text COLLATE "C" NOT NULL,
    -- The transition's alert version.
    version    bigint      NOT NULL,
    rule_id    uuid        NOT NULL,
    url        text        NOT NULL,
    -- The exact bytes POSTed, and their HMAC-SHA256 under the rule's secret.
    body       text        NOT NULL,
    signature  text        NOT NULL,
    job_id     uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, version),
    FOREIGN KEY (tenant, rule_id) REFERENCES alert_rules (tenant, id) ON DELETE CASCADE
);
CREATE INDEX alert_notifications_pending ON alert_notifications (created_at) WHERE job_id IS NULL;
