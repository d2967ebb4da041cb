//! What the Prometheus API reads from the metric store: the series a set of
//! matchers selects (from the series dictionary), their raw samples with
//! staleness markers, and the label names and values of a selection.

use std::sync::atomic::{AtomicUsize, Ordering};

use futures::TryStreamExt;
use promql_parser::label::{MatchOp, Matchers};
use sqlx::PgPool;

use super::engine::{EvalError, Labels, NAME, STALE_NAN, Series, matches};
use crate::metrics::store::parse_labels;
use crate::model::{datetime, micros_of};

/// A selected series: its id and labels (`__name__` included).
pub type Selected = (i64, Labels);

fn db(e: sqlx::Error) -> EvalError {
    EvalError::Source(e.into())
}

/// The series `matchers` select, at most `max_series` (more is a limit error).
pub async fn select(
    pool: &PgPool,
    tenant: &str,
    matchers: &Matchers,
    max_series: usize,
) -> Result<Vec<Selected>, EvalError> {
    // The metric names to look in: the one an equality matcher names, or
    // every metric of the tenant that the name matchers accept.
    let sets: Vec<&[promql_parser::label::Matcher]> = if matchers.or_matchers.is_empty() {
        vec![&matchers.matchers]
    } else {
        matchers.or_matchers.iter().map(Vec::as_slice).collect()
    };
    let mut names: Vec<String> = Vec::new();
    let mut all: Option<Vec<String>> = None;
    for set in &sets {
        let exact = set
            .iter()
            .find(|m| m.name == NAME && matches!(m.op, MatchOp::Equal))
            .map(|m| m.value.clone());
        match exact {
            Some(name) => names.push(name),
            None => {
                if all.is_none() {
                    all = Some(
                        sqlx::query_scalar("SELECT name FROM metrics WHERE tenant = $1")
                            .bind(tenant)
                            .fetch_all(pool)
                            .await
                            .map_err(db)?,
                    );
                }
                let by_name: Vec<_> = set.iter().filter(|m| m.name == NAME).collect();
                names.extend(
                    all.iter()
                        .flatten()
                        .filter(|n| by_name.iter().all(|m| m.is_match(n)))
                        .cloned(),
                );
            }
        }
    }
    // A name with U+0000 names no metric (and PostgreSQL text cannot hold it).
    names.retain(|n| !n.contains('\0'));
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut rows = sqlx::query_as::<_, (i64, String, serde_json::Value)>(
        "SELECT id, metric, labels FROM series WHERE tenant = $1 AND metric = ANY($2)",
    )
    .bind(tenant)
    .bind(&names)
    .fetch(pool);
    let mut out = Vec::new();
    while let Some((id, metric, labels)) = rows.try_next().await.map_err(db)? {
        let mut labels = parse_labels(labels);
        labels.insert(NAME.to_owned(), metric);
        if matches(matchers, &labels) {
            if out.len() == max_series {
                return Err(EvalError::Limit(format!(
                    "the selector {{{}}} selects more than {max_series} series (analytics.prometheus.max_series)",
                    describe(matchers)
                )));
            }
            out.push((id, labels));
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

fn describe(matchers: &Matchers) -> String {
    matchers
        .matchers
        .iter()
        .map(|m| format!("{}{}{:?}", m.name, m.op, m.value))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Series read by one statement; a selection of more is read by several
/// at once (up to [`READERS`]), each on its own connection and core.
const CHUNK: usize = 16;
const READERS: usize = 4;

/// The samples of `series` in `[from, to]` (milliseconds), staleness
/// markers included, each series' samples ascending with one per
/// millisecond. `budget` is the samples still allowed; it is spent.
pub async fn samples(
    pool: &PgPool,
    tenant: &str,
    series: Vec<Selected>,
    from: i64,
    to: i64,
    budget: &mut usize,
) -> Result<Vec<Series>, EvalError> {
    if series.is_empty() {
        return Ok(Vec::new());
    }
    // Microseconds; a sample at x.9999 ms belongs to millisecond x.
    let span = (
        datetime(from.saturating_mul(1000)),
        datetime(to.saturating_mul(1000) + 999),
    );
    let ids: Vec<i64> = series.iter().map(|(id, _)| *id).collect();
    let per = ids.len().div_ceil(READERS).max(CHUNK);
    let left = AtomicUsize::new(*budget);
    let chunks = futures::future::try_join_all(ids.chunks(per).map(|ids| read(pool, tenant, ids, span, &left))).await?;
    *budget = left.into_inner();
    let mut out: Vec<Series> = series
        .into_iter()
        .zip(chunks.into_iter().flatten())
        .map(|((_, labels), mut samples)| {
            // A marker sorts after a sample at the same millisecond; a
            // repeated millisecond keeps its first sample.
            samples.sort_by_key(|(t, v)| (*t, super::engine::is_stale(*v)));
            samples.dedup_by_key(|(t, _)| *t);
            Series { labels, samples }
        })
        .collect();
    out.shrink_to_fit();
    Ok(out)
}

/// The samples and markers of `ids`, in their order, spending `left`.
async fn read(
    pool: &PgPool,
    tenant: &str,
    ids: &[i64],
    (lo, hi): (time::OffsetDateTime, time::OffsetDateTime),
    left: &AtomicUsize,
) -> Result<Vec<Vec<(i64, f64)>>, EvalError> {
    // One row per series: its samples as two arrays and its markers as a
    // third, each from an index scan of that series alone (no sort, no
    // grouping; decoding arrays costs a fraction of a row per sample).
    type Arrays = (
        i64,
        Option<Vec<time::OffsetDateTime>>,
        Option<Vec<f64>>,
        Option<Vec<time::OffsetDateTime>>,
    );
    let mut rows = sqlx::query_as::<_, Arrays>(
        "SELECT s.id, e.ts, e.value, m.ts FROM unnest($2::int8[]) WITH ORDINALITY AS s(id, n)
         CROSS JOIN LATERAL (
           SELECT array_agg(ts) AS ts, array_agg(value) AS value FROM events
           WHERE tenant = $1 AND series_id = s.id AND ts >= $3 AND ts <= $4) AS e
         CROSS JOIN LATERAL (
           SELECT array_agg(ts) AS ts FROM stale_markers
           WHERE tenant = $1 AND series_id = s.id AND ts >= $3 AND ts <= $4) AS m
         ORDER BY s.n",
    )
    .bind(tenant)
    .bind(ids)
    .bind(lo)
    .bind(hi)
    .fetch(pool);
    let ms = |ts: &time::OffsetDateTime| micros_of(*ts).div_euclid(1000);
    let mut out = Vec::with_capacity(ids.len());
    while let Some((id, times, values, markers)) = rows.try_next().await.map_err(db)? {
        // One row per id, in their order (the zip in `samples` relies on it).
        if ids.get(out.len()) != Some(&id) {
            return Err(EvalError::Source(anyhow::anyhow!("series {id} read out of order")));
        }
        let (times, values, markers) = (
            times.unwrap_or_default(),
            values.unwrap_or_default(),
            markers.unwrap_or_default(),
        );
        let read = times.len() + markers.len();
        if left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(read))
            .is_err()
        {
            return Err(EvalError::Limit(
                "the query reads more raw samples than analytics.prometheus.max_samples allows: \
                 narrow the selectors or the range"
                    .into(),
            ));
        }
        let mut samples = Vec::with_capacity(read);
        samples.extend(times.iter().map(ms).zip(values));
        samples.extend(markers.iter().map(|t| (ms(t), f64::from_bits(STALE_NAN))));
        out.push(samples);
    }
    Ok(out)
}

/// Label names, or one label's values, over the series `selectors` select
/// (every series of the tenant when there are none), sorted.
pub async fn label_values(
    pool: &PgPool,
    tenant: &str,
    selectors: &[Matchers],
    label: Option<&str>,
    max_series: usize,
    limit: usize,
) -> Result<Vec<String>, EvalError> {
    let mut seen = std::collections::BTreeSet::new();
    let mut add = |labels: &Labels| match label {
        Some(label) => {
            if let Some(v) = labels.get(label) {
                seen.insert(v.clone());
            }
        }
        None => seen.extend(labels.keys().cloned()),
    };
    if selectors.is_empty() {
        if label == Some(NAME) {
            let names: Vec<String> = sqlx::query_scalar("SELECT name FROM metrics WHERE tenant = $1 ORDER BY name")
                .bind(tenant)
                .fetch_all(pool)
                .await
                .map_err(db)?;
            return Ok(names.into_iter().take(limit).collect());
        }
        let mut rows = sqlx::query_as::<_, (String, serde_json::Value)>(
            "SELECT DISTINCT metric, labels FROM series WHERE tenant = $1",
        )
        .bind(tenant)
        .fetch(pool);
        while let Some((metric, labels)) = rows.try_next().await.map_err(db)? {
            let mut labels = parse_labels(labels);
            labels.insert(NAME.to_owned(), metric);
            add(&labels);
        }
    } else {
        for matchers in selectors {
            for (_, labels) in select(pool, tenant, matchers, max_series).await? {
                add(&labels);
            }
        }
    }
    Ok(seen.into_iter().take(limit).collect())
}
