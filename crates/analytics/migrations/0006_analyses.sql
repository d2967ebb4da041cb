-- Analysis reports. The report itself (summaries, findings, chart series)
-- is stored as the encoded `sextant.analytics.v1.Analysis` it is served as:
-- it is written once and read whole.
CREATE TABLE analyses (
    tenant      text COLLATE "C" NOT NULL,
    id          uuid        NOT NULL,
    -- The run that made it (an `analyze` job's id): a retried run finds it.
    run_id      text,
    title       text        NOT NULL,
    range_start timestamptz NOT NULL,
    range_end   timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    report      bytea       NOT NULL,
    PRIMARY KEY (tenant, id),
    UNIQUE (tenant, run_id)
);
