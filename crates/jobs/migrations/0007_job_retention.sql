-- Finished jobs are deleted `jobs.queue.job_retention` after they finished
-- (a batch with its children), oldest first: this index serves the sweep.
CREATE INDEX jobs_finished ON jobs (finished_at)
    WHERE status IN ('succeeded', 'failed', 'cancelled') AND parent_id IS NULL;
-- The highest event number deleted with its job. Like `pruned_through`, a
-- watch resuming from before it gets a fresh snapshot (its events are gone).
ALTER TABLE job_event_relay ADD COLUMN forgotten_through bigint NOT NULL DEFAULT 0;
