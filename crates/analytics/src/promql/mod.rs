//! The Prometheus query API over Sextant's metric store: PromQL (parsed by
//! `promql-parser`, evaluated by [`engine`] and [`functions`] with
//! Prometheus 2.x's semantics) on raw samples and staleness markers read
//! through [`store`]; series, label and metadata lookups. The gateway
//! serves it under `/prometheus/api/v1`.

pub mod engine;
pub mod functions;
pub mod parse;
pub mod store;
pub mod value;

use std::collections::HashMap;

use sextant_common::{ErrorCode, db};
use sextant_proto::analytics::v1::*;
use sqlx::PgPool;
use tonic::Status;

use crate::config::PrometheusConfig;
use crate::convert::invalid;
use engine::{Engine, EvalError, Labels, Steps, Value};

const STORE: &str = "the metric store";

/// Most answers of a series or label lookup when the caller sets none.
const DEFAULT_LIMIT: usize = 10_000;

pub struct Prom {
    pub pool: PgPool,
    pub config: PrometheusConfig,
}

fn status(error: EvalError) -> Status {
    match error {
        EvalError::BadData(m) => ErrorCode::InvalidArgument.status(m),
        EvalError::Unsupported(m) => ErrorCode::Unimplemented.status(m),
        EvalError::Limit(m) | EvalError::Execution(m) => ErrorCode::FailedPrecondition.status(m),
        EvalError::Source(e) => match e.downcast::<sqlx::Error>() {
            Ok(e) => db::unavailable(STORE)(e),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "promql evaluation failed");
                ErrorCode::Internal.status("query failed")
            }
        },
    }
}

fn parse(query: &str) -> Result<promql_parser::parser::Expr, Status> {
    parse::parse(query).map_err(|e| invalid(format!("invalid PromQL: {e}")))
}

