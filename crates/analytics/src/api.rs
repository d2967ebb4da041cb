//! The `AnalyticsService` gRPC API: metric ingest, queries, the metric and
//! label-value lists, live watches, alert rules (handled by [`Alerts`]) and
//! analyses (by [`Analyses`]).

use std::pin::Pin;
use std::sync::Arc;

use base64::Engine as _;
use futures::Stream;
use sextant_common::internal_auth::Caller;
use sextant_common::{ErrorCode, idempotency};
use sextant_proto::analytics::v1::analytics_service_server::AnalyticsService;
use sextant_proto::analytics::v1::*;
use sextant_proto::common::v1::PageResponse;
use sqlx::PgPool;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::alerts::Alerts;
use crate::analysis::Analyses;
use crate::config::IngestConfig;
use crate::convert::{self, invalid};
use crate::live::{self, Live};
use crate::model::{self, EventRules, Micros, now_micros, valid_name};
use crate::store::SeriesCache;
use crate::store::ingest::{Idempotency, Ingest, IngestError, Outcome};
use crate::store::partitions::{Layout, micros};
use crate::store::read::{self, Limits};

pub const MAX_PAGE_SIZE: u32 = 1000;
pub const DEFAULT_PAGE_SIZE: u32 = 100;

pub struct AnalyticsApi {
    pub pool: PgPool,
    pub alerts: Alerts,
    pub analyses: Analyses,
    pub series: Arc<SeriesCache>,
    pub ingest: IngestConfig,
    pub limits: Limits,
    pub raw: Layout,
    pub rollups: Layout,
    pub live: Live,
    pub cache: Arc<crate::cache::QueryCache>,
    /// Ends watch streams when the service stops.
    pub shutdown: CancellationToken,
}

fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    Caller::from_metadata(request.metadata())
}

fn unavailable(error: sqlx::Error) -> Status {
    tracing::error!(%error, "database error");
    ErrorCode::Unavailable.status("the metric store is unavailable")
}

