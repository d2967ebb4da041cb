//! Reads: time-bucketed queries, the metric list, a label's values, and the
//! change log that live watchers follow.
//!
//! A query whose bucket is a whole number of minutes reads the one-minute
//! rollups for the minute-aligned part of its range and raw events only for
//! the partial minutes at either end (when the range is not minute-aligned);
//! any other bucket reads raw events. Both build the same per-bucket state
//! ([`Agg`]), so the answers agree.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::TryStreamExt;
use sqlx::PgPool;
use time::OffsetDateTime;

use super::parse_labels;
use crate::aggregate::{Agg, decode_sketch};
use crate::model::{BucketResult, MINUTE, Micros, Query, SECOND, SeriesResult, datetime, floor_to, micros_of};

/// A query's limits (`analytics.query`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_buckets: u64,
    pub max_groups: usize,
    pub max_points: u64,
    pub max_raw_events: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A documented limit, named in the message.
    #[error("{0}")]
    Limit(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// The series of a metric that a query's filters select, with their groups.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Series id → index into `groups`.
    pub group_of: HashMap<i64, usize>,
    /// Group names, sorted.
    pub groups: Vec<String>,
}

impl Selection {
    pub fn series_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.group_of.keys().copied().collect();
        ids.sort_unstable();
        ids
    }
}

/// Whether the query's range holds at most `max_buckets` buckets.
pub fn check_buckets(query: &Query, limits: &Limits) -> Result<(), QueryError> {
    if query.bucket_count() > limits.max_buckets {
        return Err(QueryError::Limit(format!(
            "the range holds {} buckets of {} s; max_buckets is {} per series: use a wider bucket or a shorter range",
            query.bucket_count(),
            query.bucket / SECOND,
            limits.max_buckets
        )));
    }
    Ok(())
}

/// Finds the series a query covers and checks the group limits.
pub async fn select(pool: &PgPool, tenant: &str, query: &Query, limits: &Limits) -> Result<Selection, QueryError> {
    check_buckets(query, limits)?;
    let rows: Vec<(i64, serde_json::Value)> =
        sqlx::query_as("SELECT id, labels FROM series WHERE tenant = $1 AND metric = $2")
            .bind(tenant)
            .bind(&query.metric)
            .fetch_all(pool)
            .await?;
    let mut by_group: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (id, labels) in rows {
        let labels = parse_labels(labels);
        if !query.filters.iter().all(|m| m.matches(&labels)) {
            continue;
        }
        let group = query
            .group_by
            .as_ref()
            .and_then(|g| labels.get(g).cloned())
            .unwrap_or_default();
        by_group.entry(group).or_default().push(id);
    }
    if by_group.len() > limits.max_groups {
        return Err(QueryError::Limit(format!(
            "group_by {:?} has {} values; max_groups is {}: add a filter",
            query.group_by.as_deref().unwrap_or(""),
            by_group.len(),
            limits.max_groups
        )));
    }
    let points = query.bucket_count().saturating_mul(by_group.len() as u64);
    if points > limits.max_points {
        return Err(QueryError::Limit(format!(
            "{} groups × {} buckets is {points} points; max_points is {}: use a wider bucket, a shorter range or a filter",
            by_group.len(),
            query.bucket_count(),
            limits.max_points
        )));
    }
    let mut group_of = HashMap::new();
    let mut groups = Vec::with_capacity(by_group.len());
    for (index, (group, ids)) in by_group.into_iter().enumerate() {
        ids.into_iter().for_each(|id| {
            group_of.insert(id, index);
        });
        groups.push(group);
    }
    Ok(Selection { group_of, groups })
}

/// Per (group, bucket start) state.
pub type Cells = HashMap<(usize, Micros), Agg>;

/// What one query reads: its tenant, query, selected series and limits.
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    pub pool: &'a PgPool,
    pub tenant: &'a str,
    pub query: &'a Query,
    pub selection: &'a Selection,
    pub limits: &'a Limits,
}

