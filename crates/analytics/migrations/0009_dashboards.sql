-- Dashboards: a tenant's named grids of metric panels. The spec is stored
-- as the encoded `sextant.analytics.v1.DashboardSpec` the service checked:
-- it is written and read whole. `version` rises by one per update
-- (optimistic concurrency, like alert rules).
CREATE TABLE dashboards (
    tenant     text COLLATE "C" NOT NULL,
    id         uuid        NOT NULL,
    spec       bytea       NOT NULL,
    version    bigint      NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, id)
);
