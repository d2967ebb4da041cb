//! The `JobService` gRPC API: validation, tenant scoping (from the gateway's
//! metadata) and idempotency; rows become messages in [`crate::convert`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures::Stream;
use sextant_common::db;
use sextant_common::internal_auth::Caller;
use sextant_common::{ErrorCode, idempotency};
use sextant_proto::jobs::v1::job_service_server::JobService;
use sextant_proto::jobs::v1::submit_job_request::Schedule;
use sextant_proto::jobs::v1::submit_jobs_response::{Item, item::Outcome};
use sextant_proto::jobs::v1::*;
use sqlx::PgPool;
use time::OffsetDateTime;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use tokio_util::sync::CancellationToken;

use crate::Signals;
use crate::convert::{jobs_with_errors, status_name, status_of, to_job};
use crate::dispatcher::Direct;
use crate::events::Hub;
use crate::kinds::Kinds;
use crate::store::{self, Cancelled, Inserted, JobRow, ListFilter, NewJob, Requested, Retried};
use crate::topology::WorkItem;
use crate::watch::{self, Target};

pub const MAX_BATCH: usize = 1000;
pub const MAX_PAGE_SIZE: u32 = 500;
pub const DEFAULT_PAGE_SIZE: u32 = 50;
const MAX_DELAY: Duration = Duration::from_secs(30 * 24 * 3600);
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Per-deployment submit defaults.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub max_attempts: u32,
    pub timeout: Duration,
}

pub struct JobsApi {
    pool: PgPool,
    kinds: Arc<Kinds>,
    defaults: Defaults,
    signals: Arc<Signals>,
    hub: Hub,
    /// Ends watch streams when the service stops.
    shutdown: CancellationToken,
    metrics: crate::metrics::Metrics,
    direct: Direct,
}

impl JobsApi {
    pub fn new(
        pool: PgPool,
        kinds: Arc<Kinds>,
        defaults: Defaults,
        signals: Arc<Signals>,
        hub: Hub,
        shutdown: CancellationToken,
        metrics: crate::metrics::Metrics,
    ) -> Self {
        Self {
            direct: Direct::new().0,
            pool,
            kinds,
            defaults,
            signals,
            hub,
            shutdown,
            metrics,
        }
    }

    /// Due jobs go to this dispatcher in memory (see [`Direct`]); without
    /// it, every job goes through the outbox.
    pub fn with_direct(mut self, direct: Direct) -> Self {
        self.direct = direct;
        self
    }

    /// Validates and inserts jobs (the valid ones in one statement); one
    /// outcome per request, in order. `Err` only when the store is unavailable.
    async fn submit(
        &self,
        tenant: &str,
        internal: bool,
        requests: Vec<SubmitJobRequest>,
    ) -> Result<Vec<Result<SubmitJobResponse, Invalid>>, Invalid> {
        let validated: Vec<Result<NewJob, Invalid>> = requests
            .into_iter()
            .map(|r| self.validate(tenant, internal, r))
            .collect();
        let valid: Vec<NewJob> = validated.iter().filter_map(|v| v.as_ref().ok()).cloned().collect();
        let stored_direct = self.direct.ready();
        let mut inserted = if valid.is_empty() {
            Vec::new()
        } else {
            store::insert_many(&self.pool, &valid, stored_direct)
                .await
                .map_err(Invalid::internal)?
        }
        .into_iter();
        let mut outcomes = Vec::with_capacity(validated.len());
        let mut accepted = 0usize;
        let mut due = Vec::new();
        for validation in validated {
            let outcome = match validation {
                Err(invalid) => Err(invalid),
                Ok(_) => match inserted.next().expect("one outcome per valid job") {
                    Inserted::Created(row) => {
                        accepted += 1;
                        if row.status == "queued" {
                            due.push(WorkItem {
                                id: row.id,
                                attempt: row.attempt,
                                priority: row.priority,
                            });
                        }
                        tracing::debug!(job_id = %row.id, kind = %row.kind, "job accepted");
                        // A new job has no attempts yet, so no errors to look up.
                        Ok(SubmitJobResponse {
                            job: Some(to_job(row, Vec::new())),
                            created: true,
                        })
                    }
                    Inserted::Existing(row) => Ok(SubmitJobResponse {
                        job: Some(self.with_errors(row).await.map_err(Invalid::internal)?),
                        created: false,
                    }),
                    Inserted::Conflict => Err(Invalid {
                        code: ErrorCode::AlreadyExists,
                        field: "idempotency_key",
                        message: "idempotency key already used for a different request".into(),
                    }),
                },
            };
            outcomes.push(outcome);
        }
        if accepted > 0 {
            tracing::info!(jobs = accepted, "jobs accepted");
            // Stored as dispatched only if the fast path was ready at insert.
            let outbox = !stored_direct || due.len() < accepted;
            if stored_direct && !due.is_empty() {
                let ids: Vec<_> = due.iter().map(|j| j.id).collect();
                if !self.direct.send(due) {
                    store::undispatch(&self.pool, &ids).await.map_err(Invalid::internal)?;
                }
            }
            if outbox {
                self.signals.new_work();
            } else {
                self.signals.changed();
            }
        }
        Ok(outcomes)
    }