/// Aggregates `[start, end)` of the selection into `cells`.
pub async fn accumulate(scope: Scope<'_>, start: Micros, end: Micros, cells: &mut Cells) -> Result<(), QueryError> {
    if start >= end || scope.selection.group_of.is_empty() {
        return Ok(());
    }
    let mut raw_budget = scope.limits.max_raw_events;
    if scope.query.bucket % MINUTE == 0 {
        let inner_start = floor_to(start + MINUTE - 1, MINUTE);
        let inner_end = floor_to(end, MINUTE);
        if inner_start < inner_end {
            raw(scope, start, inner_start, &mut raw_budget, cells).await?;
            rollups(scope, inner_start, inner_end, cells).await?;
            raw(scope, inner_end, end, &mut raw_budget, cells).await?;
            return Ok(());
        }
    }
    raw(scope, start, end, &mut raw_budget, cells).await
}

async fn raw(
    scope: Scope<'_>,
    start: Micros,
    end: Micros,
    budget: &mut u64,
    cells: &mut Cells,
) -> Result<(), QueryError> {
    if start >= end {
        return Ok(());
    }
    let sketch = scope.query.needs_sketch();
    let ids = scope.selection.series_ids();
    let mut rows = sqlx::query_as::<_, (i64, OffsetDateTime, f64)>(
        "SELECT series_id, ts, value FROM events
         WHERE tenant = $1 AND series_id = ANY($2) AND ts >= $3 AND ts < $4",
    )
    .bind(scope.tenant)
    .bind(&ids)
    .bind(datetime(start))
    .bind(datetime(end))
    .fetch(scope.pool);
    let limit = scope.limits.max_raw_events;
    while let Some((series, ts, value)) = rows.try_next().await? {
        if *budget == 0 {
            return Err(QueryError::Limit(format!(
                "the query reads more than max_raw_events ({limit}) raw events: use a bucket that is a \
                 whole number of minutes (read from rollups), a shorter range or a filter"
            )));
        }
        *budget -= 1;
        let group = scope.selection.group_of[&series];
        cells
            .entry((group, floor_to(micros_of(ts), scope.query.bucket)))
            .or_insert_with(|| Agg::new(sketch))
            .add(value);
    }
    Ok(())
}

/// A one-minute rollup as read (the sketch only when a percentile is asked for).
#[derive(sqlx::FromRow)]
struct RollupRow {
    series_id: i64,
    bucket: OffsetDateTime,
    count: i64,
    sum: f64,
    min: f64,
    max: f64,
    sketch: Option<Vec<u8>>,
}

/// Merges the rollups of `[start, end)` (whole minutes) into `cells`. A
/// query of a whole metric (no filter, no group_by) reads the per-metric
/// rollups, one row a minute, for the minutes they cover; anything else
/// merges the selected series' rollups.
async fn rollups(scope: Scope<'_>, start: Micros, end: Micros, cells: &mut Cells) -> Result<(), QueryError> {
    if !scope.query.filters.is_empty() || scope.query.group_by.is_some() {
        return series_rollups(scope, start, end, cells).await;
    }
    let since: Option<OffsetDateTime> =
        sqlx::query_scalar("SELECT since FROM metric_rollups_since WHERE tenant = $1 AND metric = $2")
            .bind(scope.tenant)
            .bind(&scope.query.metric)
            .fetch_optional(scope.pool)
            .await?;
    let split = since.map_or(start, |s| micros_of(s).clamp(start, end));
    series_rollups(scope, start, split, cells).await?;
    metric_rollups(scope, split, end, cells).await
}

async fn metric_rollups(scope: Scope<'_>, start: Micros, end: Micros, cells: &mut Cells) -> Result<(), QueryError> {
    if start >= end {
        return Ok(());
    }
    let sketch = scope.query.needs_sketch();
    let sql = format!(
        "SELECT 0::int8 AS series_id, {} FROM metric_rollups_1m
         WHERE tenant = $1 AND metric = $2 AND bucket >= $3 AND bucket < $4",
        figures(sketch)
    );
    let rows = sqlx::query_as::<_, RollupRow>(&sql)
        .bind(scope.tenant)
        .bind(&scope.query.metric)
        .bind(datetime(start))
        .bind(datetime(end))
        .fetch(scope.pool);
    // Not grouped: every series is in the one group.
    merge_rows(rows, |_| 0, scope.query.bucket, sketch, cells).await
}

