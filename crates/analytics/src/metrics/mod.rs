//! The metrics feature: ingest, time-bucketed queries, the metric and
//! label-value lists, and live watches. [`store`] holds the events and their
//! rollups, [`cache`] repeated queries' buckets, [`live`] change hints and
//! the `WatchMetric` streams. Alerts and analyses read through [`store::read`]
//! and watch through [`live::Live`]; nothing here knows of either.

pub mod cache;
pub mod live;
pub mod store;

use std::sync::Arc;

use base64::Engine as _;
use sextant_common::db;
use sextant_common::{ErrorCode, idempotency};
use sextant_proto::analytics::v1::*;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::config::IngestConfig;
use crate::convert::{self, invalid, page_of, page_size};
use crate::model::{self, EventRules, Micros, now_micros, valid_name};
use cache::QueryCache;
use live::Live;
use store::SeriesCache;
use store::ingest::{Idempotency, Ingest, IngestError, Outcome, StoredRejection};
use store::partitions::{Layout, micros};
use store::read::{self, Limits};

/// What a database failure names, for the caller.
const STORE: &str = "the metric store";

pub struct Metrics {
    pub pool: PgPool,
    pub series: Arc<SeriesCache>,
    pub ingest: IngestConfig,
    pub limits: Limits,
    pub raw: Layout,
    pub rollups: Layout,
    pub live: Live,
    pub cache: Arc<QueryCache>,
}

fn stored_rejection(r: StoredRejection) -> Rejection {
    Rejection {
        index: r.index,
        code: r.code,
        message: r.message,
        field: r.field,
    }
}

/// Opaque cursor: the last item of the page, base64url.
fn encode_cursor(last: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last)
}

