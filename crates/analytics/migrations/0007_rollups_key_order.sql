-- The one-minute rollups' key leads with the fixed-width columns. With
-- `tenant` (text) first, every index comparison and every attribute read
-- after it went through a collation-aware text compare and an uncached
-- attribute offset: the top of the small-batch ingest profile (the rollup
-- read-merge-write scans and probes this index per batch). Series ids are
-- unique across tenants, so (series_id, bucket) already identifies a row;
-- `tenant` stays in the key because a distributed (Citus) table needs its
-- distribution column in every unique index.
ALTER TABLE rollups_1m DROP CONSTRAINT rollups_1m_pkey;
ALTER TABLE rollups_1m ADD PRIMARY KEY (series_id, bucket, tenant);
