//! The `analyze` kind: produces an analysis report in the analytics service
//! (`RunAnalysis`), reporting progress per metric. Its result carries the
//! report's id: `{"analysis_id": "…"}`. The job's id names the run, so an
//! attempt retried after a worker died finds the report the first one made
//! instead of making another.
//!
//! Payload: `{"title": …, "start": RFC 3339, "end": RFC 3339,
//! "metrics": [names] (empty: every metric with events in the range),
//! "bucket_seconds": n}`. The shape, the range and the bucket count are
//! checked at submit; the analytics service checks the rest.

use futures::StreamExt;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};
use sextant_common::ErrorCode;
use sextant_common::internal_auth::{Caller, ClientAuth};
use sextant_common::telemetry::TracedChannel;
use sextant_proto::analytics::v1 as pb;
use sextant_proto::analytics::v1::analytics_service_client::AnalyticsServiceClient;
use time::OffsetDateTime;
use tonic::codegen::InterceptedService;

use super::{Failure, Kind, Kinds, Outcome, parse};
use crate::context::JobContext;

/// Buckets one analysis may hold (the analytics service's default max_buckets).
const MAX_BUCKETS: i64 = 10_000;
const MAX_METRICS: usize = 200;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyzePayload {
    #[serde(default)]
    pub title: String,
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
    #[serde(default)]
    pub metrics: Vec<String>,
    pub bucket_seconds: u64,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.len() <= 200
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':'))
}

impl AnalyzePayload {
    fn check(&self) -> Result<(), String> {
        if self.title.chars().count() > 200 {
            return Err("title must be at most 200 characters".into());
        }
        if self.start >= self.end {
            return Err("start must be before end".into());
        }
        if !(1..=31_622_400).contains(&self.bucket_seconds) {
            return Err("bucket_seconds must be between 1 and 31622400 (366 days)".into());
        }
        let bucket = i64::try_from(self.bucket_seconds).unwrap_or(i64::MAX);
        let first = self.start.unix_timestamp().div_euclid(bucket);
        let last = (self.end - time::Duration::nanoseconds(1))
            .unix_timestamp()
            .div_euclid(bucket);
        if last - first + 1 > MAX_BUCKETS {
            return Err(format!(
                "the range holds {} buckets of {} s; at most {MAX_BUCKETS}: use a wider bucket or a shorter range",
                last - first + 1,
                self.bucket_seconds
            ));
        }
        if self.metrics.len() > MAX_METRICS {
            return Err(format!("metrics names at most {MAX_METRICS} metrics"));
        }
        for (i, m) in self.metrics.iter().enumerate() {
            if !valid_name(m) {
                return Err(format!(
                    "metrics[{i}] {m:?} must match [a-zA-Z_][a-zA-Z0-9_.:]* and be at most 200 characters"
                ));
            }
            if self.metrics[..i].contains(m) {
                return Err(format!("metrics[{i}] {m:?} is named twice"));
            }
        }
        Ok(())
    }
}

fn timestamp(t: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
    }
}

pub struct Analyze {
    client: AnalyticsServiceClient<InterceptedService<TracedChannel, ClientAuth>>,
}

impl Analyze {
    pub fn new(url: &str, secret: &secrecy::SecretString) -> anyhow::Result<Self> {
        let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect_lazy();
        let channel = TracedChannel::new(channel, url);
        Ok(Self {
            client: AnalyticsServiceClient::with_interceptor(channel, ClientAuth::new(secret)?)
                .max_decoding_message_size(64 << 20),
        })
    }
}

fn failure(status: tonic::Status) -> Failure {
    Failure::new(ErrorCode::of_status(&status).as_str(), status.message())
}

impl Kind for Analyze {
    fn name(&self) -> &'static str {
        "analyze"
    }

    fn validate(&self, payload: &Value, _kinds: &Kinds) -> Result<(), String> {
        parse::<AnalyzePayload>(payload)?.check()
    }

    fn run<'a>(&'a self, ctx: &'a JobContext, payload: Value) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let p: AnalyzePayload = parse(&payload).map_err(|m| Failure::new("invalid_payload", m))?;
            let mut request = tonic::Request::new(pb::RunAnalysisRequest {
                analysis: Some(pb::CreateAnalysisRequest {
                    title: p.title,
                    range: Some(sextant_proto::common::v1::TimeRange {
                        start: Some(timestamp(p.start)),
                        end: Some(timestamp(p.end)),
                    }),
                    metrics: p.metrics,
                    bucket: Some(prost_types::Duration {
                        seconds: i64::try_from(p.bucket_seconds).unwrap_or(i64::MAX),
                        nanos: 0,
                    }),
                }),
                run_id: ctx.job_id.to_string(),
            });
            Caller {
                tenant: ctx.tenant.clone(),
                user: "sextant-jobs".into(),
            }
            .apply(request.metadata_mut())
            .map_err(failure)?;
            let mut stream = self
                .client
                .clone()
                .run_analysis(request)
                .await
                .map_err(failure)?
                .into_inner();
            while let Some(message) = stream.next().await {
                match message.map_err(failure)?.message {
                    Some(pb::run_analysis_response::Message::Progress(p)) => {
                        ctx.progress(p.done, p.total, &format!("analysed {}", p.metric)).await;
                    }
                    Some(pb::run_analysis_response::Message::Analysis(a)) => {
                        return Ok(json!({ "analysis_id": a.id, "title": a.title, "metrics": a.metrics }));
                    }
                    None => {}
                }
            }
            Err(Failure::new(
                "unavailable",
                "the analytics service ended the run without a report",
            ))
        })
    }
}
