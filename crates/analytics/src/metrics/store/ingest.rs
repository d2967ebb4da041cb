//! The ingest transaction. One batch commits whole or not at all:
//!
//! 1. the idempotency key is claimed (a concurrent retry waits on it, then
//!    gets the stored answer);
//! 2. each event's series is found or made (new series under the metric's
//!    lock, within the cardinality limit);
//! 3. events are `COPY`ed (binary) into the time-partitioned `events`;
//! 4. under a per-(tenant, metric) advisory lock, the touched one-minute
//!    rollups — per series, and per metric (every series merged) — are
//!    read, merged with the batch, and written back;
//! 5. each metric's version rises by one (the `metrics` row lock orders
//!    versions by commit) and where it changed (per touched minute, its
//!    first and last second) goes to `metric_changes`;
//! 6. the answer is stored with the key, and the transaction commits.
//!
//! So when the caller hears "accepted", the events, their rollups and the
//! change record are all committed: the next query sees them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use super::partitions::{self, Layout};
use super::{SeriesCache, canonical_labels, parse_labels};
use crate::aggregate::{Agg, decode_sketch, encode_sketch};
use crate::model::{Event, MINUTE, Micros, Rejection, SECOND, codes, datetime, floor_to};

/// What a committed batch changed, per metric: the live watchers' cue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub metric: String,
    pub version: u64,
}

/// A batch's answer, as stored for its idempotency key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Answer {
    pub accepted: u32,
    pub rejected: Vec<StoredRejection>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredRejection {
    pub index: u32,
    pub code: String,
    pub field: String,
    pub message: String,
}

impl From<&Rejection> for StoredRejection {
    fn from(r: &Rejection) -> Self {
        Self {
            index: r.index,
            code: r.code.to_owned(),
            field: r.field.clone(),
            message: r.message.clone(),
        }
    }
}

/// Cached series (tenant, metric, labels) found deleted under the locks.
type Gone = Vec<(String, String, String)>;

/// An attempt's end: done, or to be tried again without series that went.
enum Attempt {
    Done(Outcome),
    /// Series this replica had cached were deleted (their data expired).
    Gone(Gone),
}

#[derive(Debug)]
pub enum Outcome {
    Stored {
        answer: Answer,
        changes: Vec<Change>,
    },
    /// The key's first answer, stored earlier.
    Replayed(Answer),
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("idempotency key already used for a different batch")]
    KeyReused,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// The key and the batch's fingerprint (see `model::fingerprint`).
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub fingerprint: Vec<u8>,
}

/// An event with its series id.
type Stored<'e> = (i64, &'e Event);

pub struct Ingest<'a> {
    pub pool: &'a PgPool,
    pub cache: &'a SeriesCache,
    pub max_series_per_metric: u32,
    pub raw: Layout,
    pub rollups: Layout,
}