/// A rollup read's columns after the key: the sketch only when a
/// percentile is asked for.
fn figures(sketch: bool) -> &'static str {
    if sketch {
        "bucket, count, sum, min, max, sketch"
    } else {
        "bucket, count, sum, min, max, NULL::bytea AS sketch"
    }
}

/// Rollup rows one statement reads (about) before a range is split.
const ROWS_PER_READER: i64 = 10_000;
/// Statements that read one query's per-series rollups at most, each on its
/// own task: PostgreSQL scans and the service decodes sketches on every core.
const READERS: i64 = 4;

/// What a task reading per-series rollups needs, owned.
struct SeriesRead {
    pool: PgPool,
    tenant: String,
    ids: Vec<i64>,
    group_of: HashMap<i64, usize>,
    bucket: Micros,
    sketch: bool,
}

impl SeriesRead {
    async fn read(&self, start: Micros, end: Micros, cells: &mut Cells) -> Result<(), QueryError> {
        let sql = format!(
            "SELECT series_id, {} FROM rollups_1m
             WHERE tenant = $1 AND series_id = ANY($2) AND bucket >= $3 AND bucket < $4",
            figures(self.sketch)
        );
        let rows = sqlx::query_as::<_, RollupRow>(&sql)
            .bind(&self.tenant)
            .bind(&self.ids)
            .bind(datetime(start))
            .bind(datetime(end))
            .fetch(&self.pool);
        merge_rows(rows, |series| self.group_of[&series], self.bucket, self.sketch, cells).await
    }
}

/// Merges the selected series' rollups of `[start, end)`. A long read is
/// split in time, at the query's bucket boundaries (so no bucket is in two
/// slices), over up to [`READERS`] concurrent statements.
async fn series_rollups(scope: Scope<'_>, start: Micros, end: Micros, cells: &mut Cells) -> Result<(), QueryError> {
    if start >= end {
        return Ok(());
    }
    let read = std::sync::Arc::new(SeriesRead {
        pool: scope.pool.clone(),
        tenant: scope.tenant.to_owned(),
        ids: scope.selection.series_ids(),
        group_of: scope.selection.group_of.clone(),
        bucket: scope.query.bucket,
        sketch: scope.query.needs_sketch(),
    });
    let rows = (read.ids.len() as i64).saturating_mul((end - start) / MINUTE);
    let readers = (rows / ROWS_PER_READER).clamp(1, READERS);
    let mut bounds: Vec<Micros> = (0..=readers)
        .map(|i| floor_to(start + (end - start) / readers * i, read.bucket).clamp(start, end))
        .collect();
    *bounds.last_mut().expect("at least two bounds") = end;
    bounds.dedup();
    if bounds.len() <= 2 {
        return read.read(start, end, cells).await;
    }
    let slices = bounds.windows(2).map(|w| {
        let (read, from, to) = (read.clone(), w[0], w[1]);
        tokio::spawn(async move {
            let mut part = Cells::new();
            read.read(from, to, &mut part).await.map(|()| part)
        })
    });
    for slice in futures::future::join_all(slices.collect::<Vec<_>>()).await {
        let part = slice.map_err(|e| QueryError::Other(anyhow::anyhow!("a rollup reader stopped: {e}")))??;
        // Slices hold distinct buckets; the raw edges of the range may share one.
        for (key, agg) in part {
            match cells.entry(key) {
                std::collections::hash_map::Entry::Occupied(mut cell) => cell.get_mut().merge(&agg),
                std::collections::hash_map::Entry::Vacant(cell) => {
                    cell.insert(agg);
                }
            }
        }
    }
    Ok(())
}

