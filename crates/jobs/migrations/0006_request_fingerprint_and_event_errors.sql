-- Idempotent submits compare whole requests: a fingerprint of the request
-- as sent (kind, payload, priority, attempts, timeout, failure policy, parent,
-- and the schedule as asked: a delay, not the time it resolved to). Jobs
-- without a key have none.
ALTER TABLE jobs ADD COLUMN request_fingerprint bytea;

-- An event's job is the job after the change, errors included: a job retried
-- after a failure carries that failure in its queued and started events too,
-- not only in failed and retry_scheduled.
CREATE OR REPLACE FUNCTION record_job_events() RETURNS trigger LANGUAGE plpgsql AS $$
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
    RETURN NULL;
END
$$;