impl Ingest<'_> {
    /// Stores `events` (each with its index in the request); `rejected` are
    /// the request's events already refused, reported with the answer.
    pub async fn run(
        &self,
        tenant: &str,
        events: Vec<(u32, Event)>,
        rejected: Vec<Rejection>,
        key: Option<Idempotency>,
    ) -> Result<Outcome, IngestError> {
        let mut made_partitions = false;
        loop {
            match self.attempt(tenant, &events, &rejected, key.as_ref()).await {
                Err(IngestError::Db(e)) if is_missing_partition(&e) && !made_partitions => {
                    // A late event (or a pass of upkeep still to come): make its partitions.
                    made_partitions = true;
                    let (lo, hi) = span(&events);
                    partitions::ensure(self.pool, self.raw, lo, hi + 1).await?;
                    partitions::ensure(self.pool, self.rollups, lo, hi + 1).await?;
                    partitions::ensure(self.pool, partitions::metric_rollups(self.rollups), lo, hi + 1).await?;
                }
                Err(IngestError::Db(e)) if is_deadlock(&e) => {
                    tracing::debug!("ingest deadlocked; retrying");
                }
                Ok(Attempt::Gone(gone)) => {
                    tracing::debug!(series = gone.len(), "cached series expired; retrying");
                    self.cache.forget(&gone);
                }
                Ok(Attempt::Done(outcome)) => return Ok(outcome),
                Err(other) => return Err(other),
            }
        }
    }

    async fn attempt(
        &self,
        tenant: &str,
        events: &[(u32, Event)],
        rejected: &[Rejection],
        key: Option<&Idempotency>,
    ) -> Result<Attempt, IngestError> {
        let mut tx = self.pool.begin().await?;
        if let Some(key) = key
            && let Some(answer) = claim_key(&mut tx, tenant, key).await?
        {
            return Ok(Attempt::Done(Outcome::Replayed(answer)));
        }
        let mut rejected = rejected.to_vec();

        // Per metric, the distinct label sets and the events using each.
        let mut by_metric: BTreeMap<&str, BTreeMap<String, Vec<usize>>> = BTreeMap::new();
        for (i, (_, event)) in events.iter().enumerate() {
            by_metric
                .entry(event.metric.as_str())
                .or_default()
                .entry(canonical_labels(&event.labels))
                .or_default()
                .push(i);
        }
        let metrics: Vec<&str> = by_metric.keys().copied().collect();
        let mut series_of: Vec<Option<i64>> = vec![None; events.len()];
        let mut fresh: Vec<(&str, Vec<(String, i64)>)> = Vec::new();
        let mut cached: Vec<(i64, &str, &String)> = Vec::new();
        let mut locked = false;
        for (&metric, sets) in &by_metric {
            let mut missing: Vec<&String> = Vec::new();
            for (labels, uses) in sets {
                match self.cache.get(tenant, metric, labels) {
                    Some(id) => {
                        cached.push((id, metric, labels));
                        uses.iter().for_each(|&i| series_of[i] = Some(id));
                    }
                    None => missing.push(labels),
                }
            }
            if missing.is_empty() {
                continue;
            }
            if !locked {
                // New series are counted against the limit under the metrics' locks.
                lock_metrics(&mut tx, tenant, &metrics).await?;
                locked = true;
            }
            let (found, refused) = self.resolve(&mut tx, tenant, metric, &missing).await?;
            for (labels, id) in &found {
                sets[labels].iter().for_each(|&i| series_of[i] = Some(*id));
            }
            for labels in refused {
                for &i in &sets[labels] {
                    let (index, _) = events[i];
                    rejected.push(Rejection {
                        index,
                        code: codes::CARDINALITY_LIMIT,
                        field: "labels".into(),
                        message: format!(
                            "metric {metric:?} already has {} series, the most a tenant may have per metric",
                            self.max_series_per_metric
                        ),
                    });
                }
            }
            fresh.push((metric, found));
        }

        let (markers, mut stored): (Vec<Stored>, Vec<Stored>) = events
            .iter()
            .zip(&series_of)
            .filter_map(|((_, event), id)| id.map(|id| (id, event)))
            .partition(|(_, event)| event.stale);
        // In index order: consecutive rows land on the same leaf pages of
        // `events (series_id, ts)`, which is most of what a COPY costs
        // (a remote-write batch interleaves a thousand series).
        stored.sort_by_key(|(id, event)| (*id, event.ts));
        if !markers.is_empty() {
            insert_markers(&mut tx, tenant, &markers).await?;
        }
        let mut changes = Vec::new();
        if !stored.is_empty() {
            copy_events(&mut tx, tenant, &stored).await?;
            if !locked {
                lock_metrics(&mut tx, tenant, &metrics).await?;
            }
            // Under the locks no series of these metrics can go: the cached
            // ones still exist, or the batch starts again without them.
            if let Some(gone) = check_cached(&mut tx, tenant, &cached).await? {
                return Ok(Attempt::Gone(gone));
            }
            merge_rollups(&mut tx, tenant, &stored).await?;
            changes = bump_versions(&mut tx, tenant, &stored).await?;
        }
        rejected.sort_by_key(|r| r.index);
        let answer = Answer {
            accepted: u32::try_from(stored.len() + markers.len()).unwrap_or(u32::MAX),
            rejected: rejected.iter().map(StoredRejection::from).collect(),
        };
        if let Some(key) = key {
            sqlx::query("UPDATE ingest_requests SET response = $3 WHERE tenant = $1 AND key = $2")
                .bind(tenant)
                .bind(&key.key)
                .bind(sqlx::types::Json(&answer))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        for (metric, found) in fresh {
            self.cache.put_all(tenant, metric, found);
        }
        Ok(Attempt::Done(Outcome::Stored { answer, changes }))
    }

    /// Finds or makes the series of `missing` label sets; the second list is
    /// the sets refused by the cardinality limit.
    async fn resolve<'l>(
        &self,
        tx: &mut PgConnection,
        tenant: &str,
        metric: &str,
        missing: &[&'l String],
    ) -> Result<(Vec<(String, i64)>, Vec<&'l String>), IngestError> {
        let texts: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        let rows: Vec<(i64, serde_json::Value)> = sqlx::query_as(
            "SELECT id, labels FROM series
             WHERE tenant = $1 AND metric = $2 AND labels = ANY($3::text[]::jsonb[])",
        )
        .bind(tenant)
        .bind(metric)
        .bind(&texts)
        .fetch_all(&mut *tx)
        .await?;
        let mut found: Vec<(String, i64)> = rows
            .into_iter()
            .map(|(id, labels)| (canonical_labels(&parse_labels(labels)), id))
            .collect();
        let known: BTreeSet<&str> = found.iter().map(|(l, _)| l.as_str()).collect();
        let new: Vec<&'l String> = missing
            .iter()
            .copied()
            .filter(|l| !known.contains(l.as_str()))
            .collect();
        if new.is_empty() {
            return Ok((found, Vec::new()));
        }
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM series WHERE tenant = $1 AND metric = $2")
            .bind(tenant)
            .bind(metric)
            .fetch_one(&mut *tx)
            .await?;
        let room = usize::try_from(i64::from(self.max_series_per_metric) - count).unwrap_or(0);
        let (admitted, refused) = new.split_at(room.min(new.len()));
        if !admitted.is_empty() {
            let texts: Vec<&str> = admitted.iter().map(|s| s.as_str()).collect();
            let rows: Vec<(i64, serde_json::Value)> = sqlx::query_as(
                "INSERT INTO series (tenant, metric, labels)
                 SELECT $1, $2, l::jsonb FROM unnest($3::text[]) AS l
                 RETURNING id, labels",
            )
            .bind(tenant)
            .bind(metric)
            .bind(&texts)
            .fetch_all(&mut *tx)
            .await?;
            found.extend(
                rows.into_iter()
                    .map(|(id, labels)| (canonical_labels(&parse_labels(labels)), id)),
            );
        }
        Ok((found, refused.to_vec()))
    }
}

