-- An event keeps the job as it was after the change in typed columns, not
-- as a JSON document. Building the document (`job_event_document`: 21 keys,
-- five timestamps formatted as text) was most of what an event cost to
-- write: 40,000 of them took 363 ms to build and 45 ms to store as columns,
-- and every event is written once per change but read about once (the relay
-- publishes it; a catch-up now and then). The service turns the columns into
-- the job it sends, as it turned the document into one before.
--
-- `updated_at` is the event's `occurred_at` (the trigger always set that from
-- the job's `updated_at`), and the job's id, tenant and version are already
-- columns of the event.
ALTER TABLE job_events
    ADD COLUMN kind             text,
    ADD COLUMN status           text,
    ADD COLUMN priority         smallint,
    ADD COLUMN attempt          integer,
    ADD COLUMN max_attempts     integer,
    ADD COLUMN timeout_ms       bigint,
    ADD COLUMN idempotency_key  text,
    ADD COLUMN parent_id        uuid,
    ADD COLUMN failure_policy   text,
    ADD COLUMN created_at       timestamptz,
    ADD COLUMN run_at           timestamptz,
    ADD COLUMN started_at       timestamptz,
    ADD COLUMN finished_at      timestamptz,
    ADD COLUMN progress         jsonb,
    ADD COLUMN result           jsonb,
    ADD COLUMN cancel_requested boolean,
    ADD COLUMN children_total   integer,
    ADD COLUMN children_done    integer;

-- Events written before: their documents, read back into columns (a JSON
-- null is no value).
UPDATE job_events SET
    kind = job->>'kind',
    status = job->>'status',
    priority = (job->>'priority')::smallint,
    attempt = (job->>'attempt')::integer,
    max_attempts = (job->>'max_attempts')::integer,
    timeout_ms = (job->>'timeout_ms')::bigint,
    idempotency_key = job->>'idempotency_key',
    parent_id = (job->>'parent_id')::uuid,
    failure_policy = job->>'failure_policy',
    created_at = (job->>'created_at')::timestamptz,
    run_at = (job->>'run_at')::timestamptz,
    started_at = (job->>'started_at')::timestamptz,
    finished_at = (job->>'finished_at')::timestamptz,
    progress = NULLIF(job->'progress', 'null'::jsonb),
    result = NULLIF(job->'result', 'null'::jsonb),
    cancel_requested = (job->>'cancel_requested')::boolean,
    children_total = COALESCE((job->>'children_total')::integer, 0),
    children_done = COALESCE((job->>'children_done')::integer, 0);

ALTER TABLE job_events
    ALTER COLUMN kind SET NOT NULL,
    ALTER COLUMN status SET NOT NULL,
    ALTER COLUMN priority SET NOT NULL,
    ALTER COLUMN attempt SET NOT NULL,
    ALTER COLUMN max_attempts SET NOT NULL,
    ALTER COLUMN timeout_ms SET NOT NULL,
    ALTER COLUMN failure_policy SET NOT NULL,
    ALTER COLUMN created_at SET NOT NULL,
    ALTER COLUMN run_at SET NOT NULL,
    ALTER COLUMN cancel_requested SET NOT NULL,
    ALTER COLUMN children_total SET NOT NULL,
    ALTER COLUMN children_done SET NOT NULL,
    DROP COLUMN job;

DROP FUNCTION job_event_document(jobs);

CREATE OR REPLACE FUNCTION record_job_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    -- Events this transaction numbered so far (a transaction-local setting).
    before bigint := COALESCE(NULLIF(current_setting('sextant.job_events', true), ''), '0')::bigint;
    first bigint := job_event_seq_base() + before;
    added bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO job_events (seq, tenant, job_id, version, type, occurred_at,
                                kind, status, priority, attempt, max_attempts, timeout_ms, idempotency_key,
                                parent_id, failure_policy, created_at, run_at, started_at, finished_at,
                                progress, result, cancel_requested, children_total, children_done)
        SELECT first + row_number() OVER (ORDER BY n.id) - 1, n.tenant, n.id, n.version, n.status, n.updated_at,
               n.kind, n.status, n.priority, n.attempt, n.max_attempts, n.timeout_ms, n.idempotency_key,
               n.parent_id, n.failure_policy, n.created_at, n.run_at, n.started_at, n.finished_at,
               n.progress, n.result, n.cancel_requested, n.children_total, n.children_done
          FROM new_rows n
         ORDER BY n.id;
    ELSE
        INSERT INTO job_events (seq, tenant, job_id, version, type, occurred_at, retry_at, errors,
                                kind, status, priority, attempt, max_attempts, timeout_ms, idempotency_key,
                                parent_id, failure_policy, created_at, run_at, started_at, finished_at,
                                progress, result, cancel_requested, children_total, children_done)
        SELECT first + row_number() OVER (ORDER BY n.id) - 1, n.tenant, n.id, n.version, c.event_type, n.updated_at,
               CASE WHEN c.event_type = 'retry_scheduled' THEN n.run_at END,
               -- Every event's job lists every failed attempt so far, as a GET
               -- would. Only an attempt past the first, or a first attempt that
               -- is over (not running, not succeeded), can have one.
               CASE WHEN n.attempt > 1 OR (n.attempt = 1 AND n.status NOT IN ('running', 'succeeded')) THEN (
                   SELECT jsonb_agg(jsonb_build_object(
                              'attempt', a.attempt, 'error_code', a.error_code, 'error_message', a.error_message,
                              'started_at', a.started_at, 'finished_at', a.finished_at) ORDER BY a.attempt)
                     FROM job_attempts a
                    WHERE a.job_id = n.id AND a.error_code IS NOT NULL)
               END,
               n.kind, n.status, n.priority, n.attempt, n.max_attempts, n.timeout_ms, n.idempotency_key,
               n.parent_id, n.failure_policy, n.created_at, n.run_at, n.started_at, n.finished_at,
               n.progress, n.result, n.cancel_requested, n.children_total, n.children_done
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