fn decode_cursor(cursor: &str) -> Result<Option<String>, Status> {
    if cursor.is_empty() {
        return Ok(None);
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .map(Some)
        .ok_or_else(|| invalid("page.cursor is malformed"))
}

fn prefix(prefix: String) -> Result<String, Status> {
    if prefix.len() > 400 || prefix.contains('\0') {
        return Err(invalid("prefix must be at most 400 bytes, without U+0000"));
    }
    Ok(prefix)
}

impl Metrics {
    fn rules(&self) -> EventRules {
        let now = now_micros();
        EventRules {
            max_labels: self.ingest.max_labels,
            max_label_value_len: self.ingest.max_label_value_len,
            oldest: now - self.raw.retention,
            newest: now + micros(self.ingest.max_future),
        }
    }

    /// The metric watched and the window, checked.
    fn watch_args(&self, request: WatchMetricRequest) -> Result<(model::Query, Micros), Status> {
        let query = request.query.ok_or_else(|| invalid("query is required"))?;
        let query = convert::query_shape(query)?;
        let window = request
            .window
            .as_ref()
            .and_then(convert::duration)
            .filter(|w| *w > 0)
            .ok_or_else(|| invalid("window is required and must be positive"))?;
        Ok((query, window))
    }

    pub async fn ingest(&self, tenant: &str, request: IngestEventsRequest) -> Result<IngestEventsResponse, Status> {
        if request.events.len() > self.ingest.max_batch {
            return Err(invalid(format!(
                "events holds {} events; a batch holds at most {}",
                request.events.len(),
                self.ingest.max_batch
            )));
        }
        let key = match request.idempotency_key.as_str() {
            "" => None,
            k if !idempotency::valid(k) => {
                return Err(invalid(format!("idempotency_key {}", idempotency::RULE)));
            }
            k => Some(k.to_owned()),
        };
        let described: Vec<model::Metadata> = request
            .metadata
            .into_iter()
            .filter_map(|m| convert::metadata(m).checked())
            .collect();
        if !described.is_empty() {
            store::metadata::upsert(&self.pool, tenant, &described)
                .await
                .map_err(db::unavailable(STORE))?;
        }
        let raws: Vec<model::RawEvent> = request.events.into_iter().map(convert::raw_event).collect();
        let key = key.map(|key| Idempotency {
            key,
            fingerprint: model::fingerprint(&raws),
        });
        let rules = self.rules();
        let mut valid = Vec::with_capacity(raws.len());
        let mut rejected = Vec::new();
        for (index, raw) in raws.into_iter().enumerate() {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            match model::check_event(index, raw, &rules) {
                Ok(event) => valid.push((index, event)),
                Err(rejection) => rejected.push(rejection),
            }
        }
        let ingest = Ingest {
            pool: &self.pool,
            cache: &self.series,
            max_series_per_metric: self.ingest.max_series_per_metric,
            raw: self.raw,
            rollups: self.rollups,
        };
        let metrics = &self.live.metrics;
        match ingest.run(tenant, valid, rejected, key).await {
            Ok(Outcome::Stored { answer, changes }) => {
                self.live.announce(tenant, &changes);
                metrics.events_accepted.inc_by(u64::from(answer.accepted));
                for r in &answer.rejected {
                    metrics
                        .events_rejected
                        .get_or_create(&crate::telemetry::RejectLabels { code: r.code.clone() })
                        .inc();
                }
                Ok(IngestEventsResponse {
                    accepted: answer.accepted,
                    rejected: answer.rejected.into_iter().map(stored_rejection).collect(),
                    replayed: false,
                })
            }
            Ok(Outcome::Replayed(answer)) => {
                metrics.batches_replayed.inc();
                Ok(IngestEventsResponse {
                    accepted: answer.accepted,
                    rejected: answer.rejected.into_iter().map(stored_rejection).collect(),
                    replayed: true,
                })
            }
            Err(IngestError::KeyReused) => {
                Err(ErrorCode::AlreadyExists.status("idempotency key already used for a different batch of events"))
            }
            Err(IngestError::Db(error)) => Err(db::unavailable(STORE)(error)),
            Err(IngestError::Other(error)) => {
                tracing::error!(error = %format!("{error:#}"), "ingest failed");
                Err(ErrorCode::Internal.status("ingest failed"))
            }
        }
    }

    pub async fn query(&self, tenant: &str, request: QueryMetricsRequest) -> Result<QueryMetricsResponse, Status> {
        let query = request.query.ok_or_else(|| invalid("query is required"))?;
        let query = convert::query(query)?;
        let series = self
            .cache
            .query(&self.pool, tenant, &query, &self.limits)
            .await
            .map_err(live::query_status)?;
        Ok(convert::query_response(&query, &series))
    }

    pub async fn list(&self, tenant: &str, request: ListMetricsRequest) -> Result<ListMetricsResponse, Status> {
        let page = request.page.unwrap_or_default();
        let size = page_size(page.page_size)?;
        let after = decode_cursor(&page.cursor)?;
        let prefix = prefix(request.prefix)?;
        let rows = read::list_metrics(&self.pool, tenant, &prefix, after.as_deref(), size + 1)
            .await
            .map_err(db::unavailable(STORE))?;
        let (rows, page) = page_of(rows, size, |last| encode_cursor(&last.name));
        Ok(ListMetricsResponse {
            metrics: rows
                .into_iter()
                .map(|r| MetricInfo {
                    name: r.name,
                    label_keys: r.label_keys,
                    first_seen: Some(convert::offset_timestamp(r.first_seen)),
                    last_seen: Some(convert::offset_timestamp(r.last_seen)),
                })
                .collect(),
            page: Some(page),
        })
    }

    pub async fn label_values(
        &self,
        tenant: &str,
        request: ListLabelValuesRequest,
    ) -> Result<ListLabelValuesResponse, Status> {
        if !valid_name(&request.metric) {
            return Err(invalid(format!("metric {:?} {}", request.metric, model::NAME_RULE)));
        }
        if !valid_name(&request.label) {
            return Err(invalid(format!("label {:?} {}", request.label, model::NAME_RULE)));
        }
        let page = request.page.unwrap_or_default();
        let size = page_size(page.page_size)?;
        let after = decode_cursor(&page.cursor)?;
        let prefix = prefix(request.prefix)?;
        let values = read::label_values(
            &self.pool,
            tenant,
            &request.metric,
            &request.label,
            &prefix,
            after.as_deref(),
            size + 1,
        )
        .await
        .map_err(db::unavailable(STORE))?;
        let (values, page) = page_of(values, size, |last| encode_cursor(last));
        Ok(ListLabelValuesResponse {
            values,
            page: Some(page),
        })
    }

    pub fn watch(
        &self,
        tenant: String,
        request: WatchMetricRequest,
        shutdown: CancellationToken,
    ) -> Result<mpsc::Receiver<Result<WatchMetricResponse, Status>>, Status> {
        let after = request.after_version;
        let (query, window) = self.watch_args(request)?;
        self.live.watch(tenant, query, window, after, shutdown)
    }
}