    fn validate(&self, tenant: &str, internal: bool, request: SubmitJobRequest) -> Result<NewJob, Invalid> {
        let kind = self.kinds.get_for(&request.kind, internal).ok_or_else(|| {
            let known = self.kinds.names().join(", ");
            Invalid::arg("kind", format!("unknown kind {:?}; known kinds: {known}", request.kind))
        })?;
        let payload: serde_json::Value = if request.payload_json.trim().is_empty() {
            serde_json::json!({})
        } else {
            serde_json::from_str(&request.payload_json)
                .map_err(|e| Invalid::arg("payload", format!("payload is not valid JSON: {e}")))?
        };
        if json_has_nul(&payload) {
            return Err(Invalid::arg("payload", NUL_REFUSED));
        }
        kind.validate(&payload, &self.kinds)
            .map_err(|m| Invalid::arg("payload", m))?;

        let priority = request.priority.unwrap_or(5);
        if priority > 9 {
            return Err(Invalid::arg("priority", "priority must be between 0 and 9"));
        }
        let max_attempts = request.max_attempts.unwrap_or(self.defaults.max_attempts);
        if !(1..=100).contains(&max_attempts) {
            return Err(Invalid::arg("max_attempts", "max_attempts must be between 1 and 100"));
        }
        let timeout = match request.timeout {
            None => self.defaults.timeout,
            Some(d) => duration("timeout", d)?,
        };
        if timeout < Duration::from_secs(1) || timeout > MAX_TIMEOUT {
            return Err(Invalid::arg("timeout", "timeout must be between 1s and 24h"));
        }
        let now = OffsetDateTime::now_utc();
        let (run_at, requested) = match request.schedule {
            None => (now, Requested::Now),
            Some(Schedule::Delay(d)) => {
                let delay = duration("delay", d)?;
                if delay > MAX_DELAY {
                    return Err(Invalid::arg("delay", "delay must be at most 30 days"));
                }
                let ms = i64::try_from(delay.as_millis()).expect("at most 30 days");
                (now + delay, Requested::DelayMs(ms))
            }
            Some(Schedule::RunAt(t)) => {
                let at = timestamp("run_at", &t)?;
                if at > now + MAX_DELAY {
                    return Err(Invalid::arg("run_at", "run_at must be at most 30 days ahead"));
                }
                (at.max(now), Requested::At(at.unix_timestamp_nanos()))
            }
        };
        let idempotency_key = Some(request.idempotency_key).filter(|k| !k.is_empty());
        if idempotency_key.as_ref().is_some_and(|k| !idempotency::valid(k)) {
            return Err(Invalid::arg(
                "idempotency_key",
                format!("idempotency_key {}", idempotency::RULE),
            ));
        }
        let failure_policy = match FailurePolicy::try_from(request.failure_policy) {
            Ok(FailurePolicy::Continue) => "continue",
            Ok(FailurePolicy::FailFast | FailurePolicy::Unspecified) => "fail_fast",
            Err(_) => return Err(Invalid::arg("failure_policy", "unknown failure policy")),
        };
        Ok(NewJob {
            id: Uuid::now_v7(),
            tenant: tenant.to_owned(),
            kind: request.kind,
            payload,
            priority: i16::try_from(priority).expect("checked above"),
            max_attempts: i32::try_from(max_attempts).expect("checked above"),
            timeout_ms: i64::try_from(timeout.as_millis()).expect("checked above"),
            idempotency_key,
            run_at,
            failure_policy,
            parent_id: None,
            requested,
            trace_context: sextant_common::telemetry::current_traceparent(),
        })
    }

