//! PostgreSQL access for metrics: ingest (`ingest`), reads (`read`),
//! partition upkeep (`partitions`), the series whose data expired
//! (`series`), and what senders say about their metrics (`metadata`).

pub mod ingest;
pub mod metadata;
pub mod partitions;
pub mod read;
pub mod series;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// The series dictionary's hot part, per replica: (tenant, metric, labels) → id.
/// An id never changes, but its series goes once its data has expired
/// ([`series::reap`]); an ingest checks the ids it took from here under the
/// metrics' locks and drops those that went. The cache is emptied when it
/// reaches its bound rather than tracking recency.
#[derive(Debug)]
pub struct SeriesCache {
    map: Mutex<HashMap<(String, String, String), i64>>,
    bound: usize,
}

impl SeriesCache {
    pub fn new(bound: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            bound,
        }
    }

    pub fn get(&self, tenant: &str, metric: &str, labels: &str) -> Option<i64> {
        // Borrowed-tuple lookups need an owned key; the strings are short.
        let key = (tenant.to_owned(), metric.to_owned(), labels.to_owned());
        self.map.lock().expect("cache lock").get(&key).copied()
    }

    /// Forgets series that no longer exist.
    pub fn forget(&self, gone: &[(String, String, String)]) {
        let mut map = self.map.lock().expect("cache lock");
        for key in gone {
            map.remove(key);
        }
    }

    pub fn put_all(&self, tenant: &str, metric: &str, entries: impl IntoIterator<Item = (String, i64)>) {
        let mut map = self.map.lock().expect("cache lock");
        for (labels, id) in entries {
            if map.len() >= self.bound {
                map.clear();
            }
            map.insert((tenant.to_owned(), metric.to_owned(), labels), id);
        }
    }
}

/// A label set's canonical text (keys sorted, compact JSON): the cache key,
/// and what is stored as the series' `labels`.
pub fn canonical_labels(labels: &BTreeMap<String, String>) -> String {
    serde_json::to_string(labels).expect("string maps serialise")
}

/// The `labels` of a stored series, back from jsonb.
pub fn parse_labels(value: serde_json::Value) -> BTreeMap<String, String> {
    match value {
        serde_json::Value::Object(map) => map
            .into_iter()
            .filter_map(|(k, v)| match v {
                serde_json::Value::String(s) => Some((k, s)),
                _ => None,
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}