/// Claims `key` for this batch; `Some` answer when an earlier batch holds it.
async fn claim_key(
    tx: &mut Transaction<'_, Postgres>,
    tenant: &str,
    key: &Idempotency,
) -> Result<Option<Answer>, IngestError> {
    let claimed = sqlx::query(
        "INSERT INTO ingest_requests (tenant, key, fingerprint) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(&key.key)
    .bind(&key.fingerprint)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if claimed {
        return Ok(None);
    }
    let (fingerprint, response): (Vec<u8>, Option<sqlx::types::Json<Answer>>) =
        sqlx::query_as("SELECT fingerprint, response FROM ingest_requests WHERE tenant = $1 AND key = $2")
            .bind(tenant)
            .bind(&key.key)
            .fetch_one(&mut **tx)
            .await?;
    if fingerprint != key.fingerprint {
        return Err(IngestError::KeyReused);
    }
    Ok(Some(response.map(|r| r.0).unwrap_or_default()))
}

/// The cached series that no longer exist, if any.
async fn check_cached(
    tx: &mut PgConnection,
    tenant: &str,
    cached: &[(i64, &str, &String)],
) -> Result<Option<Gone>, sqlx::Error> {
    if cached.is_empty() {
        return Ok(None);
    }
    let ids: Vec<i64> = cached.iter().map(|(id, _, _)| *id).collect();
    let present: Vec<i64> = sqlx::query_scalar("SELECT id FROM series WHERE tenant = $1 AND id = ANY($2)")
        .bind(tenant)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
    if present.len() == ids.len() {
        return Ok(None);
    }
    let present: BTreeSet<i64> = present.into_iter().collect();
    let gone = cached
        .iter()
        .filter(|(id, _, _)| !present.contains(id))
        .map(|(_, metric, labels)| (tenant.to_owned(), (*metric).to_owned(), (*labels).clone()))
        .collect();
    Ok(Some(gone))
}

/// Takes the per-(tenant, metric) locks, always in the same order.
pub(super) async fn lock_metrics(tx: &mut PgConnection, tenant: &str, metrics: &[&str]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT count(pg_advisory_xact_lock(k)) FROM (
           SELECT hashtextextended($1 || '/' || m, 0) AS k FROM unnest($2::text[]) AS m ORDER BY 1
         ) AS keys",
    )
    .bind(tenant)
    .bind(metrics)
    .execute(tx)
    .await?;
    Ok(())
}