fn page_size(size: u32) -> Result<i64, Status> {
    match size {
        0 => Ok(i64::from(DEFAULT_PAGE_SIZE)),
        1..=MAX_PAGE_SIZE => Ok(i64::from(size)),
        _ => Err(invalid(format!("page.page_size must be at most {MAX_PAGE_SIZE}"))),
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

impl AnalyticsApi {
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
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchMetricResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AnalyticsService for AnalyticsApi {
    async fn ingest_events(
        &self,
        request: Request<IngestEventsRequest>,
    ) -> Result<Response<IngestEventsResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
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
        match ingest.run(&caller.tenant, valid, rejected, key).await {
            Ok(Outcome::Stored { answer, changes }) => {
                self.live.announce(&caller.tenant, &changes);
                metrics.events_accepted.inc_by(u64::from(answer.accepted));
                for r in &answer.rejected {
                    metrics
                        .events_rejected
                        .get_or_create(&crate::metrics::RejectLabels { code: r.code.clone() })
                        .inc();
                }
                Ok(Response::new(IngestEventsResponse {
                    accepted: answer.accepted,
                    rejected: answer.rejected.into_iter().map(convert::stored_rejection).collect(),
                    replayed: false,
                }))
            }
            Ok(Outcome::Replayed(answer)) => {
                metrics.batches_replayed.inc();
                Ok(Response::new(IngestEventsResponse {
                    accepted: answer.accepted,
                    rejected: answer.rejected.into_iter().map(convert::stored_rejection).collect(),
                    replayed: true,
                }))
            }
            Err(IngestError::KeyReused) => {
                Err(ErrorCode::AlreadyExists.status("idempotency key already used for a different batch of events"))
            }
            Err(IngestError::Db(error)) => Err(unavailable(error)),
            Err(IngestError::Other(error)) => {
                tracing::error!(error = %format!("{error:#}"), "ingest failed");
                Err(ErrorCode::Internal.status("ingest failed"))
            }
        }
    }

    async fn query_metrics(
        &self,
        request: Request<QueryMetricsRequest>,
    ) -> Result<Response<QueryMetricsResponse>, Status> {
        let caller = caller(&request)?;
        let query = request.into_inner().query.ok_or_else(|| invalid("query is required"))?;
        let query = convert::query(query)?;
        let series = self
            .cache
            .query(&self.pool, &caller.tenant, &query, &self.limits)
            .await
            .map_err(live::query_status)?;
        Ok(Response::new(convert::query_response(&query, &series)))
    }

    async fn list_metrics(
        &self,
        request: Request<ListMetricsRequest>,
    ) -> Result<Response<ListMetricsResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let page = request.page.unwrap_or_default();
        let size = page_size(page.page_size)?;
        let after = decode_cursor(&page.cursor)?;
        let prefix = prefix(request.prefix)?;
        let mut rows = read::list_metrics(&self.pool, &caller.tenant, &prefix, after.as_deref(), size + 1)
            .await
            .map_err(unavailable)?;
        let more = rows.len() > usize::try_from(size).unwrap_or(0);
        rows.truncate(usize::try_from(size).unwrap_or(0));
        let next_cursor = if more {
            rows.last().map(|r| encode_cursor(&r.name)).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListMetricsResponse {
            metrics: rows
                .into_iter()
                .map(|r| MetricInfo {
                    name: r.name,
                    label_keys: r.label_keys,
                    first_seen: Some(convert::offset_timestamp(r.first_seen)),
                    last_seen: Some(convert::offset_timestamp(r.last_seen)),
                })
                .collect(),
            page: Some(PageResponse { next_cursor }),
        }))
    }

    async fn list_label_values(
        &self,
        request: Request<ListLabelValuesRequest>,
    ) -> Result<Response<ListLabelValuesResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
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
        let mut values = read::label_values(
            &self.pool,
            &caller.tenant,
            &request.metric,
            &request.label,
            &prefix,
            after.as_deref(),
            size + 1,
        )
        .await
        .map_err(unavailable)?;
        let more = values.len() > usize::try_from(size).unwrap_or(0);
        values.truncate(usize::try_from(size).unwrap_or(0));
        let next_cursor = if more {
            values.last().map(|v| encode_cursor(v)).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListLabelValuesResponse {
            values,
            page: Some(PageResponse { next_cursor }),
        }))
    }

    type WatchMetricStream = WatchStream;

    async fn watch_metric(
        &self,
        request: Request<WatchMetricRequest>,
    ) -> Result<Response<Self::WatchMetricStream>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let after = request.after_version;
        let (query, window) = self.watch_args(request)?;
        let receiver = self
            .live
            .watch(caller.tenant, query, window, after, self.shutdown.clone())?;
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn create_alert_rule(&self, request: Request<CreateAlertRuleRequest>) -> Result<Response<AlertRule>, Status> {
        let caller = caller(&request)?;
        let rule = self.alerts.create(&caller.tenant, request.into_inner()).await?;
        Ok(Response::new(rule))
    }

    async fn get_alert_rule(&self, request: Request<GetAlertRuleRequest>) -> Result<Response<AlertRule>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.alerts.get(&caller.tenant, request.into_inner()).await?,
        ))
    }

    async fn list_alert_rules(
        &self,
        request: Request<ListAlertRulesRequest>,
    ) -> Result<Response<ListAlertRulesResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.alerts.list(&caller.tenant, request.into_inner()).await?,
        ))
    }

    async fn update_alert_rule(&self, request: Request<UpdateAlertRuleRequest>) -> Result<Response<AlertRule>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.alerts.update(&caller.tenant, request.into_inner()).await?,
        ))
    }

    async fn delete_alert_rule(
        &self,
        request: Request<DeleteAlertRuleRequest>,
    ) -> Result<Response<DeleteAlertRuleResponse>, Status> {
        let caller = caller(&request)?;
        self.alerts.delete(&caller.tenant, request.into_inner()).await?;
        Ok(Response::new(DeleteAlertRuleResponse {}))
    }

    async fn list_alert_instances(
        &self,
        request: Request<ListAlertInstancesRequest>,
    ) -> Result<Response<ListAlertInstancesResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.alerts.instances(&caller.tenant, request.into_inner()).await?,
        ))
    }

    async fn list_alert_history(
        &self,
        request: Request<ListAlertHistoryRequest>,
    ) -> Result<Response<ListAlertHistoryResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.alerts.history(&caller.tenant, request.into_inner()).await?,
        ))
    }

    type WatchAlertsStream = Pin<Box<dyn Stream<Item = Result<WatchAlertsResponse, Status>> + Send>>;

    async fn watch_alerts(
        &self,
        request: Request<WatchAlertsRequest>,
    ) -> Result<Response<Self::WatchAlertsStream>, Status> {
        let caller = caller(&request)?;
        let receiver = self
            .alerts
            .watch(caller.tenant, request.into_inner(), self.shutdown.clone())
            .await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn create_analysis(&self, request: Request<CreateAnalysisRequest>) -> Result<Response<Analysis>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.analyses.create(&caller.tenant, request.into_inner()).await?,
        ))
    }

    type RunAnalysisStream = Pin<Box<dyn Stream<Item = Result<RunAnalysisResponse, Status>> + Send>>;

    async fn run_analysis(
        &self,
        request: Request<RunAnalysisRequest>,
    ) -> Result<Response<Self::RunAnalysisStream>, Status> {
        let caller = caller(&request)?;
        let receiver = self.analyses.run(caller.tenant, request.into_inner())?;
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn get_analysis(&self, request: Request<GetAnalysisRequest>) -> Result<Response<Analysis>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.analyses.get(&caller.tenant, request.into_inner()).await?,
        ))
    }

    async fn list_analyses(
        &self,
        request: Request<ListAnalysesRequest>,
    ) -> Result<Response<ListAnalysesResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.analyses.list(&caller.tenant, request.into_inner()).await?,
        ))
    }
}
