-- The dispatcher's periodic sweeps read only jobs in passing states; small
-- partial indexes keep them from scanning the whole table every second.
-- Running jobs, for the reaper of expired leases.
CREATE INDEX jobs_running ON jobs (lease_expires_at) WHERE status = 'running';
-- Queued jobs whose message went out, for the redispatch of unclaimed ones.
CREATE INDEX jobs_waiting ON jobs (updated_at) WHERE status = 'queued' AND dispatched;
