//! Analyses: a report over a time range and a set of metrics (all with
//! events in the range, when none are named) at a bucket size — per metric
//! a summary (count, sum, avg, min, max, p50–p99 over the whole range), chart
//! series (avg and p95 per bucket), and findings: `alert_fired` for every
//! transition to firing in the range (from the alert history), `anomaly` for
//! buckets whose avg leaves the series' robust baseline (see [`anomaly`]).
//!
//! One read per metric gives both its chart and its summary (rollups for
//! whole minutes). `RunAnalysis` reports after each metric, for the
//! `analyze` job's progress; a run id makes a retried run answer the report
//! the first made.

pub mod anomaly;
pub mod store;

use std::collections::HashMap;
use tracing::Instrument as _;

use sextant_common::ErrorCode;
use sextant_common::db;
use sextant_proto::analytics::v1 as pb;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tonic::Status;
use uuid::Uuid;

use crate::convert::{self, aggregation_pb, invalid, timestamp};
use crate::metrics::live::query_status;
use crate::metrics::store::read::{self, Limits};
use crate::model::{Aggregation, Micros, Query, SECOND, rfc3339, valid_name};

/// What a database failure names, for the caller.
const STORE: &str = "the analysis store";

/// Metrics one analysis covers at most.
pub const MAX_METRICS: usize = 200;
const MAX_TITLE: usize = 200;
pub const MAX_PAGE_SIZE: u32 = 100;
/// Findings per message of [`Analyses::read`].
pub const FINDING_BATCH: usize = 1_000;

/// Every aggregation, in the order the summaries list them.
const ALL: [Aggregation; 9] = [
    Aggregation::Count,
    Aggregation::Sum,
    Aggregation::Avg,
    Aggregation::Min,
    Aggregation::Max,
    Aggregation::P50,
    Aggregation::P90,
    Aggregation::P95,
    Aggregation::P99,
];

#[derive(Clone)]
pub struct Analyses {
    pub pool: PgPool,
    pub limits: Limits,
    /// Spreads from the median beyond which a bucket is an anomaly.
    pub anomaly_k: f64,
}

/// A checked request.
struct Request {
    title: String,
    start: Micros,
    end: Micros,
    metrics: Vec<String>,
    bucket: Micros,
}

fn check(r: pb::CreateAnalysisRequest, limits: &Limits) -> Result<Request, Status> {
    if r.title.chars().count() > MAX_TITLE || r.title.contains('\0') {
        return Err(invalid(format!(
            "title must be at most {MAX_TITLE} characters, without U+0000"
        )));
    }
    let range = r.range.ok_or_else(|| invalid("range is required"))?;
    let start = range
        .start
        .as_ref()
        .and_then(convert::micros)
        .ok_or_else(|| invalid("range.start is required and must be a valid time"))?;
    let end = range
        .end
        .as_ref()
        .and_then(convert::micros)
        .ok_or_else(|| invalid("range.end is required and must be a valid time"))?;
    if start >= end {
        return Err(invalid("range.start must be before range.end"));
    }
    let bucket = r
        .bucket
        .as_ref()
        .and_then(convert::duration)
        .ok_or_else(|| invalid("bucket is required and must not be negative"))?;
    if bucket < SECOND || bucket % SECOND != 0 || bucket > convert::MAX_BUCKET {
        return Err(invalid("bucket must be a whole number of seconds, from 1s to 366 days"));
    }
    let buckets = u64::try_from((end - 1).div_euclid(bucket) - start.div_euclid(bucket) + 1).unwrap_or(u64::MAX);
    if buckets > limits.max_buckets {
        return Err(invalid(format!(
            "the range holds {buckets} buckets; max_buckets is {}: use a wider bucket or a shorter range",
            limits.max_buckets
        )));
    }
    if r.metrics.len() > MAX_METRICS {
        return Err(invalid(format!("metrics names at most {MAX_METRICS} metrics")));
    }
    for (i, m) in r.metrics.iter().enumerate() {
        if !valid_name(m) {
            return Err(invalid(format!("metrics[{i}] {m:?} {}", crate::model::NAME_RULE)));
        }
        if r.metrics[..i].contains(m) {
            return Err(invalid(format!("metrics[{i}] {m:?} is named twice")));
        }
    }
    let title = if r.title.is_empty() {
        format!("Analysis {} – {}", rfc3339(start), rfc3339(end))
    } else {
        r.title
    };
    Ok(Request {
        title,
        start,
        end,
        metrics: r.metrics,
        bucket,
    })
}