async fn merge_rows(
    mut rows: impl futures::Stream<Item = Result<RollupRow, sqlx::Error>> + Unpin,
    group_of: impl Fn(i64) -> usize,
    bucket: Micros,
    sketch: bool,
    cells: &mut Cells,
) -> Result<(), QueryError> {
    while let Some(row) = rows.try_next().await? {
        let group = group_of(row.series_id);
        let decoded = match row.sketch {
            Some(bytes) => Some(decode_sketch(&bytes)?),
            None => None,
        };
        cells
            .entry((group, floor_to(micros_of(row.bucket), bucket)))
            .or_insert_with(|| Agg::new(sketch))
            .merge_parts(
                u64::try_from(row.count).unwrap_or(0),
                row.sum,
                row.min,
                row.max,
                decoded.as_ref(),
            );
    }
    Ok(())
}

/// Renders cells as series: groups sorted, buckets oldest first, one value
/// per aggregation in the query's order.
pub fn render(query: &Query, selection: &Selection, cells: &Cells) -> Vec<SeriesResult> {
    render_from(
        query,
        &selection.groups,
        cells.iter().map(|((g, start), agg)| (*g, *start, agg)),
    )
}

/// Renders `(group index, bucket start, state)` as series of `groups`.
pub fn render_from<'a>(
    query: &Query,
    groups: &[String],
    cells: impl Iterator<Item = (usize, Micros, &'a Agg)>,
) -> Vec<SeriesResult> {
    let mut per_group: Vec<Vec<BucketResult>> = vec![Vec::new(); groups.len()];
    for (group, start, agg) in cells {
        per_group[group].push(bucket_result(query, start, agg));
    }
    per_group
        .into_iter()
        .zip(groups)
        .filter(|(buckets, _)| !buckets.is_empty())
        .map(|(mut buckets, group)| {
            buckets.sort_by_key(|b| b.start);
            SeriesResult {
                group: group.clone(),
                buckets,
            }
        })
        .collect()
}

pub fn bucket_result(query: &Query, start: Micros, agg: &Agg) -> BucketResult {
    BucketResult {
        start,
        values: query.aggregations.iter().map(|a| agg.value(*a)).collect(),
        count: agg.count,
    }
}

/// The series a query covers and its cells over its whole range.
async fn cells(pool: &PgPool, tenant: &str, query: &Query, limits: &Limits) -> Result<(Selection, Cells), QueryError> {
    let selection = select(pool, tenant, query, limits).await?;
    let mut cells = Cells::new();
    let scope = Scope {
        pool,
        tenant,
        query,
        selection: &selection,
        limits,
    };
    accumulate(scope, query.start, query.end, &mut cells).await?;
    Ok((selection, cells))
}

/// Runs a query over its range.
pub async fn query(
    pool: &PgPool,
    tenant: &str,
    query: &Query,
    limits: &Limits,
) -> Result<Vec<SeriesResult>, QueryError> {
    let (selection, cells) = cells(pool, tenant, query, limits).await?;
    Ok(render(query, &selection, &cells))
}

/// Per group, the state of `[query.start, query.end)` as one whole (the
/// query's bucket only picks how it is read: whole minutes from rollups).
/// Returns the selection's groups and the state of each group with events.
pub async fn window(
    pool: &PgPool,
    tenant: &str,
    query: &Query,
    limits: &Limits,
) -> Result<(Vec<String>, BTreeMap<usize, Agg>), QueryError> {
    let (selection, cells) = cells(pool, tenant, query, limits).await?;
    let mut per_group: BTreeMap<usize, Agg> = BTreeMap::new();
    for ((group, _), agg) in cells {
        per_group
            .entry(group)
            .or_insert_with(|| Agg::new(query.needs_sketch()))
            .merge(&agg);
    }
    Ok((selection.groups, per_group))
}

