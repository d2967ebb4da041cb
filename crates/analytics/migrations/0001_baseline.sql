-- Baseline of the analytics database: proves the embedded migrations run at start-up.
-- The service's tables arrive with its first capability.
DO $$ BEGIN
  EXECUTE format('COMMENT ON DATABASE %I IS %L', current_database(), 'owned by sextant-analytics');
END $$;
