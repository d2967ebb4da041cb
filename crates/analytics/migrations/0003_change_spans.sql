-- Where inside each touched minute a change fell: `firsts[i]` and `lasts[i]`
-- are the epoch seconds of the earliest and latest event of the change in
-- minute `minutes[i]`. A live watch of 1-second buckets then recomputes only
-- the seconds a batch touched, not the whole minute. NULL on rows written
-- before this column existed: readers take the whole minute.
ALTER TABLE metric_changes
    ADD COLUMN firsts bigint[],
    ADD COLUMN lasts  bigint[];
