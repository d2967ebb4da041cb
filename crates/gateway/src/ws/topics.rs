//! Live topics. A subscription follows one `WatchJobs` stream of the jobs
//! service: `job:<id>` one job, `jobs` every job of the tenant. Frames go to
//! the session through its bounded outbound queue; a subscriber that lets the
//! queue fill is a slow consumer and loses the connection (4008). When the
//! backend stream breaks (a jobs replica restarting), the subscription resumes
//! it with the last version it forwarded, so the client sees no seam.

use std::collections::HashMap;
use std::time::Duration;

use actix_web::web;
use serde_json::{Value, json};
use sextant_common::ErrorCode;
use sextant_common::internal_auth::Caller;
use sextant_proto::jobs::v1::watch_jobs_request::Target;
use sextant_proto::jobs::v1::watch_jobs_response::Message;
use sextant_proto::jobs::v1::{JobEventType, WatchJobsRequest, WatchJobsResponse};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::backends::{self, Backends};
use crate::routes::jobs::job_json;

use super::protocol::ServerFrame;

const RESUME_MIN_DELAY: Duration = Duration::from_millis(50);
const RESUME_MAX_DELAY: Duration = Duration::from_secs(5);

/// A topic a client may subscribe to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic {
    /// `job:<id>`: one job of the caller's tenant.
    Job(String),
    /// `jobs`: every job of the caller's tenant.
    Jobs,
}

impl Topic {
    pub fn parse(name: &str) -> Option<Self> {
        match name.split_once(':') {
            None if name == "jobs" => Some(Topic::Jobs),
            Some(("job", id)) if !id.is_empty() => Some(Topic::Job(id.to_owned())),
            _ => None,
        }
    }

    fn target(&self) -> Target {
        match self {
            Topic::Job(id) => Target::JobId(id.clone()),
            Topic::Jobs => Target::All(true),
        }
    }
}

/// What subscriptions hand the session.
pub enum Outbound {
    Frame(String),
    /// The subscription ended for good (its error frame went first).
    Ended {
        topic: String,
    },
}

/// A session's subscriptions; dropping it stops them all.
#[derive(Default)]
pub struct Subscriptions {
    active: HashMap<String, AbortHandle>,
}

impl Subscriptions {
    pub fn len(&self) -> usize {
        self.active.len()
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    pub fn contains(&self, topic: &str) -> bool {
        self.active.contains_key(topic)
    }

    pub fn insert(&mut self, topic: String, task: AbortHandle) {
        if let Some(previous) = self.active.insert(topic, task) {
            previous.abort();
        }
    }

    pub fn remove(&mut self, topic: &str) -> bool {
        self.active.remove(topic).map(|task| task.abort()).is_some()
    }

    /// Forgets a subscription whose task has already ended.
    pub fn ended(&mut self, topic: &str) {
        self.active.remove(topic);
    }
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        for task in self.active.values() {
            task.abort();
        }
    }
}

/// Everything a subscription task needs.
pub struct Follow {
    pub backends: web::Data<Backends>,
    pub caller: Caller,
    pub name: String,
    pub topic: Topic,
    /// Resume after this version (`job:`) or sequence (`jobs`); 0 = snapshot first.
    pub after: u64,
    /// The subscribe op's id, echoed in `subscribed` or the refusal.
    pub id: Option<Value>,
    pub out: mpsc::Sender<Outbound>,
    /// Cancelled when the outbound queue overflows.
    pub slow: CancellationToken,
}

impl Follow {
    pub fn spawn(self) -> AbortHandle {
        actix_web::rt::spawn(self.run()).abort_handle()
    }