impl Analyses {
    pub async fn create(&self, tenant: &str, r: pb::CreateAnalysisRequest) -> Result<pb::Analysis, Status> {
        let request = check(r, &self.limits)?;
        let report = self.compute(tenant, request, |_, _, _| {}).await?;
        store::insert(&self.pool, tenant, None, &report)
            .await
            .map_err(db::unavailable(STORE))
    }

    /// Runs an analysis, sending progress after each metric, then the
    /// stored report's heading.
    pub fn run(
        &self,
        tenant: String,
        r: pb::RunAnalysisRequest,
    ) -> Result<mpsc::Receiver<Result<pb::RunAnalysisResponse, Status>>, Status> {
        let request = check(r.analysis.unwrap_or_default(), &self.limits)?;
        let run_id = (!r.run_id.is_empty()).then_some(r.run_id);
        if run_id.as_ref().is_some_and(|id| id.len() > 200) {
            return Err(invalid("run_id must be at most 200 bytes"));
        }
        let (tx, rx) = mpsc::channel(16);
        let this = self.clone();
        // In the RunAnalysis call's trace.
        let span = tracing::info_span!(
            "analysis",
            otel.name = "run analysis",
            sextant.tenant = %tenant,
            analysis.metrics = request.metrics.len(),
        );
        tokio::spawn(
            async move {
                let result = this.run_inner(&tenant, run_id.as_deref(), request, &tx).await;
                let message = result.map(|report| pb::RunAnalysisResponse {
                    message: Some(pb::run_analysis_response::Message::Analysis(heading(report))),
                });
                let _ = tx.send(message).await;
            }
            .instrument(span),
        );
        Ok(rx)
    }

    async fn run_inner(
        &self,
        tenant: &str,
        run_id: Option<&str>,
        request: Request,
        tx: &mpsc::Sender<Result<pb::RunAnalysisResponse, Status>>,
    ) -> Result<pb::Analysis, Status> {
        if let Some(run_id) = run_id
            && let Some(done) = store::by_run(&self.pool, tenant, run_id)
                .await
                .map_err(db::unavailable(STORE))?
        {
            return Ok(done);
        }
        let report = self
            .compute(tenant, request, |done, total, metric| {
                let progress = pb::RunAnalysisResponse {
                    message: Some(pb::run_analysis_response::Message::Progress(pb::AnalysisProgress {
                        done,
                        total,
                        metric: metric.to_owned(),
                    })),
                };
                // Progress is advisory: a full channel skips a report.
                let _ = tx.try_send(Ok(progress));
            })
            .await?;
        store::insert(&self.pool, tenant, run_id, &report)
            .await
            .map_err(db::unavailable(STORE))
    }

    pub async fn get(&self, tenant: &str, r: pb::GetAnalysisRequest) -> Result<pb::Analysis, Status> {
        let not_found = || ErrorCode::NotFound.status("no such analysis");
        let id = Uuid::parse_str(&r.id).map_err(|_| not_found())?;
        let report = store::get(&self.pool, tenant, id)
            .await
            .map_err(db::unavailable(STORE))?
            .ok_or_else(not_found)?;
        Ok(if r.heading_only { heading(report) } else { report })
    }

