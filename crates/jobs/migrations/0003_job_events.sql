-- Job events: one row per change of a job (every version), written by
-- triggers in the same statement as the change, so no code path can change
-- a job without recording it.
--
-- `seq` is the publication order. It stays NULL until the event relay (one
-- at a time, under an advisory lock) numbers committed events and publishes
-- them to RabbitMQ in that order. Numbering at publication, not at insert,
-- means a reader that has seen `seq = N` can fetch `seq > N` later and miss
-- nothing: every event numbered afterwards gets a larger number.
CREATE TABLE job_events (
    id          bigserial   PRIMARY KEY,
    seq         bigint      UNIQUE,
    tenant      text        NOT NULL,
    job_id      uuid        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    version     bigint      NOT NULL,
    type        text        NOT NULL CHECK (type IN ('queued', 'scheduled', 'started', 'progress', 'succeeded',
                                                     'failed', 'cancelled', 'retry_scheduled', 'cancel_requested')),
    occurred_at timestamptz NOT NULL,
    retry_at    timestamptz,
    -- The job after the change, without its payload (events never repeat it).
    job         jsonb       NOT NULL,
    -- Every failed attempt so far, for `failed` and `retry_scheduled`.
    errors      jsonb,
    UNIQUE (job_id, version)
);

CREATE INDEX job_events_unnumbered ON job_events (id) WHERE seq IS NULL;
CREATE INDEX job_events_tenant_seq ON job_events (tenant, seq);

-- The relay's progress: numbers handed out, and how far publishing got (a
-- relay that died between the two leaves the rest to the next one).
CREATE TABLE job_event_relay (
    id                integer PRIMARY KEY CHECK (id = 1),
    last_seq          bigint  NOT NULL,
    published_through bigint  NOT NULL
);
INSERT INTO job_event_relay VALUES (1, 0, 0);

-- A statement-level trigger over transition tables: one set-based INSERT
-- per statement, however many jobs it changed (a batch of claims or finishes
-- costs one insert, not one per row).
CREATE FUNCTION record_job_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO job_events (tenant, job_id, version, type, occurred_at, job)
        SELECT n.tenant, n.id, n.version, n.status, n.updated_at,
               to_jsonb(n) - 'payload' - 'lease_owner' - 'lease_expires_at' - 'dispatched' - 'tenant'
          FROM new_rows n
         ORDER BY n.id;
        RETURN NULL;
    END IF;
    INSERT INTO job_events (tenant, job_id, version, type, occurred_at, retry_at, job, errors)
    SELECT n.tenant, n.id, n.version, c.event_type, n.updated_at,
           CASE WHEN c.event_type = 'retry_scheduled' THEN n.run_at END,
           to_jsonb(n) - 'payload' - 'lease_owner' - 'lease_expires_at' - 'dispatched' - 'tenant',
           CASE WHEN c.event_type IN ('failed', 'retry_scheduled') THEN (
               SELECT jsonb_agg(jsonb_build_object(
                          'attempt', a.attempt, 'error_code', a.error_code, 'error_message', a.error_message,
                          'started_at', a.started_at, 'finished_at', a.finished_at) ORDER BY a.attempt)
                 FROM job_attempts a
                WHERE a.job_id = n.id AND a.error_code IS NOT NULL)
           END
      FROM new_rows n
      JOIN old_rows o ON o.id = n.id
     CROSS JOIN LATERAL (SELECT CASE
               WHEN n.status = 'running' AND o.status <> 'running' THEN 'started'
               WHEN n.status = 'running' AND n.cancel_requested AND NOT o.cancel_requested THEN 'cancel_requested'
               WHEN n.status = 'running' THEN 'progress'
               WHEN o.status = 'running' AND n.status IN ('queued', 'scheduled') THEN 'retry_scheduled'
               -- queued (due, or retried), succeeded, failed, cancelled
               ELSE n.status
           END AS event_type) c
     WHERE n.version <> o.version
     ORDER BY n.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_record_inserts AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION record_job_events();
CREATE TRIGGER jobs_record_updates AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION record_job_events();
