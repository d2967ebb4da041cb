-- Events are numbered when they are written, not afterwards by the relay (an
-- UPDATE that copied every event row, JSON and all, and every index entry).
--
-- An event's number is built from its transaction's id:
--     seq = seq_offset + ((xid - xid_base) << 16) + n
-- where n counts the transaction's events (at most 65,536). Numbers then
-- follow transaction ids, not commit order; but every transaction older than
-- the oldest one still running (`pg_snapshot_xmin`) has ended, so every event
-- numbered below `job_event_horizon()` is final: none will ever appear below
-- it. The relay publishes, and readers catch up, only below the horizon;
-- that keeps "a reader that has seen N can fetch > N later and miss nothing".
-- Numbers rise with gaps (as a tenant's always did).
--
-- `seq_offset` continues after the numbers handed out before this migration;
-- `xid_base` is the transaction id at migration, which keeps numbers small:
-- they stay below 2^53 (exact in JavaScript) for 2^37 transactions.

-- Events the old relay had not numbered yet get numbers the old way.
WITH next AS (
    SELECT e.id, r.last_seq + row_number() OVER (ORDER BY e.id) AS seq
    FROM job_events e, job_event_relay r WHERE e.seq IS NULL AND r.id = 1)
UPDATE job_events e SET seq = next.seq FROM next WHERE e.id = next.id;
UPDATE job_event_relay SET last_seq = GREATEST(last_seq, (SELECT COALESCE(max(seq), 0) FROM job_events)) WHERE id = 1;
DROP INDEX job_events_unnumbered;
ALTER TABLE job_events ALTER COLUMN seq SET NOT NULL;

DO $$
DECLARE
    offset_ bigint := (SELECT last_seq + 1 FROM job_event_relay WHERE id = 1);
    base bigint := pg_current_xact_id()::text::bigint;
BEGIN
    -- The first number of the current transaction's events.
    EXECUTE format($f$
        CREATE FUNCTION job_event_seq_base() RETURNS bigint LANGUAGE sql STABLE AS
        'SELECT %s + ((pg_current_xact_id()::text::bigint - %s) << 16)'
    $f$, offset_, base);
    -- Every event numbered below this is final (its transaction has ended).
    -- Never below `seq_offset`: a transaction older than this migration (in
    -- any database) may still be running, but every number below the offset
    -- was handed out, after commit, by the old relay.
    EXECUTE format($f$
        CREATE FUNCTION job_event_horizon() RETURNS bigint LANGUAGE sql STABLE AS
        'SELECT GREATEST(%s, %s + ((pg_snapshot_xmin(pg_current_snapshot())::text::bigint - %s) << 16))'
    $f$, offset_, offset_, base);
END
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
               to_jsonb(n) - 'payload' - 'lease_owner' - 'lease_expires_at' - 'dispatched' - 'tenant'
                   - 'request_fingerprint'
          FROM new_rows n
         ORDER BY n.id;
    ELSE
        INSERT INTO job_events (seq, tenant, job_id, version, type, occurred_at, retry_at, job, errors)
        SELECT first + row_number() OVER (ORDER BY n.id) - 1, n.tenant, n.id, n.version, c.event_type, n.updated_at,
               CASE WHEN c.event_type = 'retry_scheduled' THEN n.run_at END,
               to_jsonb(n) - 'payload' - 'lease_owner' - 'lease_expires_at' - 'dispatched' - 'tenant'
                   - 'request_fingerprint',
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
