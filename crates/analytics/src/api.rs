//! The `AnalyticsService` gRPC API: each call takes its caller's tenant from
//! the metadata and goes to its feature: metrics (ingest, queries, lists,
//! live watches) to [`Metrics`], alert rules to [`Alerts`], analyses to
//! [`Analyses`], dashboards to [`Dashboards`], the Prometheus query API to
//! [`Prom`].

use std::pin::Pin;

use futures::Stream;
use sextant_common::internal_auth::Caller;
use sextant_proto::analytics::v1::analytics_service_server::AnalyticsService;
use sextant_proto::analytics::v1::*;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::alerts::Alerts;
use crate::analysis::Analyses;
use crate::dashboards::Dashboards;
use crate::metrics::Metrics;
use crate::promql::Prom;

pub struct AnalyticsApi {
    pub metrics: Metrics,
    pub alerts: Alerts,
    pub analyses: Analyses,
    pub dashboards: Dashboards,
    pub prom: Prom,
    /// Ends watch streams when the service stops.
    pub shutdown: CancellationToken,
}

fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    Caller::from_metadata(request.metadata())
}

#[tonic::async_trait]
impl AnalyticsService for AnalyticsApi {
    async fn ingest_events(
        &self,
        request: Request<IngestEventsRequest>,
    ) -> Result<Response<IngestEventsResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.metrics.ingest(&caller.tenant, request.into_inner()).await?,
        ))
    }

    async fn query_metrics(
        &self,
        request: Request<QueryMetricsRequest>,
    ) -> Result<Response<QueryMetricsResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.metrics.query(&caller.tenant, request.into_inner()).await?,
        ))
    }

    async fn list_metrics(
        &self,
        request: Request<ListMetricsRequest>,
    ) -> Result<Response<ListMetricsResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.metrics.list(&caller.tenant, request.into_inner()).await?,
        ))
    }

    async fn list_label_values(
        &self,
        request: Request<ListLabelValuesRequest>,
    ) -> Result<Response<ListLabelValuesResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.metrics.label_values(&caller.tenant, request.into_inner()).await?,
        ))
    }

    type WatchMetricStream = Pin<Box<dyn Stream<Item = Result<WatchMetricResponse, Status>> + Send>>;

    async fn watch_metric(
        &self,
        request: Request<WatchMetricRequest>,
    ) -> Result<Response<Self::WatchMetricStream>, Status> {
        let caller = caller(&request)?;
        let receiver = self
            .metrics
            .watch(caller.tenant, request.into_inner(), self.shutdown.clone())?;
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

    type ReadAnalysisStream = Pin<Box<dyn Stream<Item = Result<ReadAnalysisResponse, Status>> + Send>>;

    async fn read_analysis(
        &self,
        request: Request<ReadAnalysisRequest>,
    ) -> Result<Response<Self::ReadAnalysisStream>, Status> {
        let caller = caller(&request)?;
        let receiver = self.analyses.read(&caller.tenant, request.into_inner()).await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
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

    async fn create_dashboard(&self, request: Request<CreateDashboardRequest>) -> Result<Response<Dashboard>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.dashboards.create(&caller.tenant, request.into_inner()).await?,
        ))
    }

    async fn get_dashboard(&self, request: Request<GetDashboardRequest>) -> Result<Response<Dashboard>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.dashboards.get(&caller.tenant, request.into_inner()).await?,
        ))
    }

    async fn list_dashboards(
        &self,
        request: Request<ListDashboardsRequest>,
    ) -> Result<Response<ListDashboardsResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.dashboards.list(&caller.tenant, request.into_inner()).await?,
        ))
    }

    async fn update_dashboard(&self, request: Request<UpdateDashboardRequest>) -> Result<Response<Dashboard>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.dashboards.update(&caller.tenant, request.into_inner()).await?,
        ))
    }

    async fn delete_dashboard(
        &self,
        request: Request<DeleteDashboardRequest>,
    ) -> Result<Response<DeleteDashboardResponse>, Status> {
        let caller = caller(&request)?;
        self.dashboards.delete(&caller.tenant, request.into_inner()).await?;
        Ok(Response::new(DeleteDashboardResponse {}))
    }

    async fn prom_query(&self, request: Request<PromQueryRequest>) -> Result<Response<PromQueryResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.prom.query(&caller.tenant, request.into_inner()).await?,
        ))
    }

    async fn prom_series(&self, request: Request<PromSelectRequest>) -> Result<Response<PromSeriesResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.prom.series(&caller.tenant, request.into_inner()).await?,
        ))
    }

    async fn prom_label_names(
        &self,
        request: Request<PromSelectRequest>,
    ) -> Result<Response<PromLabelsResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.prom.label_names(&caller.tenant, request.into_inner()).await?,
        ))
    }

    async fn prom_label_values(
        &self,
        request: Request<PromSelectRequest>,
    ) -> Result<Response<PromLabelsResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.prom.label_values(&caller.tenant, request.into_inner()).await?,
        ))
    }

    async fn prom_metadata(
        &self,
        request: Request<PromMetadataRequest>,
    ) -> Result<Response<PromMetadataResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.prom.metadata(&caller.tenant, request.into_inner()).await?,
        ))
    }
}
