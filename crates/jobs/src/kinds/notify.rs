//! The `notify` kind: delivers one webhook notification, a signed JSON POST,
//! with the queue's retries and backoff. The analytics service submits one
//! per alert transition that notifies.
//!
//! Payload: `{"url": …, "body": "<the exact JSON text>", "signature": "<hex>"}`.
//! The request carries `Content-Type: application/json`,
//! `X-Sextant-Signature: sha256=<hex HMAC-SHA256 of the body under the rule's
//! secret>`, `X-Sextant-Delivery: <job id>` (the same on every attempt, for
//! receivers that deduplicate) and `X-Sextant-Attempt`. A 2xx answer
//! succeeds; anything else, or no answer within `jobs.notify.timeout`, fails
//! the attempt, to be retried. Redirects are not followed, and the target
//! must be on `jobs.notify.allow_hosts` at submit time and again at delivery.

use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};
use sextant_common::outbound::AllowList;
use tracing::Instrument as _;

use super::{Failure, Kind, Kinds, Outcome, parse};
use crate::context::JobContext;

/// The largest body a notification may carry.
const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    url: String,
    body: String,
    signature: String,
}

pub struct Notify {
    allow: AllowList,
    http: reqwest::Client,
}

impl Notify {
    pub fn new(allow: AllowList, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("sextant-notify/1")
            .build()?;
        Ok(Self { allow, http })
    }

    fn check(&self, p: &Payload) -> Result<reqwest::Url, String> {
        let url = self.allow.check(&p.url).map_err(|e| format!("url {e}"))?;
        if p.body.len() > MAX_BODY {
            return Err(format!("body must be at most {MAX_BODY} bytes"));
        }
        if p.signature.len() != 64 || !p.signature.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("signature must be 64 hex digits (HMAC-SHA256)".into());
        }
        Ok(url)
    }
}

impl Kind for Notify {
    fn name(&self) -> &'static str {
        "notify"
    }

    fn validate(&self, payload: &Value, _kinds: &Kinds) -> Result<(), String> {
        let p: Payload = parse(payload)?;
        self.check(&p).map(|_| ())
    }

    fn internal(&self) -> bool {
        true
    }

    fn run<'a>(&'a self, ctx: &'a JobContext, payload: Value) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let p: Payload = parse(&payload).map_err(|m| Failure::new("invalid_payload", m))?;
            // The allow-list may have shrunk since the job was submitted.
            let url = self.check(&p).map_err(|m| Failure::new("target_not_allowed", m))?;
            // An HTTP client span (OpenTelemetry's conventions), whose
            // context the receiver gets as `traceparent`.
            let span = tracing::info_span!(
                "webhook",
                otel.name = "POST",
                otel.kind = "client",
                http.request.method = "POST",
                url.full = %url,
                server.address = url.host_str().unwrap_or_default(),
                server.port = url.port_or_known_default().unwrap_or(0),
                http.response.status_code = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
            );
            let mut request = self
                .http
                .post(url.clone())
                .header("content-type", "application/json")
                .header("x-sextant-signature", format!("sha256={}", p.signature))
                .header("x-sextant-delivery", ctx.job_id.to_string())
                .header("x-sextant-attempt", ctx.attempt.to_string());
            if let Some(traceparent) = span.in_scope(sextant_common::telemetry::current_traceparent) {
                request = request.header("traceparent", traceparent);
            }
            let response = request
                .body(p.body)
                .send()
                .instrument(span.clone())
                .await
                .map_err(|e| {
                    span.record("otel.status_code", "ERROR");
                    Failure::new("webhook_unreachable", format!("{}: {e}", p.url))
                })?;
            let status = response.status();
            span.record("http.response.status_code", status.as_u16());
            if status.as_u16() >= 400 {
                span.record("otel.status_code", "ERROR");
            }
            if !status.is_success() {
                return Err(Failure::new(
                    "webhook_failed",
                    format!("{} answered {}", p.url, status.as_u16()),
                ));
            }
            Ok(json!({ "status": status.as_u16() }))
        })
    }
}
