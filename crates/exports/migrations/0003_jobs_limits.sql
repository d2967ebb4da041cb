-- Who asked for each export (rate limits are per user), and the job that
-- renders a large one.
ALTER TABLE exports ADD COLUMN user_id text NOT NULL DEFAULT '';
ALTER TABLE exports ADD COLUMN job_id uuid;
-- Retention deletes the oldest first.
CREATE INDEX exports_created ON exports (created_at);

-- Per-user rate limits (GCRA): one row per user and class of export, holding
-- its theoretical arrival time. Every gateway replica reaches the limit
-- through this one row, so it holds across replicas.
CREATE TABLE export_rate_limits (
    tenant  text COLLATE "C" NOT NULL,
    user_id text COLLATE "C" NOT NULL,
    class   text        NOT NULL,
    tat     timestamptz NOT NULL,
    PRIMARY KEY (tenant, user_id, class)
);
