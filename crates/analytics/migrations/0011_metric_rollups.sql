-- One-minute rollups per metric: every series of the metric merged into one
-- row a minute, kept at ingest beside the per-series rollups, in the same
-- transaction and under the same per-metric advisory lock. A query of a
-- whole metric (no filter, no group_by) reads one row a minute instead of
-- one per series: 24 h of a 50-series metric is 1,440 sketches to decode and
-- merge instead of 72,000. Partitioned like `rollups_1m`, with its width and
-- retention (`partitions.rs`).
CREATE TABLE metric_rollups_1m (
    tenant text COLLATE "C" NOT NULL,
    metric text COLLATE "C" NOT NULL,
    bucket timestamptz      NOT NULL,
    count  bigint           NOT NULL,
    sum    double precision NOT NULL,
    min    double precision NOT NULL,
    max    double precision NOT NULL,
    sketch bytea            NOT NULL,
    PRIMARY KEY (tenant, metric, bucket)
) PARTITION BY RANGE (bucket);

-- Minutes before `since` were rolled up before the table above existed (a
-- sketch cannot be merged in SQL, so they are not backfilled): a whole-metric
-- read of them merges the per-series rollups as before. A metric without a
-- row here has every minute in `metric_rollups_1m`.
CREATE TABLE metric_rollups_since (
    tenant text COLLATE "C" NOT NULL,
    metric text COLLATE "C" NOT NULL,
    since  timestamptz      NOT NULL,
    PRIMARY KEY (tenant, metric)
);

INSERT INTO metric_rollups_since (tenant, metric, since)
SELECT s.tenant, s.metric, max(r.bucket) + interval '1 minute'
  FROM rollups_1m r
  JOIN series s ON s.tenant = r.tenant AND s.id = r.series_id
 GROUP BY s.tenant, s.metric;
