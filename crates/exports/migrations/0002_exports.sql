-- Exports: one row per requested file. Its bytes live in the object store
-- under `object_key`; a row is `ready` only after the whole file was stored
-- (object stores write atomically), so no reader ever sees a partial file.
CREATE TABLE exports (
    tenant       text COLLATE "C" NOT NULL,
    id           uuid        NOT NULL,
    analysis_id  text        NOT NULL,
    -- The requested formats: [{"format": "csv", "csv_section": "combined"}, …].
    formats      jsonb       NOT NULL,
    batch        boolean     NOT NULL,
    status       text        NOT NULL,
    content_type text        NOT NULL,
    filename     text        NOT NULL,
    object_key   text        NOT NULL,
    size_bytes   bigint,
    sha256       text,
    error        text,
    idempotency_key text,
    -- What the request asked for, to tell a retry from a reused key.
    fingerprint  text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    ready_at     timestamptz,
    PRIMARY KEY (tenant, id),
    UNIQUE (tenant, idempotency_key)
);
CREATE INDEX exports_analysis ON exports (tenant, analysis_id, id);
