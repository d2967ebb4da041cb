//! Answers to repeated queries, kept per replica and brought up to date by
//! the metric's change log rather than recomputed: a dashboard asks the same
//! query (with a sliding range) again and again.
//!
//! An entry holds, for one query shape (everything but the range) of one
//! tenant, the full buckets of a contiguous span and the metric version they
//! reflect. A query first reads the metric's current version; if the entry
//! is behind, the buckets the missed changes touched (`metric_changes`) are
//! recomputed from PostgreSQL — or the entry starts over when the log no
//! longer reaches back. So an answer is never older than the version read at
//! the start of the query: read-your-writes holds across replicas. Buckets
//! the range needs beyond the span are computed and added; partial buckets
//! at the range's ends are computed fresh every time and never kept.
//!
//! Only queries whose bucket is a whole number of minutes are kept (their
//! buckets come from rollups), and only ranges inside the rollup retention
//! (dropping an expired partition changes no version). The cache holds at most
//! `analytics.query.cache_buckets` buckets in all, dropping the least
//! recently used entries first; 0 turns it off.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sqlx::PgPool;

use crate::aggregate::Agg;
use crate::metrics::store::read::{self, Cells, Limits, QueryError, Scope, Selection};
use crate::model::{MINUTE, Micros, Query, SeriesResult, floor_to};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    tenant: String,
    /// The query with its range cleared.
    shape: Query,
}

#[derive(Default)]
struct Entry {
    version: u64,
    /// Full buckets of `[from, to)`, by (group, start).
    cells: HashMap<(String, Micros), Agg>,
    from: Micros,
    to: Micros,
}

impl Entry {
    fn reset(&mut self) {
        self.cells.clear();
        self.from = 0;
        self.to = 0;
    }
}

struct Slot {
    entry: Arc<tokio::sync::Mutex<Entry>>,
    last_used: Instant,
    buckets: usize,
}

pub struct QueryCache {
    slots: Mutex<HashMap<Key, Slot>>,
    budget: usize,
    /// The rollup retention: ranges reaching past it are not kept, since
    /// dropping a partition changes no version.
    retention: Micros,
}

impl QueryCache {
    pub fn new(budget: usize, retention: Micros) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            budget,
            retention,
        }
    }

    fn entry(&self, key: &Key) -> Arc<tokio::sync::Mutex<Entry>> {
        let mut slots = self.slots.lock().expect("cache lock");
        let slot = slots.entry(key.clone()).or_insert_with(|| Slot {
            entry: Arc::default(),
            last_used: Instant::now(),
            buckets: 0,
        });
        slot.last_used = Instant::now();
        slot.entry.clone()
    }

    /// Records an entry's size, then drops least recently used entries
    /// (never `keep`) until the cache fits its budget.
    fn account(&self, keep: &Key, buckets: usize) {
        let mut slots = self.slots.lock().expect("cache lock");
        if let Some(slot) = slots.get_mut(keep) {
            slot.buckets = buckets;
        }
        let mut total: usize = slots.values().map(|s| s.buckets).sum();
        while total > self.budget {
            let Some(oldest) = slots
                .iter()
                .filter(|(k, _)| *k != keep)
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            total -= slots.remove(&oldest).map_or(0, |s| s.buckets);
        }
        if total > self.budget {
            // The entry alone is over budget: keep nothing.
            slots.remove(keep);
        }
    }

    /// Answers `query` as [`read::query`] would, from the cache where it can.
    pub async fn query(
        &self,
        pool: &PgPool,
        tenant: &str,
        query: &Query,
        limits: &Limits,
    ) -> Result<Vec<SeriesResult>, QueryError> {
        let bucket = query.bucket;
        let full_from = floor_to(query.start + bucket - 1, bucket);
        let full_to = floor_to(query.end, bucket);
        let horizon = crate::model::now_micros().saturating_sub(self.retention);
        if self.budget == 0 || bucket % MINUTE != 0 || full_from >= full_to || full_from < horizon {
            return read::query(pool, tenant, query, limits).await;
        }
        // The version first: whatever is read after it is at least as new.
        let version = read::metric_version(pool, tenant, &query.metric).await?;
        let selection = read::select(pool, tenant, query, limits).await?;
        let key = Key {
            tenant: tenant.to_owned(),
            shape: Query {
                start: 0,
                end: 0,
                ..query.clone()
            },
        };
        let entry = self.entry(&key);
        let mut entry = entry.lock().await;
        let scope = Scope {
            pool,
            tenant,
            query,
            selection: &selection,
            limits,
        };
        if entry.from == entry.to {
            entry.version = version;
        } else if entry.version != version {
            catch_up(&mut entry, scope, version).await?;
        }
        if entry.from == entry.to || entry.to <= full_from || entry.from >= full_to {
            entry.reset();
            fill(&mut entry, scope, full_from, full_to).await?;
            entry.from = full_from;
            entry.to = full_to;
        } else {
            if full_from < entry.from {
                let to = entry.from;
                fill(&mut entry, scope, full_from, to).await?;
                entry.from = full_from;
            }
            if full_to > entry.to {
                let from = entry.to;
                fill(&mut entry, scope, from, full_to).await?;
                entry.to = full_to;
            }
        }
        // A sliding range leaves old buckets behind: keep at most one range's worth before it.
        let keep_from = full_from - (full_to - full_from);
        if entry.from < keep_from {
            entry.cells.retain(|(_, start), _| *start >= keep_from);
            entry.from = keep_from;
        }
        // The partial buckets at the ends, fresh.
        let mut edges = Cells::new();
        read::accumulate(scope, query.start, full_from.min(query.end), &mut edges).await?;
        read::accumulate(scope, full_to.max(full_from), query.end, &mut edges).await?;
        let result = render(query, &selection, &entry, full_from, full_to, &edges);
        let buckets = entry.cells.len();
        drop(entry);
        self.account(&key, buckets);
        Ok(result)
    }
}

