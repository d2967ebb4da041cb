//! The backend streams behind topics, rendered as frames: `job:<id>` and
//! `jobs` follow the jobs service's `WatchJobs`, `metric:<query>` the
//! analytics service's `WatchMetric`, `alerts` and `alert:<id>` its
//! `WatchAlerts`. Each message becomes one [`Frame`], serialised and framed
//! here once for every subscriber that will get it.

use std::sync::Arc;

use actix_web::web;
use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::{Map, Value, json};
use sextant_common::ErrorCode;
use sextant_common::internal_auth::Caller;
use sextant_proto::jobs::v1::watch_jobs_request::Target;
use sextant_proto::jobs::v1::watch_jobs_response::Message;
use sextant_proto::jobs::v1::{WatchJobsRequest, WatchJobsResponse};
use tonic::Status;

use super::fanout::{Frame, FrameStream, Upstream};
use super::topic::Topic;
use super::wire;
use crate::backends::{self, Backends};
use crate::convert::alerts::{instance_json, transition_json};
use crate::convert::metrics::{WatchSpec, query_json, update_json};
use crate::convert::{event_json, job_json};
use sextant_proto::analytics::v1::{
    WatchAlertsRequest, WatchAlertsResponse, WatchMetricResponse, watch_alerts_response, watch_metric_response,
};

/// Opens topics on the backends over gRPC.
pub struct BackendUpstream {
    backends: web::Data<Backends>,
}

impl BackendUpstream {
    pub fn new(backends: web::Data<Backends>) -> Self {
        Self { backends }
    }
}

impl Upstream for BackendUpstream {
    fn open(
        &self,
        caller: &Caller,
        topic: &Topic,
        name: &Arc<str>,
        after: u64,
        shared: bool,
    ) -> BoxFuture<'static, Result<FrameStream, Status>> {
        let target = match topic {
            Topic::Job(id) => Target::JobId(id.clone()),
            Topic::Jobs => Target::All(true),
            Topic::Metric(spec) => return self.open_metric(caller, spec.clone(), name, after),
            Topic::Alerts => return self.open_alerts(caller, String::new(), name, after),
            Topic::Alert(id) => return self.open_alerts(caller, id.clone(), name, after),
        };
        let request = WatchJobsRequest {
            target: Some(target),
            after_version: after,
            all_events: shared,
        };
        let request = backends::request(caller, request).map_err(|e| ErrorCode::Internal.status(e.to_string()));
        let mut client = self.backends.jobs_streams();
        let (topic, name) = (topic.clone(), name.clone());
        Box::pin(async move {
            let stream = client.watch_jobs(request?).await?.into_inner();
            let frames = stream.filter_map(move |message| {
                let frame = message.map(|m| jobs_frame(&topic, &name, m)).transpose();
                std::future::ready(frame)
            });
            Ok(frames.boxed())
        })
    }
}

impl BackendUpstream {
    fn open_metric(
        &self,
        caller: &Caller,
        spec: Arc<WatchSpec>,
        name: &Arc<str>,
        after: u64,
    ) -> BoxFuture<'static, Result<FrameStream, Status>> {
        let request =
            backends::request(caller, spec.request(after)).map_err(|e| ErrorCode::Internal.status(e.to_string()));
        let mut client = self.backends.analytics_streams();
        let name = name.clone();
        Box::pin(async move {
            let stream = client.watch_metric(request?).await?.into_inner();
            let frames = stream.filter_map(move |message| {
                let frame = message.map(|m| metric_frame(&spec, &name, m)).transpose();
                std::future::ready(frame)
            });
            Ok(frames.boxed())
        })
    }
}

impl BackendUpstream {
    fn open_alerts(
        &self,
        caller: &Caller,
        rule_id: String,
        name: &Arc<str>,
        after: u64,
    ) -> BoxFuture<'static, Result<FrameStream, Status>> {
        let request = WatchAlertsRequest {
            rule_id,
            after_version: after,
        };
        let request = backends::request(caller, request).map_err(|e| ErrorCode::Internal.status(e.to_string()));
        let mut client = self.backends.analytics_streams();
        let name = name.clone();
        Box::pin(async move {
            let stream = client.watch_alerts(request?).await?.into_inner();
            let frames = stream.filter_map(move |message| {
                let frame = message.map(|m| alerts_frame(&name, m)).transpose();
                std::future::ready(frame)
            });
            Ok(frames.boxed())
        })
    }
}

/// A `WatchAlerts` message as a frame: a `snapshot` of the instances, or a
/// `transition`.
fn alerts_frame(name: &str, message: WatchAlertsResponse) -> Option<Frame> {
    let (snapshot, mut frame) = match message.message? {
        watch_alerts_response::Message::Snapshot(snapshot) => {
            let mut body = Map::new();
            body.insert(
                "instances".into(),
                snapshot.instances.iter().map(instance_json).collect::<Vec<_>>().into(),
            );
            (true, body)
        }
        watch_alerts_response::Message::Transition(transition) => (false, transition_json(&transition)),
    };
    frame.insert("type".into(), json!(if snapshot { "snapshot" } else { "transition" }));
    frame.insert("topic".into(), json!(name));
    frame.insert("version".into(), json!(message.version));
    Some(Frame {
        version: message.version,
        snapshot,
        wire: wire::text(Value::Object(frame).to_string().as_bytes()),
    })
}

/// A `WatchMetric` message as a frame: a `snapshot` of the window, or an
/// `update` with the buckets that changed.
fn metric_frame(spec: &WatchSpec, name: &str, message: WatchMetricResponse) -> Option<Frame> {
    let (snapshot, mut frame) = match message.message? {
        watch_metric_response::Message::Snapshot(snapshot) => (true, query_json(&snapshot, spec.group_by.is_some())),
        watch_metric_response::Message::Updates(update) => (false, update_json(&update, spec)),
        watch_metric_response::Message::Update(_) => return None,
    };
    frame.insert("type".into(), json!(if snapshot { "snapshot" } else { "update" }));
    frame.insert("topic".into(), json!(name));
    frame.insert("version".into(), json!(message.version));
    Some(Frame {
        version: message.version,
        snapshot,
        wire: wire::text(Value::Object(frame).to_string().as_bytes()),
    })
}

/// A `WatchJobs` message as a frame; `None` for a message with nothing to show.
fn jobs_frame(topic: &Topic, name: &str, message: WatchJobsResponse) -> Option<Frame> {
    let (snapshot, version, body) = match message.message? {
        Message::Snapshot(snapshot) => {
            let mut body = Map::new();
            body.insert(
                "jobs".into(),
                snapshot.jobs.iter().map(job_json).collect::<Vec<_>>().into(),
            );
            (true, snapshot.version, body)
        }
        Message::Event(event) => {
            let version = match topic {
                Topic::Job(_) => event.version,
                Topic::Jobs | Topic::Metric(_) | Topic::Alerts | Topic::Alert(_) => message.sequence,
            };
            (false, version, event_json(&event))
        }
    };
    let mut frame = body;
    frame.insert("type".into(), json!(if snapshot { "snapshot" } else { "event" }));
    frame.insert("topic".into(), json!(name));
    frame.insert("version".into(), json!(version));
    Some(Frame {
        version,
        snapshot,
        wire: wire::text(Value::Object(frame).to_string().as_bytes()),
    })
}