    async fn with_errors(&self, row: JobRow) -> sqlx::Result<Job> {
        let mut jobs = jobs_with_errors(&self.pool, vec![row]).await?;
        Ok(jobs.pop().expect("one job per row"))
    }
}

/// A refused request, with the field it concerns.
#[derive(Debug)]
struct Invalid {
    code: ErrorCode,
    field: &'static str,
    message: String,
}

impl Invalid {
    fn arg(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::InvalidArgument,
            field,
            message: message.into(),
        }
    }

    fn internal(error: sqlx::Error) -> Self {
        let status = internal(error);
        Self {
            code: ErrorCode::of_status(&status),
            field: "",
            message: status.message().to_owned(),
        }
    }

    fn status(self) -> Status {
        self.code.status(self.message)
    }
}

fn internal(error: sqlx::Error) -> Status {
    db::unavailable(store::NAME)(error)
}

fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    Caller::from_metadata(request.metadata())
}

fn job_id(id: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(id).map_err(|_| ErrorCode::InvalidArgument.status("id is not a valid job id"))
}

fn not_found() -> Status {
    ErrorCode::NotFound.status("job not found")
}

fn duration(field: &'static str, d: prost_types::Duration) -> Result<Duration, Invalid> {
    if d.seconds < 0 || d.nanos < 0 {
        return Err(Invalid::arg(field, format!("{field} must not be negative")));
    }
    Ok(Duration::new(d.seconds.unsigned_abs(), d.nanos.unsigned_abs()))
}

fn timestamp(field: &'static str, t: &prost_types::Timestamp) -> Result<OffsetDateTime, Invalid> {
    let nanos = i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos);
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .map_err(|_| Invalid::arg(field, format!("{field} is out of range")))
}

/// Opaque list cursor: the last job id of the page, base64url.
fn encode_cursor(id: Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.as_bytes())
}

fn decode_cursor(cursor: &str) -> Result<Uuid, Status> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| Uuid::from_slice(&b).ok())
        .ok_or_else(|| ErrorCode::InvalidArgument.status("page.cursor is malformed"))
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchJobsResponse, Status>> + Send>>;

/// Whether another service calls on its own behalf (the internal secret,
/// checked by the server's auth layer, makes the header trustworthy; the
/// gateway never sets it).
fn from_service<T>(request: &Request<T>) -> bool {
    request
        .metadata()
        .contains_key(sextant_common::internal_auth::SERVICE_HEADER)
}

#[tonic::async_trait]
impl JobService for JobsApi {
    async fn submit_job(&self, request: Request<SubmitJobRequest>) -> Result<Response<SubmitJobResponse>, Status> {
        let caller = caller(&request)?;
        let internal = from_service(&request);
        let mut outcomes = self
            .submit(&caller.tenant, internal, vec![request.into_inner()])
            .await
            .map_err(Invalid::status)?;
        let response = outcomes.pop().expect("one outcome").map_err(Invalid::status)?;
        Ok(Response::new(response))
    }

