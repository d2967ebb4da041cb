-- Lighter writes per job change (issue 11's profile):
--
-- 1. The running jobs' index is keyed on the lease and holds leased jobs,
--    not `status = 'running'` ones. The finish statement's guard
--    (`status = 'running'`) matched the old predicate, and since a queue
--    table's statistics say almost no job is running, the planner walked the
--    whole index (every job that ran since the last vacuum, dead or alive)
--    instead of looking the batch up by primary key. A job holds a lease
--    exactly while it runs: the claim sets it, and every way out of
--    `running` clears it.
DROP INDEX jobs_running;
CREATE INDEX jobs_leased ON jobs (lease_expires_at) WHERE lease_expires_at IS NOT NULL;

-- 2. Events and attempts are deleted with their job by the retention sweep
--    itself (`store::delete_finished`), not by foreign keys: a foreign key
--    costs every event and attempt row a lookup of its job, in the writing
--    transaction.
ALTER TABLE job_events DROP CONSTRAINT job_events_job_id_fkey;
ALTER TABLE job_attempts DROP CONSTRAINT job_attempts_job_id_fkey;

-- 3. An event's number is its key: the serial `id` (a sequence call and an
--    index entry per event) goes, and so does the relay's old counter.
ALTER TABLE job_events DROP COLUMN id;
ALTER TABLE job_events DROP CONSTRAINT job_events_seq_key, ADD PRIMARY KEY (seq);
ALTER TABLE job_event_relay DROP COLUMN last_seq;

-- 4. The job in an event, built field by field (the same fields as before:
--    the job without its payload, lease, outbox flag, tenant and request
--    fingerprint). `to_jsonb(row)` minus six keys copied the document six
--    times.
CREATE FUNCTION job_event_document(j jobs) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', j.id, 'kind', j.kind, 'status', j.status, 'priority', j.priority, 'attempt', j.attempt,
        'max_attempts', j.max_attempts, 'timeout_ms', j.timeout_ms, 'idempotency_key', j.idempotency_key,
        'parent_id', j.parent_id, 'failure_policy', j.failure_policy, 'created_at', j.created_at,
        'run_at', j.run_at, 'started_at', j.started_at, 'finished_at', j.finished_at,
        'updated_at', j.updated_at, 'progress', j.progress, 'result', j.result,
        'cancel_requested', j.cancel_requested, 'version', j.version,
        'children_total', j.children_total, 'children_done', j.children_done)
$$;

CREATE OR REPLACE FUNCTION record_job_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    -- Events this transaction numbered so far (a transaction-local setting).
    before bigint := COALESCE(NULLIF(current_setting('sextant.job_events', true), ''), '0')::bigint;
    first bigint := job_event_seq_base() + before;
    added bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO job_events (seq, tenant, job_id, version, type, occurred_at, job)
        SELECT first + row_number() OVER (ORDER BY n.id) - 1, n.tenant, n.id, n.version, n.status, n.updated_at,
               job_event_document(n)
          FROM new_rows n
         ORDER BY n.id;
    ELSE
        INSERT INTO job_events (seq, tenant, job_id, version, type, occurred_at, retry_at, job, errors)
        SELECT first + row_number() OVER (ORDER BY n.id) - 1, n.tenant, n.id, n.version, c.event_type, n.updated_at,
               CASE WHEN c.event_type = 'retry_scheduled' THEN n.run_at END,
               job_event_document(n),
               -- Every event's job lists every failed attempt so far, as a GET
               -- would. Only an attempt past the first, or a first attempt that
               -- is over (not running, not succeeded), can have one.
               CASE WHEN n.attempt > 1 OR (n.attempt = 1 AND n.status NOT IN ('running', 'succeeded')) THEN (
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
    END IF;
    GET DIAGNOSTICS added = ROW_COUNT;
    IF added > 0 THEN
        IF before + added > 65536 THEN
            RAISE EXCEPTION 'one transaction may change jobs at most 65,536 times (this one: %)', before + added;
        END IF;
        PERFORM set_config('sextant.job_events', (before + added)::text, true);
    END IF;
    RETURN NULL;
END
$$;