/// Adds the full buckets of `[from, to)` to the entry.
async fn fill(entry: &mut Entry, scope: Scope<'_>, from: Micros, to: Micros) -> Result<(), QueryError> {
    let mut cells = Cells::new();
    read::accumulate(scope, from, to, &mut cells).await?;
    for ((group, start), agg) in cells {
        entry.cells.insert((scope.selection.groups[group].clone(), start), agg);
    }
    Ok(())
}

/// Recomputes the buckets that changes after the entry's version touched.
async fn catch_up(entry: &mut Entry, scope: Scope<'_>, version: u64) -> Result<(), QueryError> {
    let changes = read::changes_after(scope.pool, scope.tenant, &scope.query.metric, entry.version).await?;
    let Some(changes) = changes else {
        entry.reset();
        entry.version = version;
        return Ok(());
    };
    let bucket = scope.query.bucket;
    let starts = changes.bucket_starts(bucket, entry.from, entry.to);
    entry.cells.retain(|(_, s), _| !starts.contains(s));
    // Adjacent buckets in one read.
    let mut starts = starts.into_iter().peekable();
    while let Some(from) = starts.next() {
        let mut to = from + bucket;
        while starts.peek() == Some(&to) {
            starts.next();
            to += bucket;
        }
        fill(entry, scope, from, to).await?;
    }
    entry.version = changes.newest.max(version);
    Ok(())
}

fn render(
    query: &Query,
    selection: &Selection,
    entry: &Entry,
    full_from: Micros,
    full_to: Micros,
    edges: &Cells,
) -> Vec<SeriesResult> {
    let index: HashMap<&str, usize> = selection
        .groups
        .iter()
        .enumerate()
        .map(|(i, g)| (g.as_str(), i))
        .collect();
    let kept = entry
        .cells
        .iter()
        .filter(|((_, start), _)| *start >= full_from && *start < full_to)
        .filter_map(|((group, start), agg)| index.get(group.as_str()).map(|&i| (i, *start, agg)));
    let fresh = edges.iter().map(|((group, start), agg)| (*group, *start, agg));
    read::render_from(query, &selection.groups, kept.chain(fresh))
}
