//! What goes over the events exchange between replicas: a batch of job
//! events, each with its tenant and publication number. The relay in
//! [`crate::events`] sends these; every replica's hub reads them.

use sextant_proto::jobs::v1::JobEvent;

/// What goes over the events exchange: an event with its tenant and number.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Envelope {
    #[prost(string, tag = "1")]
    pub tenant: String,
    #[prost(uint64, tag = "2")]
    pub seq: u64,
    #[prost(message, optional, tag = "3")]
    pub event: Option<JobEvent>,
}

/// What one message on the events exchange carries: consecutive events, in
/// number order. The relay sends a batch per message (up to
/// [`EVENTS_PER_MESSAGE`]), so the broker's cost is per batch, not per event.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EnvelopeBatch {
    #[prost(message, repeated, tag = "1")]
    pub envelopes: Vec<Envelope>,
    /// The number of the last event the relay published before these: a hub
    /// that has not seen it missed a message, and its watchers catch up.
    #[prost(uint64, tag = "2")]
    pub after: u64,
}

/// Most events in one message on the events exchange.
pub const EVENTS_PER_MESSAGE: usize = 256;
/// The content type of an [`EnvelopeBatch`] message (earlier releases sent
/// one bare [`Envelope`] per message; their numbers mean nothing now).
pub const BATCH_CONTENT_TYPE: &str = "application/x-protobuf; messageType=sextant.jobs.EnvelopeBatch";

impl Envelope {
    pub fn job_id(&self) -> &str {
        self.event.as_ref().map_or("", |e| e.job_id.as_str())
    }

    pub fn version(&self) -> u64 {
        self.event.as_ref().map_or(0, |e| e.version)
    }
}
