//! What the Prometheus API reads from the metric store: the series a set of
//! matchers selects (from the series dictionary), their raw samples with
//! staleness markers, and the label names and values of a selection.

use std::collections::HashMap;

use futures::TryStreamExt;
use promql_parser::label::{MatchOp, Matchers};
use sqlx::PgPool;

use super::engine::{EvalError, Labels, NAME, STALE_NAN, Series, matches};
use crate::metrics::store::parse_labels;
use crate::model::datetime;

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
    let ids: Vec<i64> = series.iter().map(|(id, _)| *id).collect();
    let index: HashMap<i64, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut out: Vec<Series> = series
        .into_iter()
        .map(|(_, labels)| Series {
            labels,
            samples: Vec::new(),
        })
        .collect();
    // Microseconds; a sample at x.9999 ms belongs to millisecond x.
    let (lo, hi) = (
        datetime(from.saturating_mul(1000)),
        datetime(to.saturating_mul(1000) + 999),
    );
    let mut rows = sqlx::query_as::<_, (i64, time::OffsetDateTime, f64)>(
        "SELECT series_id, ts, value FROM events
         WHERE tenant = $1 AND series_id = ANY($2) AND ts >= $3 AND ts <= $4
         UNION ALL
         SELECT series_id, ts, 'NaN'::float8 FROM stale_markers
         WHERE tenant = $1 AND series_id = ANY($2) AND ts >= $3 AND ts <= $4",
    )
    .bind(tenant)
    .bind(&ids)
    .bind(lo)
    .bind(hi)
    .fetch(pool);
    while let Some((id, ts, value)) = rows.try_next().await.map_err(db)? {
        if *budget == 0 {
            return Err(EvalError::Limit(
                "the query reads more raw samples than analytics.prometheus.max_samples allows: \
                 narrow the selectors or the range"
                    .into(),
            ));
        }
        *budget -= 1;
        let ms = i64::try_from(ts.unix_timestamp_nanos().div_euclid(1_000_000)).unwrap_or(i64::MAX);
        // Stored NaN is only ever a marker (ingest refuses NaN values).
        let value = if value.is_nan() {
            f64::from_bits(STALE_NAN)
        } else {
            value
        };
        if let Some(&i) = index.get(&id) {
            out[i].samples.push((ms, value));
        }
    }
    for s in &mut out {
        // A marker sorts after a sample at the same millisecond; a repeated
        // millisecond keeps its first sample.
        s.samples.sort_by_key(|(t, v)| (*t, super::engine::is_stale(*v)));
        s.samples.dedup_by_key(|(t, _)| *t);
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
