-- Job events are kept for `jobs.queue.event_retention`, then pruned oldest
-- number first. `pruned_through` is the highest number gone: a watch that
-- resumes from before it can no longer be given every event it missed, and
-- gets a fresh snapshot instead.
ALTER TABLE job_event_relay ADD COLUMN pruned_through bigint NOT NULL DEFAULT 0;
