//! The jobs service's gRPC API against real PostgreSQL (and RabbitMQ).

mod batch;
mod execution;
mod helpers;
mod lifecycle;
mod list;
mod migrations;
mod submit;
mod watch;

/// Starts the service, or returns from the test when it is skipped.
#[macro_export]
macro_rules! app {
    () => {
        match $crate::helpers::spawn_app().await {
            Some(app) => app,
            None => return,
        }
    };
    ($($k:expr => $v:expr),+ $(,)?) => {
        match $crate::helpers::spawn_app_with(&[$(($k, $v)),+]).await {
            Some(app) => app,
            None => return,
        }
    };
}

/// A submit request of `kind` with `payload`.
pub fn job(kind: &str, payload: &str) -> sextant_proto::jobs::v1::SubmitJobRequest {
    sextant_proto::jobs::v1::SubmitJobRequest {
        kind: kind.into(),
        payload_json: payload.into(),
        ..Default::default()
    }
}

/// How many jobs `client`'s tenant can see.
pub async fn count(client: &mut helpers::Client) -> usize {
    let request = sextant_proto::jobs::v1::ListJobsRequest {
        page: Some(sextant_proto::common::v1::PageRequest {
            page_size: 500,
            cursor: String::new(),
        }),
        ..Default::default()
    };
    client.list_jobs(request).await.unwrap().into_inner().jobs.len()
}

pub fn code(status: &tonic::Status) -> &str {
    status
        .metadata()
        .get("x-sextant-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}