/// A query without `group_by` over its range: its buckets, and the state of
/// the whole range (every bucket merged) — an analysis's chart and summary
/// from one read.
pub async fn query_with_total(
    pool: &PgPool,
    tenant: &str,
    query: &Query,
    limits: &Limits,
) -> Result<(Vec<BucketResult>, Agg), QueryError> {
    let (_, cells) = cells(pool, tenant, query, limits).await?;
    let mut total = Agg::new(query.needs_sketch());
    let mut buckets: Vec<BucketResult> = cells
        .iter()
        .map(|((_, start), agg)| {
            total.merge(agg);
            bucket_result(query, *start, agg)
        })
        .collect();
    buckets.sort_by_key(|b| b.start);
    Ok((buckets, total))
}

/// The tenant's metrics with events in `[start, end)`, by name.
pub async fn metrics_in(pool: &PgPool, tenant: &str, start: Micros, end: Micros) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT name FROM metrics WHERE tenant = $1 AND first_seen < $3 AND last_seen >= $2 ORDER BY name",
    )
    .bind(tenant)
    .bind(datetime(start))
    .bind(datetime(end))
    .fetch_all(pool)
    .await
}

/// A metric as listed.
#[derive(Debug, Clone)]
pub struct MetricRow {
    pub name: String,
    pub label_keys: Vec<String>,
    pub first_seen: OffsetDateTime,
    pub last_seen: OffsetDateTime,
}

/// Metrics named after `after`, starting with `prefix`, in name order.
pub async fn list_metrics(
    pool: &PgPool,
    tenant: &str,
    prefix: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<MetricRow>, sqlx::Error> {
    let rows: Vec<(String, OffsetDateTime, OffsetDateTime)> = sqlx::query_as(
        "SELECT name, first_seen, last_seen FROM metrics
         WHERE tenant = $1 AND starts_with(name, $2) AND ($3::text IS NULL OR name > $3)
         ORDER BY name LIMIT $4",
    )
    .bind(tenant)
    .bind(prefix)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let keys: Vec<(String, Vec<String>)> = sqlx::query_as(
        "SELECT metric, array_agg(DISTINCT k ORDER BY k)
         FROM series, jsonb_object_keys(labels) AS k
         WHERE tenant = $1 AND metric = ANY($2)
         GROUP BY metric",
    )
    .bind(tenant)
    .bind(&names)
    .fetch_all(pool)
    .await?;
    let mut keys: HashMap<String, Vec<String>> = keys.into_iter().collect();
    Ok(rows
        .into_iter()
        .map(|(name, first_seen, last_seen)| MetricRow {
            label_keys: keys.remove(&name).unwrap_or_default(),
            name,
            first_seen,
            last_seen,
        })
        .collect())
}

/// Values of `label` across the metric's series, after `after`, in order.
pub async fn label_values(
    pool: &PgPool,
    tenant: &str,
    metric: &str,
    label: &str,
    prefix: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT labels ->> $3 AS v FROM series
         WHERE tenant = $1 AND metric = $2 AND labels ? $3
           AND starts_with(labels ->> $3, $4) AND ($5::text IS NULL OR labels ->> $3 > $5)
         ORDER BY v LIMIT $6",
    )
    .bind(tenant)
    .bind(metric)
    .bind(label)
    .bind(prefix)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A metric's current version (0 when it has none yet).
pub async fn metric_version<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    tenant: &str,
    metric: &str,
) -> Result<u64, sqlx::Error> {
    let version: Option<i64> = sqlx::query_scalar("SELECT version FROM metrics WHERE tenant = $1 AND name = $2")
        .bind(tenant)
        .bind(metric)
        .fetch_optional(executor)
        .await?;
    Ok(version.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
}

/// What a metric's changes after some version touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    /// The newest version among them.
    pub newest: u64,
    /// Half-open time spans (µs) that held their events, sorted, disjoint.
    pub spans: Vec<(Micros, Micros)>,
}

impl Changes {
    /// The starts of the `bucket`-wide buckets that meet a span, in `[from, to)`.
    pub fn bucket_starts(&self, bucket: Micros, from: Micros, to: Micros) -> BTreeSet<Micros> {
        let mut starts = BTreeSet::new();
        for &(lo, hi) in &self.spans {
            let mut b = floor_to(lo.max(from), bucket);
            while b < hi.min(to) {
                if b >= from {
                    starts.insert(b);
                }
                b += bucket;
            }
        }
        starts
    }
}