/// PostgreSQL's binary COPY epoch, 2000-01-01, in Unix microseconds.
const PG_EPOCH: Micros = 946_684_800_000_000;

async fn copy_events(tx: &mut PgConnection, tenant: &str, events: &[(i64, &Event)]) -> Result<(), sqlx::Error> {
    let tenant = tenant.as_bytes();
    let row_len = 2 + 4 + tenant.len() + 3 * (4 + 8);
    let mut buf = Vec::with_capacity(19 + events.len() * row_len + 2);
    buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    buf.extend_from_slice(&0i32.to_be_bytes());
    buf.extend_from_slice(&0i32.to_be_bytes());
    let tenant_len = i32::try_from(tenant.len()).unwrap_or(i32::MAX);
    for (series, event) in events {
        buf.extend_from_slice(&4i16.to_be_bytes());
        buf.extend_from_slice(&tenant_len.to_be_bytes());
        buf.extend_from_slice(tenant);
        buf.extend_from_slice(&8i32.to_be_bytes());
        buf.extend_from_slice(&series.to_be_bytes());
        buf.extend_from_slice(&8i32.to_be_bytes());
        buf.extend_from_slice(&(event.ts - PG_EPOCH).to_be_bytes());
        buf.extend_from_slice(&8i32.to_be_bytes());
        buf.extend_from_slice(&event.value.to_be_bytes());
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    let mut copy = tx
        .copy_in_raw("COPY events (tenant, series_id, ts, value) FROM STDIN (FORMAT binary)")
        .await?;
    copy.send(buf).await?;
    copy.finish().await?;
    Ok(())
}

/// Staleness markers: not values, so neither `events` nor the rollups.
async fn insert_markers(tx: &mut PgConnection, tenant: &str, markers: &[(i64, &Event)]) -> Result<(), sqlx::Error> {
    let series: Vec<i64> = markers.iter().map(|(id, _)| *id).collect();
    let ts: Vec<time::OffsetDateTime> = markers.iter().map(|(_, e)| datetime(e.ts)).collect();
    sqlx::query(
        "INSERT INTO stale_markers (tenant, series_id, ts)
         SELECT $1, s, t FROM unnest($2::bigint[], $3::timestamptz[]) AS m(s, t)
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(&series)
    .bind(&ts)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Rollup {
    series_id: i64,
    bucket: time::OffsetDateTime,
    count: i64,
    sum: f64,
    min: f64,
    max: f64,
    sketch: Vec<u8>,
}

/// Merges the batch into its one-minute rollups, per series and per metric.
async fn merge_rollups(tx: &mut PgConnection, tenant: &str, events: &[(i64, &Event)]) -> Result<(), IngestError> {
    let mut batch: BTreeMap<(i64, Micros), Agg> = BTreeMap::new();
    let mut metric_of: BTreeMap<i64, &str> = BTreeMap::new();
    for (series, event) in events {
        batch
            .entry((*series, floor_to(event.ts, MINUTE)))
            .or_insert_with(|| Agg::new(true))
            .add(event.value);
        metric_of.insert(*series, event.metric.as_str());
    }
    // The batch per metric: its series' minutes merged (before they take in
    // what is stored).
    let mut per_metric: BTreeMap<(&str, Micros), Agg> = BTreeMap::new();
    for ((series, minute), agg) in &batch {
        per_metric
            .entry((metric_of[series], *minute))
            .or_insert_with(|| Agg::new(true))
            .merge(agg);
    }
    merge_metric_rollups(tx, tenant, per_metric).await?;
    let series: Vec<i64> = batch.keys().map(|(s, _)| *s).collect();
    let buckets: Vec<time::OffsetDateTime> = batch.keys().map(|(_, b)| datetime(*b)).collect();
    // The touched series over the batch's minute span: an index range scan
    // per series (a join against the exact keys may be planned as a scan of
    // the whole partition). Rows the batch did not touch are skipped below.
    let mut ids: Vec<i64> = series.clone();
    ids.dedup();
    let first = batch.keys().map(|(_, b)| *b).min().unwrap_or(0);
    let last = batch.keys().map(|(_, b)| *b).max().unwrap_or(0);
    let existing: Vec<Rollup> = sqlx::query_as(
        "SELECT series_id, bucket, count, sum, min, max, sketch FROM rollups_1m
         WHERE tenant = $1 AND series_id = ANY($2) AND bucket >= $3 AND bucket <= $4",
    )
    .bind(tenant)
    .bind(&ids)
    .bind(datetime(first))
    .bind(datetime(last))
    .fetch_all(&mut *tx)
    .await?;
    for row in existing {
        let key = (row.series_id, crate::model::micros_of(row.bucket));
        if let Some(agg) = batch.get_mut(&key) {
            merge_stored(agg, row.count, row.sum, row.min, row.max, &row.sketch)?;
        }
    }
    let f = Figures::of(batch.values());
    sqlx::query(
        "INSERT INTO rollups_1m (tenant, series_id, bucket, count, sum, min, max, sketch)
         SELECT $1, * FROM unnest($2::int8[], $3::timestamptz[], $4::int8[], $5::float8[], $6::float8[],
                                  $7::float8[], $8::bytea[])
         ON CONFLICT (tenant, series_id, bucket) DO UPDATE SET
           count = excluded.count, sum = excluded.sum, min = excluded.min, max = excluded.max,
           sketch = excluded.sketch",
    )
    .bind(tenant)
    .bind(&series)
    .bind(&buckets)
    .bind(&f.counts)
    .bind(&f.sums)
    .bind(&f.mins)
    .bind(&f.maxs)
    .bind(&f.sketches)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Merges a stored rollup row's figures into `agg`.
fn merge_stored(agg: &mut Agg, count: i64, sum: f64, min: f64, max: f64, sketch: &[u8]) -> Result<(), IngestError> {
    let sketch = decode_sketch(sketch)?;
    agg.merge_parts(u64::try_from(count).unwrap_or(0), sum, min, max, Some(&sketch));
    Ok(())
}

/// Rollup rows' figures as an upsert binds them: a column each.
struct Figures {
    counts: Vec<i64>,
    sums: Vec<f64>,
    mins: Vec<f64>,
    maxs: Vec<f64>,
    sketches: Vec<Vec<u8>>,
}

impl Figures {
    fn of<'a>(aggs: impl Iterator<Item = &'a Agg>) -> Self {
        let mut f = Self {
            counts: Vec::new(),
            sums: Vec::new(),
            mins: Vec::new(),
            maxs: Vec::new(),
            sketches: Vec::new(),
        };
        for agg in aggs {
            f.counts.push(i64::try_from(agg.count).unwrap_or(i64::MAX));
            f.sums.push(agg.sum);
            f.mins.push(agg.min);
            f.maxs.push(agg.max);
            f.sketches
                .push(encode_sketch(agg.sketch.as_ref().expect("rollups keep sketches")));
        }
        f
    }
}

#[derive(sqlx::FromRow)]
struct MetricRollup {
    metric: String,
    bucket: time::OffsetDateTime,
    count: i64,
    sum: f64,
    min: f64,
    max: f64,
    sketch: Vec<u8>,
}

/// Merges a batch's per-metric minutes into `metric_rollups_1m`: the rows
/// of the touched metrics over the batch's minute span are read (a range of
/// the key per metric), merged, and written back.
async fn merge_metric_rollups(
    tx: &mut PgConnection,
    tenant: &str,
    mut batch: BTreeMap<(&str, Micros), Agg>,
) -> Result<(), IngestError> {
    let mut metrics: Vec<&str> = batch.keys().map(|(m, _)| *m).collect();
    metrics.dedup();
    let first = batch.keys().map(|(_, b)| *b).min().unwrap_or(0);
    let last = batch.keys().map(|(_, b)| *b).max().unwrap_or(0);
    let existing: Vec<MetricRollup> = sqlx::query_as(
        "SELECT metric, bucket, count, sum, min, max, sketch FROM metric_rollups_1m
         WHERE tenant = $1 AND metric = ANY($2) AND bucket >= $3 AND bucket <= $4",
    )
    .bind(tenant)
    .bind(&metrics)
    .bind(datetime(first))
    .bind(datetime(last))
    .fetch_all(&mut *tx)
    .await?;
    for MetricRollup {
        metric,
        bucket,
        count,
        sum,
        min,
        max,
        sketch,
    } in existing
    {
        // (The batch's own name for the metric: its keys borrow the events.)
        let Some(name) = metrics.iter().find(|m| **m == metric) else {
            continue;
        };
        if let Some(agg) = batch.get_mut(&(*name, crate::model::micros_of(bucket))) {
            merge_stored(agg, count, sum, min, max, &sketch)?;
        }
    }
    let names: Vec<&str> = batch.keys().map(|(m, _)| *m).collect();
    let buckets: Vec<time::OffsetDateTime> = batch.keys().map(|(_, b)| datetime(*b)).collect();
    let f = Figures::of(batch.values());
    sqlx::query(
        "INSERT INTO metric_rollups_1m (tenant, metric, bucket, count, sum, min, max, sketch)
         SELECT $1, * FROM unnest($2::text[], $3::timestamptz[], $4::int8[], $5::float8[], $6::float8[],
                                  $7::float8[], $8::bytea[])
         ON CONFLICT (tenant, metric, bucket) DO UPDATE SET
           count = excluded.count, sum = excluded.sum, min = excluded.min, max = excluded.max,
           sketch = excluded.sketch",
    )
    .bind(tenant)
    .bind(&names)
    .bind(&buckets)
    .bind(&f.counts)
    .bind(&f.sums)
    .bind(&f.mins)
    .bind(&f.maxs)
    .bind(&f.sketches)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Raises each touched metric's version and records where it changed: per
/// touched minute, the first and last second holding one of its events.
async fn bump_versions(
    tx: &mut PgConnection,
    tenant: &str,
    events: &[(i64, &Event)],
) -> Result<Vec<Change>, IngestError> {
    // Per metric: first and last event time, and per minute the same.
    type Touch = (Micros, Micros, BTreeMap<Micros, (Micros, Micros)>);
    let mut per_metric: BTreeMap<&str, Touch> = BTreeMap::new();
    for (_, event) in events {
        let entry = per_metric
            .entry(event.metric.as_str())
            .or_insert((event.ts, event.ts, BTreeMap::new()));
        entry.0 = entry.0.min(event.ts);
        entry.1 = entry.1.max(event.ts);
        let span = entry
            .2
            .entry(floor_to(event.ts, MINUTE))
            .or_insert((event.ts, event.ts));
        span.0 = span.0.min(event.ts);
        span.1 = span.1.max(event.ts);
    }
    let names: Vec<&str> = per_metric.keys().copied().collect();
    let firsts: Vec<time::OffsetDateTime> = per_metric.values().map(|v| datetime(v.0)).collect();
    let lasts: Vec<time::OffsetDateTime> = per_metric.values().map(|v| datetime(v.1)).collect();
    let versions: Vec<(String, i64)> = sqlx::query_as(
        "INSERT INTO metrics (tenant, name, version, first_seen, last_seen)
         SELECT $1, n, 1, f, l FROM unnest($2::text[], $3::timestamptz[], $4::timestamptz[]) AS t(n, f, l)
         ORDER BY n
         ON CONFLICT (tenant, name) DO UPDATE SET
           version = metrics.version + 1,
           first_seen = least(metrics.first_seen, excluded.first_seen),
           last_seen = greatest(metrics.last_seen, excluded.last_seen)
         RETURNING name, version",
    )
    .bind(tenant)
    .bind(&names)
    .bind(&firsts)
    .bind(&lasts)
    .fetch_all(&mut *tx)
    .await?;
    let mut change_metrics = Vec::new();
    let mut change_versions = Vec::new();
    let mut minute_metrics = Vec::new();
    let mut minute_values = Vec::new();
    let mut minute_firsts = Vec::new();
    let mut minute_lasts = Vec::new();
    let seconds = |t: Micros| t.div_euclid(SECOND);
    for (name, version) in &versions {
        change_metrics.push(name.as_str());
        change_versions.push(*version);
        for (minute, (first, last)) in &per_metric[name.as_str()].2 {
            minute_metrics.push(name.as_str());
            minute_values.push(seconds(*minute));
            minute_firsts.push(seconds(*first));
            minute_lasts.push(seconds(*last));
        }
    }
    sqlx::query(
        "INSERT INTO metric_changes (tenant, metric, version, minutes, firsts, lasts)
         SELECT $1, c.metric, c.version, array_agg(m.minute ORDER BY m.minute),
                array_agg(m.first ORDER BY m.minute), array_agg(m.last ORDER BY m.minute)
         FROM unnest($2::text[], $3::int8[]) AS c(metric, version)
         JOIN unnest($4::text[], $5::int8[], $6::int8[], $7::int8[]) AS m(metric, minute, first, last)
           ON m.metric = c.metric
         GROUP BY c.metric, c.version",
    )
    .bind(tenant)
    .bind(&change_metrics)
    .bind(&change_versions)
    .bind(&minute_metrics)
    .bind(&minute_values)
    .bind(&minute_firsts)
    .bind(&minute_lasts)
    .execute(&mut *tx)
    .await?;
    Ok(versions
        .into_iter()
        .map(|(metric, version)| Change {
            metric,
            version: u64::try_from(version).unwrap_or(0),
        })
        .collect())
}

fn span(events: &[(u32, Event)]) -> (Micros, Micros) {
    let lo = events.iter().map(|(_, e)| e.ts).min().unwrap_or(0);
    let hi = events.iter().map(|(_, e)| e.ts).max().unwrap_or(0);
    (lo, hi)
}

/// "no partition of relation … found for row".
fn is_missing_partition(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.code().as_deref() == Some("23514") && e.message().contains("no partition"))
}

fn is_deadlock(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.code().as_deref() == Some("40P01"))
}
