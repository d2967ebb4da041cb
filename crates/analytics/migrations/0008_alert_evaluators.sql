-- The analytics replicas that evaluate alert rules, by the name they claim
-- rules under, and when each last ticked. A replica's share of the enabled
-- rules is their number over the replicas seen within a lease, so the rules
-- spread over the replicas (one evaluator per rule still: the lease in the
-- rule's row decides).
CREATE TABLE alert_evaluators (
    owner   text PRIMARY KEY,
    seen_at timestamptz NOT NULL
);
