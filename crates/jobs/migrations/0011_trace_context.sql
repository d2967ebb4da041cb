-- The W3C `traceparent` of the request that submitted a job (or of the
-- batch that made it), so the attempt that runs it continues that trace
-- (see worker.rs). NULL when nothing was traced. Not part of the job as
-- clients see it, nor of its events.
ALTER TABLE jobs ADD COLUMN trace_context text;