/// The changes of a metric after `after`: `None` when the log no longer holds
/// all of them (the caller sends a snapshot instead).
pub async fn changes_after(
    pool: &PgPool,
    tenant: &str,
    metric: &str,
    after: u64,
) -> Result<Option<Changes>, sqlx::Error> {
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    type Row = (i64, Vec<i64>, Option<Vec<i64>>, Option<Vec<i64>>);
    let read = || {
        sqlx::query_as::<_, Row>(
            "SELECT version, minutes, firsts, lasts FROM metric_changes
             WHERE tenant = $1 AND metric = $2 AND version > $3 ORDER BY version",
        )
        .bind(tenant)
        .bind(metric)
        .bind(after)
        .fetch_all(pool)
    };
    let mut rows = read().await?;
    if rows.is_empty() {
        // Nothing after `after`: fine if the metric is not ahead of it. A
        // batch may have committed (its version and its change row, in one
        // transaction) between the two reads: the version then says so, and
        // its change is read again rather than taken for a pruned log.
        let current = metric_version(pool, tenant, metric).await?;
        if current == u64::try_from(after).unwrap_or(0) {
            return Ok(Some(Changes {
                newest: current,
                spans: Vec::new(),
            }));
        }
        rows = read().await?;
    }
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    if first.0 != after + 1 {
        return Ok(None);
    }
    let newest = rows.last().map_or(after, |r| r.0);
    let mut spans: Vec<(Micros, Micros)> = Vec::new();
    for (_, minutes, firsts, lasts) in rows {
        for (i, minute) in minutes.iter().enumerate() {
            let minute = minute * SECOND;
            // Rows from before `firsts`/`lasts` existed stand for whole minutes.
            let lo = firsts.as_ref().and_then(|f| f.get(i)).map_or(minute, |s| s * SECOND);
            let hi = lasts
                .as_ref()
                .and_then(|l| l.get(i))
                .map_or(minute + MINUTE, |s| s * SECOND + SECOND);
            spans.push((lo, hi));
        }
    }
    spans.sort_unstable();
    let mut merged: Vec<(Micros, Micros)> = Vec::with_capacity(spans.len());
    for (lo, hi) in spans {
        match merged.last_mut() {
            Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    Ok(Some(Changes {
        newest: u64::try_from(newest).unwrap_or(0),
        spans: merged,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_touches_only_the_buckets_its_events_fall_in() {
        // Events at 10 s and 11 s of minute 2, and all of minute 5 (an old row).
        let changes = Changes {
            newest: 3,
            spans: vec![
                (2 * MINUTE + 10 * SECOND, 2 * MINUTE + 12 * SECOND),
                (5 * MINUTE, 6 * MINUTE),
            ],
        };
        let seconds: Vec<Micros> = changes.bucket_starts(SECOND, 0, 10 * MINUTE).into_iter().collect();
        assert_eq!(seconds.len(), 2 + 60);
        assert_eq!(&seconds[..2], &[2 * MINUTE + 10 * SECOND, 2 * MINUTE + 11 * SECOND]);
        let minutes: Vec<Micros> = changes.bucket_starts(MINUTE, 0, 10 * MINUTE).into_iter().collect();
        assert_eq!(minutes, vec![2 * MINUTE, 5 * MINUTE]);
        // Clipped to the range asked for, buckets that start before it excluded.
        let window: Vec<Micros> = changes
            .bucket_starts(MINUTE, 2 * MINUTE + 30 * SECOND, 6 * MINUTE)
            .into_iter()
            .collect();
        assert_eq!(window, vec![5 * MINUTE]);
        let hours: Vec<Micros> = changes
            .bucket_starts(60 * MINUTE, 0, 120 * MINUTE)
            .into_iter()
            .collect();
        assert_eq!(hours, vec![0]);
    }
}