fn labels_message(labels: &Labels) -> Vec<PromLabel> {
    labels
        .iter()
        .map(|(name, value)| PromLabel {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

impl Prom {
    pub async fn query(&self, tenant: &str, request: PromQueryRequest) -> Result<PromQueryResponse, Status> {
        let expr = parse(&request.query)?;
        let range = request.step_ms > 0;
        if range {
            if request.end_ms < request.start_ms {
                return Err(invalid("end timestamp must not be before start time"));
            }
            let points = (request.end_ms - request.start_ms) / request.step_ms + 1;
            if usize::try_from(points).unwrap_or(usize::MAX) > self.config.max_steps {
                return Err(invalid(format!(
                    "exceeded maximum resolution of {} points per timeseries. Try decreasing the query resolution (?step=XX)",
                    self.config.max_steps
                )));
            }
        }
        let lookback = if request.lookback_ms > 0 {
            request.lookback_ms
        } else {
            i64::try_from(self.config.lookback_delta.as_millis()).unwrap_or(300_000)
        };
        let steps = Steps {
            start: request.start_ms,
            end: if range { request.end_ms } else { request.start_ms },
            step: if range { request.step_ms } else { 0 },
            lookback,
        };
        let needs = engine::plan(&expr, &steps).map_err(status)?;
        let mut budget = self.config.max_samples;
        let mut data = HashMap::new();
        for need in needs {
            let selected = store::select(&self.pool, tenant, &need.matchers, self.config.max_series)
                .await
                .map_err(status)?;
            let series = store::samples(&self.pool, tenant, selected, need.from, need.to, &mut budget)
                .await
                .map_err(status)?;
            data.insert(need.key, series);
        }
        let engine = Engine::new(steps, data, self.config.max_points);
        let value = engine.evaluate(&expr).map_err(status)?;
        answer(&engine, value, range).map_err(status)
    }

    fn selectors(&self, request: &PromSelectRequest) -> Result<Vec<promql_parser::label::Matchers>, Status> {
        request
            .matchers
            .iter()
            .map(|m| match parse(m)? {
                promql_parser::parser::Expr::VectorSelector(vs) => Ok(engine::with_name(&vs)),
                _ => Err(invalid(format!("match[] {m:?} is not a series selector"))),
            })
            .collect()
    }

    fn limit(&self, request: &PromSelectRequest) -> usize {
        match request.limit {
            0 => DEFAULT_LIMIT,
            n => n as usize,
        }
    }

    pub async fn series(&self, tenant: &str, request: PromSelectRequest) -> Result<PromSeriesResponse, Status> {
        let selectors = self.selectors(&request)?;
        if selectors.is_empty() {
            return Err(invalid("no match[] parameter provided"));
        }
        let limit = self.limit(&request);
        let mut all = std::collections::BTreeSet::new();
        for matchers in &selectors {
            for (_, labels) in store::select(&self.pool, tenant, matchers, self.config.max_series)
                .await
                .map_err(status)?
            {
                all.insert(labels);
            }
        }
        Ok(PromSeriesResponse {
            series: all
                .iter()
                .take(limit)
                .map(|labels| PromLabelSet {
                    labels: labels_message(labels),
                })
                .collect(),
        })
    }

    pub async fn label_names(&self, tenant: &str, request: PromSelectRequest) -> Result<PromLabelsResponse, Status> {
        let selectors = self.selectors(&request)?;
        let values = store::label_values(
            &self.pool,
            tenant,
            &selectors,
            None,
            self.config.max_series,
            self.limit(&request),
        )
        .await
        .map_err(status)?;
        Ok(PromLabelsResponse { values })
    }

    pub async fn label_values(&self, tenant: &str, request: PromSelectRequest) -> Result<PromLabelsResponse, Status> {
        let selectors = self.selectors(&request)?;
        let values = store::label_values(
            &self.pool,
            tenant,
            &selectors,
            Some(&request.label),
            self.config.max_series,
            self.limit(&request),
        )
        .await
        .map_err(status)?;
        Ok(PromLabelsResponse { values })
    }

    pub async fn metadata(&self, tenant: &str, request: PromMetadataRequest) -> Result<PromMetadataResponse, Status> {
        let limit = match request.limit {
            0 => DEFAULT_LIMIT as i64,
            n => i64::from(n),
        };
        if request.metric.contains('\0') {
            // No metric has such a name (and PostgreSQL text cannot hold it).
            return Ok(PromMetadataResponse::default());
        }
        let metric = (!request.metric.is_empty()).then_some(request.metric.as_str());
        let rows = crate::metrics::store::metadata::list(&self.pool, tenant, metric, limit)
            .await
            .map_err(db::unavailable(STORE))?;
        Ok(PromMetadataResponse {
            metadata: rows
                .into_iter()
                .map(|m| MetricMetadata {
                    metric: m.metric,
                    r#type: m.kind,
                    help: m.help,
                    unit: m.unit,
                })
                .collect(),
        })
    }
}

/// The evaluated value as the API answers it: a range query's result is
/// always a matrix; series sorted by labels; two series with one label set
/// at one time are an error, as in Prometheus.
pub fn answer(engine: &Engine, value: Value, range: bool) -> Result<PromQueryResponse, EvalError> {
    let times = engine.step_times();
    let mut response = PromQueryResponse {
        timestamp_ms: times[0],
        ..Default::default()
    };
    let rows = match value {
        Value::Scalar(values) if !range => {
            response.result_type = "scalar".into();
            response.scalar = values[0];
            return Ok(response);
        }
        Value::Scalar(values) => vec![engine::Row {
            labels: Labels::new(),
            values: values.into_iter().map(Some).collect(),
        }],
        Value::String(s) => {
            response.result_type = "string".into();
            response.string = s;
            return Ok(response);
        }
        Value::Matrix(series) => {
            response.result_type = "matrix".into();
            response.series = series
                .into_iter()
                .map(|s| PromSeries {
                    labels: labels_message(&s.labels),
                    timestamps_ms: s.samples.iter().map(|(t, _)| *t).collect(),
                    values: s.samples.iter().map(|(_, v)| *v).collect(),
                })
                .collect();
            return Ok(response);
        }
        Value::Vector(rows) => rows,
    };
    let mut rows = rows;
    if range {
        rows.sort_by(|a, b| a.labels.cmp(&b.labels));
    }
    response.result_type = if range { "matrix" } else { "vector" }.into();
    response.series = rows
        .into_iter()
        .filter_map(|row| {
            let (timestamps_ms, values): (Vec<i64>, Vec<f64>) = times
                .iter()
                .zip(&row.values)
                .filter_map(|(t, v)| v.map(|v| (*t, v)))
                .unzip();
            (!values.is_empty()).then(|| PromSeries {
                labels: labels_message(&row.labels),
                timestamps_ms,
                values,
            })
        })
        .collect();
    Ok(response)
}
