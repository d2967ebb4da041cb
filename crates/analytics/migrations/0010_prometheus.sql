-- What the Prometheus and OpenTelemetry surfaces bring beyond values.

-- Staleness markers (remote-write's stale NaN): the series ended at `ts`.
-- They are not values, so they stay out of `events` and the rollups; only
-- the PromQL evaluator reads them. Kept as long as raw events (the
-- retention pass deletes older ones).
CREATE TABLE stale_markers (
    tenant    text COLLATE "C" NOT NULL,
    series_id bigint      NOT NULL,
    ts        timestamptz NOT NULL,
    PRIMARY KEY (series_id, ts, tenant)
);
CREATE INDEX stale_markers_ts ON stale_markers (ts);

-- A metric's type, help and unit, as its senders last described it
-- (Prometheus' `/api/v1/metadata`).
CREATE TABLE metric_metadata (
    tenant     text COLLATE "C" NOT NULL,
    metric     text        NOT NULL,
    type       text        NOT NULL,
    help       text        NOT NULL,
    unit       text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, metric)
);
