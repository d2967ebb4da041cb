-- The `traceparent` of the evaluation that queued a notification, so that
-- submitting it (and the job that delivers it) continue that trace.
ALTER TABLE alert_notifications ADD COLUMN trace_context text;