    /// The analysis in parts, as [`pb::ReadAnalysisResponse`]s: its heading,
    /// then its findings [`FINDING_BATCH`] at a time, then its series one at
    /// a time. Only the encoded report is held, each part decoded as the
    /// reader takes it.
    pub async fn read(
        &self,
        tenant: &str,
        r: pb::ReadAnalysisRequest,
    ) -> Result<mpsc::Receiver<Result<pb::ReadAnalysisResponse, Status>>, Status> {
        use pb::read_analysis_response::Part;
        use prost::Message as _;
        let not_found = || ErrorCode::NotFound.status("no such analysis");
        let id = Uuid::parse_str(&r.id).map_err(|_| not_found())?;
        let parts = store::parts(&self.pool, tenant, id)
            .await
            .map_err(db::unavailable(STORE))?
            .ok_or_else(not_found)?;
        let corrupt = |_| ErrorCode::Internal.status("the stored analysis does not decode");
        let heading = parts.counted().map_err(corrupt)?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let findings = parts.findings.chunks(FINDING_BATCH).map(|batch| {
                let findings = batch.iter().map(|f| pb::Finding::decode(f.clone()));
                findings
                    .collect::<Result<Vec<_>, _>>()
                    .map(|findings| Part::Findings(pb::FindingBatch { findings }))
            });
            let series = (parts.series.iter()).map(|s| pb::ChartSeries::decode(s.clone()).map(Part::Series));
            let all = std::iter::once(Ok(Part::Heading(heading)))
                .chain(findings)
                .chain(series);
            for part in all {
                let message = part
                    .map(|p| pb::ReadAnalysisResponse { part: Some(p) })
                    .map_err(corrupt);
                let failed = message.is_err();
                // The reader went away, or the report cannot go on.
                if tx.send(message).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(rx)
    }

    pub async fn list(&self, tenant: &str, r: pb::ListAnalysesRequest) -> Result<pb::ListAnalysesResponse, Status> {
        let page = r.page.unwrap_or_default();
        let size = match page.page_size {
            0 => 20,
            n @ 1..=MAX_PAGE_SIZE => i64::from(n),
            _ => return Err(invalid(format!("page.page_size must be at most {MAX_PAGE_SIZE}"))),
        };
        let before = match page.cursor.as_str() {
            "" => None,
            c => Some(Uuid::parse_str(c).map_err(|_| invalid("page.cursor is malformed"))?),
        };
        let rows = store::list(&self.pool, tenant, before, size + 1)
            .await
            .map_err(db::unavailable(STORE))?;
        let (rows, page) = convert::page_of(rows, size, |last| last.id.clone());
        Ok(pb::ListAnalysesResponse {
            analyses: rows,
            page: Some(page),
        })
    }

    /// Computes a report (not yet stored).
    async fn compute(
        &self,
        tenant: &str,
        r: Request,
        mut progress: impl FnMut(u32, u32, &str),
    ) -> Result<pb::Analysis, Status> {
        let metrics = if r.metrics.is_empty() {
            let all = read::metrics_in(&self.pool, tenant, r.start, r.end)
                .await
                .map_err(db::unavailable(STORE))?;
            if all.len() > MAX_METRICS {
                return Err(invalid(format!(
                    "{} metrics have events in the range; an analysis covers at most {MAX_METRICS}: name them",
                    all.len()
                )));
            }
            all
        } else {
            r.metrics.clone()
        };
        let total = u32::try_from(metrics.len()).unwrap_or(u32::MAX);
        let mut summaries = Vec::with_capacity(metrics.len());
        let mut series = Vec::with_capacity(metrics.len() * 2);
        let mut findings = Vec::new();
        for (i, metric) in metrics.iter().enumerate() {
            let query = Query {
                metric: metric.clone(),
                aggregations: ALL.to_vec(),
                bucket: r.bucket,
                start: r.start,
                end: r.end,
                filters: Vec::new(),
                group_by: None,
            };
            let (buckets, whole) = read::query_with_total(&self.pool, tenant, &query, &self.limits)
                .await
                .map_err(query_status)?;
            let value = |a: Aggregation| whole.value(a);
            summaries.push(pb::MetricSummary {
                metric: metric.clone(),
                count: whole.count,
                sum: whole.sum,
                avg: value(Aggregation::Avg),
                min: if whole.count == 0 { f64::NAN } else { whole.min },
                max: if whole.count == 0 { f64::NAN } else { whole.max },
                p50: value(Aggregation::P50),
                p90: value(Aggregation::P90),
                p95: value(Aggregation::P95),
                p99: value(Aggregation::P99),
            });
            for (index, aggregation) in [(2, Aggregation::Avg), (7, Aggregation::P95)] {
                series.push(pb::ChartSeries {
                    metric: metric.clone(),
                    aggregation: aggregation_pb(aggregation) as i32,
                    series: Some(pb::Series {
                        group: String::new(),
                        buckets: buckets
                            .iter()
                            .map(|b| pb::Bucket {
                                start: Some(timestamp(b.start)),
                                values: vec![b.values[index]],
                                count: b.count,
                            })
                            .collect(),
                    }),
                });
            }
            findings.extend(self.anomalies(metric, r.bucket, &buckets));
            progress(u32::try_from(i + 1).unwrap_or(u32::MAX), total, metric);
        }
        findings.extend(
            fired(&self.pool, tenant, r.start, r.end)
                .await
                .map_err(db::unavailable(STORE))?,
        );
        findings.sort_by(|a, b| {
            let at = |f: &pb::Finding| f.at.map(|t| (t.seconds, t.nanos));
            at(a).cmp(&at(b)).then_with(|| a.id.cmp(&b.id))
        });
        Ok(pb::Analysis {
            id: Uuid::now_v7().to_string(),
            title: r.title,
            range: Some(sextant_proto::common::v1::TimeRange {
                start: Some(timestamp(r.start)),
                end: Some(timestamp(r.end)),
            }),
            created_at: Some(timestamp(crate::model::now_micros())),
            summaries,
            findings,
            series,
            bucket: Some(prost_types::Duration {
                seconds: r.bucket / SECOND,
                nanos: 0,
            }),
            metrics,
        })
    }

    fn anomalies(&self, metric: &str, bucket: Micros, buckets: &[crate::model::BucketResult]) -> Vec<pb::Finding> {
        let avgs: Vec<f64> = buckets.iter().map(|b| b.values[2]).collect();
        let (baseline, found) = anomaly::detect(&avgs, self.anomaly_k);
        let Some(baseline) = baseline else {
            return Vec::new();
        };
        let k = self.anomaly_k;
        found
            .into_iter()
            .map(|a| {
                let start = buckets[a.index].start;
                let direction = if a.score > 0.0 { "above" } else { "below" };
                let properties: HashMap<String, String> = [
                    ("aggregation", "avg".to_owned()),
                    ("bucket_start", rfc3339(start)),
                    ("bucket_seconds", (bucket / SECOND).to_string()),
                    ("count", buckets[a.index].count.to_string()),
                    ("expected", format!("{}", baseline.median)),
                    ("lower", format!("{}", baseline.median - k * baseline.spread)),
                    ("upper", format!("{}", baseline.median + k * baseline.spread)),
                    ("score", format!("{:.2}", a.score)),
                    ("direction", direction.to_owned()),
                    ("method", format!("median ± {k}·1.4826·MAD")),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
                pb::Finding {
                    id: format!("anomaly:{metric}:{}", start / SECOND),
                    kind: "anomaly".into(),
                    severity: if a.severe {
                        pb::Severity::Error
                    } else {
                        pb::Severity::Warning
                    } as i32,
                    metric: metric.to_owned(),
                    message: format!(
                        "avg {} in the bucket at {} is {:.1} spreads {direction} the range's median {}",
                        a.value,
                        rfc3339(start),
                        a.score.abs(),
                        baseline.median
                    ),
                    at: Some(timestamp(start)),
                    value: a.value,
                    properties,
                }
            })
            .collect()
    }
}

/// A transition to firing with its rule: version, rule, group, value, time, spec.
type FiredRow = (
    i64,
    Uuid,
    String,
    Option<f64>,
    time::OffsetDateTime,
    sqlx::types::Json<crate::alerts::rule::RuleSpec>,
);

/// `alert_fired` for every transition to firing in `[start, end)`.
async fn fired(pool: &PgPool, tenant: &str, start: Micros, end: Micros) -> Result<Vec<pb::Finding>, sqlx::Error> {
    use crate::model::datetime;
    let rows: Vec<FiredRow> = sqlx::query_as(
        "SELECT h.version, h.rule_id, h.grp, h.value, h.at, r.spec
             FROM alert_history h JOIN alert_rules r ON r.tenant = h.tenant AND r.id = h.rule_id
             WHERE h.tenant = $1 AND h.to_state = 'firing' AND h.at >= $2 AND h.at < $3
             ORDER BY h.version",
    )
    .bind(tenant)
    .bind(datetime(start))
    .bind(datetime(end))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(version, rule_id, group, value, at, spec)| {
            let spec = spec.0;
            let mut properties: HashMap<String, String> = [
                ("rule_id", rule_id.to_string()),
                ("rule_name", spec.name.clone()),
                ("group", group.clone()),
                ("aggregation", format!("{:?}", spec.aggregation).to_lowercase()),
                ("comparator", format!("{:?}", spec.comparator).to_lowercase()),
                ("threshold", format!("{}", spec.threshold)),
                ("window_seconds", (spec.window / SECOND).to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            for (key, text) in &spec.annotations {
                properties.insert(format!("annotation.{key}"), text.clone());
            }
            let group_text = if group.is_empty() {
                String::new()
            } else {
                format!(" for {group}")
            };
            pb::Finding {
                id: format!("alert_fired:{rule_id}:{version}"),
                kind: "alert_fired".into(),
                severity: pb::Severity::Error as i32,
                metric: spec.metric.clone(),
                message: format!("alert rule {:?} fired{group_text}", spec.name),
                at: Some(timestamp(crate::model::micros_of(at))),
                value: value.unwrap_or(f64::NAN),
                properties,
            }
        })
        .collect())
}

/// What `RunAnalysis` ends with: the report without its body.
pub(crate) fn heading(report: pb::Analysis) -> pb::Analysis {
    pb::Analysis {
        summaries: Vec::new(),
        findings: Vec::new(),
        series: Vec::new(),
        ..report
    }
}