    async fn submit_jobs(&self, request: Request<SubmitJobsRequest>) -> Result<Response<SubmitJobsResponse>, Status> {
        let caller = caller(&request)?;
        let internal = from_service(&request);
        let jobs = request.into_inner().jobs;
        if jobs.is_empty() || jobs.len() > MAX_BATCH {
            return Err(ErrorCode::InvalidArgument.status(format!("jobs must hold 1 to {MAX_BATCH} items")));
        }
        let outcomes = self
            .submit(&caller.tenant, internal, jobs)
            .await
            .map_err(Invalid::status)?;
        let items = outcomes
            .into_iter()
            .enumerate()
            .map(|(index, outcome)| Item {
                outcome: Some(match outcome {
                    Ok(accepted) => Outcome::Accepted(accepted),
                    Err(invalid) => Outcome::Error(ItemError {
                        index: u32::try_from(index).unwrap_or(u32::MAX),
                        code: invalid.code.as_str().to_owned(),
                        message: invalid.message,
                        field: invalid.field.to_owned(),
                    }),
                }),
            })
            .collect();
        Ok(Response::new(SubmitJobsResponse { items }))
    }

    async fn get_job(&self, request: Request<GetJobRequest>) -> Result<Response<Job>, Status> {
        let caller = caller(&request)?;
        let id = job_id(&request.get_ref().id)?;
        let row = store::get(&self.pool, &caller.tenant, id)
            .await
            .map_err(internal)?
            .ok_or_else(not_found)?;
        Ok(Response::new(self.with_errors(row).await.map_err(internal)?))
    }

