-- Metrics: a series dictionary, raw events, one-minute rollups, and the
-- per-metric change log that live watchers follow.
--
-- Every table leads with `tenant`, the column to distribute by (Citus
-- `create_distributed_table(..., 'tenant')`) once one PostgreSQL is outgrown;
-- see ARCHITECTURE.md.

-- One row per (tenant, metric). `version` rises by one with every ingest batch
-- that touched the metric, in commit order (the row lock orders them), so a
-- watcher can resume "after version N" exactly.
CREATE TABLE metrics (
    tenant     text COLLATE "C" NOT NULL,
    name       text        NOT NULL,
    version    bigint      NOT NULL,
    first_seen timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL,
    PRIMARY KEY (tenant, name)
);

-- The series dictionary: (tenant, metric, labels) -> id. `labels` is a JSON
-- object of strings; jsonb equality ignores key order, so it is canonical.
CREATE TABLE series (
    tenant     text COLLATE "C" NOT NULL,
    id         bigint      GENERATED ALWAYS AS IDENTITY,
    metric     text        NOT NULL,
    labels     jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, id),
    UNIQUE (tenant, metric, labels)
);

-- Raw events, partitioned by time (`analytics.retention.raw_partition`);
-- partitions are created ahead and dropped past `analytics.retention.raw` by
-- the service (see `partitions.rs`), which records them in `partitions`.
CREATE TABLE events (
    tenant    text COLLATE "C" NOT NULL,
    series_id bigint           NOT NULL,
    ts        timestamptz      NOT NULL,
    value     double precision NOT NULL
) PARTITION BY RANGE (ts);
-- Series ids are unique across tenants, so the index needs no `tenant`:
-- comparing it (text, with the database's collation) on every insertion
-- step was the top of the ingest profile. (Citus needs the distribution
-- column only in unique indexes.)
CREATE INDEX events_series_ts ON events (series_id, ts);

-- One-minute rollups per series, maintained at ingest. `sketch` is a DDSketch
-- (relative accuracy 1 %) in DataDog's portable binary encoding.
CREATE TABLE rollups_1m (
    tenant    text COLLATE "C" NOT NULL,
    series_id bigint           NOT NULL,
    bucket    timestamptz      NOT NULL,
    count     bigint           NOT NULL,
    sum       double precision NOT NULL,
    min       double precision NOT NULL,
    max       double precision NOT NULL,
    sketch    bytea            NOT NULL,
    PRIMARY KEY (tenant, series_id, bucket)
) PARTITION BY RANGE (bucket);

-- What each version of a metric touched: the minutes (epoch seconds of their
-- starts) whose rollups changed. Kept for `analytics.live.change_log`.
CREATE TABLE metric_changes (
    tenant     text COLLATE "C" NOT NULL,
    metric     text        NOT NULL,
    version    bigint      NOT NULL,
    minutes    bigint[]    NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, metric, version)
);
CREATE INDEX metric_changes_created ON metric_changes (created_at);

-- Ingest idempotency: the first answer to a key, kept for
-- `analytics.ingest.idempotency_ttl`.
CREATE TABLE ingest_requests (
    tenant      text COLLATE "C" NOT NULL,
    key         text        NOT NULL,
    fingerprint bytea       NOT NULL,
    response    jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, key)
);
CREATE INDEX ingest_requests_created ON ingest_requests (created_at);

-- The partitions the service made, so it can find gaps and expired ones
-- without parsing catalog bound expressions.
CREATE TABLE partitions (
    parent     text        NOT NULL,
    name       text        NOT NULL PRIMARY KEY,
    range_from timestamptz NOT NULL,
    range_to   timestamptz NOT NULL
);
CREATE INDEX partitions_parent ON partitions (parent, range_from);
