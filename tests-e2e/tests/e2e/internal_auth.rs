//! The backends refuse any call without the internal secret, except the gRPC
//! health service (so probes need no secret).

use sextant_proto::jobs::v1::GetJobRequest;
use sextant_proto::jobs::v1::job_service_client::JobServiceClient;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::system;

async fn channel(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn with_secret<T>(message: T, secret: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(secret) = secret {
        request
            .metadata_mut()
            .insert("x-sextant-internal-secret", secret.parse().unwrap());
    }
    request
}

async fn list_services(channel: Channel, secret: Option<&str>) -> Result<Vec<String>, tonic::Status> {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut client = ServerReflectionClient::new(channel);
    let mut responses = client
        .server_reflection_info(with_secret(tokio_stream::iter([request]), secret))
        .await?
        .into_inner();
    let response = responses.message().await?.expect("one response");
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => Ok(list.service.into_iter().map(|s| s.name).collect()),
        other => panic!("unexpected reflection response {other:?}"),
    }
}

#[tokio::test]
async fn backends_refuse_calls_without_the_internal_secret() {
    let system = system!();
    for backend in [&system.analytics, &system.jobs, &system.exports] {
        let channel = channel(backend.addr).await;

        let refused = list_services(channel.clone(), None).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{}: {refused:?}", backend.name);

        let wrong = list_services(channel.clone(), Some("not-the-secret"))
            .await
            .unwrap_err();
        assert_eq!(wrong.code(), Code::Unauthenticated, "{}", backend.name);

        let services = list_services(channel.clone(), Some(&system.internal_secret))
            .await
            .unwrap();
        assert!(services.iter().any(|s| s == "grpc.health.v1.Health"), "{services:?}");
    }
}

#[tokio::test]
async fn the_secret_guards_every_rpc_not_only_reflection() {
    let system = system!();
    let mut client = JobServiceClient::new(channel(system.jobs.addr).await);
    let refused = client
        .get_job(with_secret(GetJobRequest { id: "x".into() }, None))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(
        refused.metadata().get("x-sextant-error-code").unwrap(),
        "unauthenticated"
    );
}

#[tokio::test]
async fn health_answers_without_the_secret() {
    let system = system!();
    let mut client = HealthClient::new(channel(system.jobs.addr).await);
    let response = client
        .check(HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        response.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
}