    async fn list_jobs(&self, request: Request<ListJobsRequest>) -> Result<Response<ListJobsResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let page = request.page.unwrap_or_default();
        let page_size = match page.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n > MAX_PAGE_SIZE => {
                return Err(
                    ErrorCode::InvalidArgument.status(format!("page.page_size must be at most {MAX_PAGE_SIZE}"))
                );
            }
            n => n,
        };
        let mut statuses = Vec::new();
        for status in request.statuses {
            let name = JobStatus::try_from(status)
                .ok()
                .and_then(status_name)
                .ok_or_else(|| ErrorCode::InvalidArgument.status(format!("unknown status {status}")))?;
            statuses.push(name.to_owned());
        }
        let range = request.created.unwrap_or_default();
        let bound = |t: Option<prost_types::Timestamp>, field| {
            t.map(|t| timestamp(field, &t)).transpose().map_err(Invalid::status)
        };
        refuse_nul_in_kinds(&request.kinds)?;
        let filter = ListFilter {
            statuses,
            kinds: request.kinds,
            created_after: bound(range.start, "created.start")?,
            created_before: bound(range.end, "created.end")?,
            parent_id: if request.parent_id.is_empty() {
                None
            } else {
                Some(job_id(&request.parent_id)?)
            },
            before_id: if page.cursor.is_empty() {
                None
            } else {
                Some(decode_cursor(&page.cursor)?)
            },
            // One extra row tells whether another page exists.
            limit: i64::from(page_size) + 1,
        };
        let mut rows = store::list(&self.pool, &caller.tenant, &filter)
            .await
            .map_err(internal)?;
        let more = rows.len() > page_size as usize;
        rows.truncate(page_size as usize);
        let next_cursor = if more {
            rows.last().map(|r| encode_cursor(r.id)).unwrap_or_default()
        } else {
            String::new()
        };
        let jobs = jobs_with_errors(&self.pool, rows).await.map_err(internal)?;
        Ok(Response::new(ListJobsResponse {
            jobs,
            page: Some(sextant_proto::common::v1::PageResponse { next_cursor }),
        }))
    }

    async fn cancel_job(&self, request: Request<CancelJobRequest>) -> Result<Response<Job>, Status> {
        let caller = caller(&request)?;
        let id = job_id(&request.get_ref().id)?;
        match store::cancel(&self.pool, &caller.tenant, id).await.map_err(internal)? {
            Cancelled::Done(row) => {
                self.signals.changed();
                tracing::info!(job_id = %row.id, status = %row.status, "cancel accepted");
                Ok(Response::new(self.with_errors(row).await.map_err(internal)?))
            }
            Cancelled::Finished(row) => {
                Err(ErrorCode::FailedPrecondition.status(format!("job already {}", row.status)))
            }
            Cancelled::NotFound => Err(not_found()),
        }
    }

    async fn retry_job(&self, request: Request<RetryJobRequest>) -> Result<Response<Job>, Status> {
        let caller = caller(&request)?;
        let id = job_id(&request.get_ref().id)?;
        match store::retry(&self.pool, &caller.tenant, id).await.map_err(internal)? {
            Retried::Queued(row) => {
                self.signals.new_work();
                Ok(Response::new(self.with_errors(row).await.map_err(internal)?))
            }
            Retried::NotRetryable(row) => Err(ErrorCode::FailedPrecondition.status(format!(
                "only failed or cancelled jobs can be retried; this one is {}",
                row.status
            ))),
            Retried::NotFound => Err(not_found()),
        }
    }

    async fn get_job_stats(&self, request: Request<GetJobStatsRequest>) -> Result<Response<JobStats>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let range = request.created.unwrap_or_default();
        let after = range
            .start
            .map(|t| timestamp("created.start", &t))
            .transpose()
            .map_err(Invalid::status)?;
        let before = range
            .end
            .map(|t| timestamp("created.end", &t))
            .transpose()
            .map_err(Invalid::status)?;
        refuse_nul_in_kinds(&request.kinds)?;
        let stats = store::stats(&self.pool, &caller.tenant, &request.kinds, after, before)
            .await
            .map_err(internal)?;
        let duration_of = |ms: Option<f64>| {
            ms.map(|ms| prost_types::Duration {
                seconds: (ms / 1000.0).trunc() as i64,
                nanos: ((ms % 1000.0) * 1_000_000.0) as i32,
            })
        };
        Ok(Response::new(JobStats {
            counts: stats
                .counts
                .into_iter()
                .map(|c| job_stats::Count {
                    kind: c.kind,
                    status: status_of(&c.status) as i32,
                    count: u64::try_from(c.count).unwrap_or(0),
                })
                .collect(),
            run_times: stats
                .run_times
                .into_iter()
                .map(|r| job_stats::Durations {
                    kind: r.kind,
                    p50: duration_of(r.p50_ms),
                    p95: duration_of(r.p95_ms),
                })
                .collect(),
            throughput_1m: stats.throughput.last_1m as f64 / 60.0,
            throughput_5m: stats.throughput.last_5m as f64 / 300.0,
            throughput_15m: stats.throughput.last_15m as f64 / 900.0,
        }))
    }

    type WatchJobsStream = WatchStream;

    async fn watch_jobs(&self, request: Request<WatchJobsRequest>) -> Result<Response<Self::WatchJobsStream>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let target = match request.target {
            Some(watch_jobs_request::Target::JobId(id)) => Target::Job(job_id(&id)?),
            Some(watch_jobs_request::Target::All(true)) => Target::Tenant {
                all_events: request.all_events,
            },
            _ => return Err(ErrorCode::InvalidArgument.status("target: set job_id, or all = true")),
        };
        let receiver = watch::start(
            self.pool.clone(),
            &self.hub,
            &self.metrics,
            self.shutdown.clone(),
            caller.tenant,
            target,
            request.after_version,
        )
        .await?;
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(
            receiver,
        ))))
    }
}

/// PostgreSQL text and jsonb cannot hold U+0000. A request carrying one is
/// bad input, refused here: left to the store, it would fail as if the store
/// were down (503), and trip the gateway's circuit breaker.
const NUL_REFUSED: &str = "strings must not contain U+0000 (NUL)";

fn json_has_nul(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(json_has_nul),
        Value::Object(fields) => fields
            .iter()
            .any(|(key, value)| key.contains('\0') || json_has_nul(value)),
        _ => false,
    }
}

fn refuse_nul_in_kinds(kinds: &[String]) -> Result<(), Status> {
    if kinds.iter().any(|kind| kind.contains('\0')) {
        return Err(ErrorCode::InvalidArgument.status(format!("kinds: {NUL_REFUSED}")));
    }
    Ok(())
}