    async fn run(mut self) {
        let mut delay = RESUME_MIN_DELAY;
        let mut confirmed = false;
        loop {
            let request = WatchJobsRequest {
                target: Some(self.topic.target()),
                after_version: self.after,
            };
            let opened = match backends::request(&self.caller, request) {
                Ok(request) => self.backends.jobs_streams().watch_jobs(request).await,
                Err(error) => Err(tonic::Status::internal(error.to_string())),
            };
            let status = match opened {
                Ok(response) => {
                    if !confirmed {
                        confirmed = true;
                        let frame = ServerFrame::Subscribed {
                            id: self.id.take(),
                            topic: &self.name,
                        };
                        if !self.push(frame.to_text()) {
                            return;
                        }
                    }
                    delay = RESUME_MIN_DELAY;
                    let mut stream = response.into_inner();
                    loop {
                        match stream.message().await {
                            Ok(Some(message)) => {
                                if !self.forward(message) {
                                    return;
                                }
                            }
                            Ok(None) => break tonic::Status::unavailable("watch stream ended"),
                            Err(status) => break status,
                        }
                    }
                }
                Err(status) => status,
            };
            if !matches!(
                status.code(),
                Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
            ) {
                // A refusal (not found, invalid): tell the client and stop.
                let code = ErrorCode::of_status(&status);
                let frame = ServerFrame::Error {
                    id: self.id.take(),
                    code: code.as_str(),
                    message: status.message().to_owned(),
                    topic: Some(self.name.clone()),
                };
                self.push(frame.to_text());
                let _ = self.out.try_send(Outbound::Ended {
                    topic: self.name.clone(),
                });
                return;
            }
            tracing::debug!(topic = %self.name, code = ?status.code(), after = self.after, ?delay, "resuming watch");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RESUME_MAX_DELAY);
        }
    }

    /// Queues a frame; `false` (and the session closes 4008) when the queue is full.
    fn push(&self, frame: String) -> bool {
        match self.out.try_send(Outbound::Frame(frame)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.slow.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn forward(&mut self, message: WatchJobsResponse) -> bool {
        let frame = match message.message {
            Some(Message::Snapshot(snapshot)) => {
                self.after = snapshot.version;
                json!({
                    "type": "snapshot",
                    "topic": self.name,
                    "version": snapshot.version,
                    "jobs": snapshot.jobs.iter().map(job_json).collect::<Vec<_>>(),
                })
            }
            Some(Message::Event(event)) => {
                let version = match self.topic {
                    Topic::Job(_) => event.version,
                    Topic::Jobs => message.sequence,
                };
                self.after = version;
                let mut job = event.job.as_ref().map(job_json).unwrap_or(Value::Null);
                // Events do not repeat the payload.
                if let Some(fields) = job.as_object_mut() {
                    fields.remove("payload");
                }
                json!({
                    "type": "event",
                    "topic": self.name,
                    "version": version,
                    "event": event_name(event.r#type()),
                    "job_id": event.job_id,
                    "job_version": event.version,
                    "occurred_at": crate::routes::jobs::rfc3339(&event.occurred_at),
                    "retry_at": crate::routes::jobs::rfc3339(&event.retry_at),
                    "job": job,
                })
            }
            None => return true,
        };
        self.push(frame.to_string())
    }
}

pub fn event_name(event: JobEventType) -> &'static str {
    match event {
        JobEventType::Queued => "queued",
        JobEventType::Scheduled => "scheduled",
        JobEventType::Started => "started",
        JobEventType::Progress => "progress",
        JobEventType::Succeeded => "succeeded",
        JobEventType::Failed => "failed",
        JobEventType::Cancelled => "cancelled",
        JobEventType::RetryScheduled => "retry_scheduled",
        JobEventType::CancelRequested => "cancel_requested",
        JobEventType::Unspecified => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_parse() {
        assert_eq!(Topic::parse("jobs"), Some(Topic::Jobs));
        assert_eq!(Topic::parse("job:0193"), Some(Topic::Job("0193".into())));
        assert_eq!(Topic::parse("job:"), None);
        assert_eq!(Topic::parse("metrics"), None);
        assert_eq!(Topic::parse("jobs:x"), None);
    }
}
