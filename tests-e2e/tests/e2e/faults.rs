//! Readiness follows the real state of PostgreSQL and RabbitMQ, and recovers
//! when they come back, without restarting any service. Each test stops and
//! starts servers of its own, never the shared ones.

use std::time::Duration;

use serde_json::Value;
use sextant_e2e::TestSystem;
use sextant_e2e::local::{self, LocalPostgres, LocalRabbit};

use crate::system;

fn names(body: &Value) -> Vec<String> {
    body["down"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn skip_without_local_servers() -> bool {
    if local::available() {
        return false;
    }
    let message = "fault tests need root and local PostgreSQL and RabbitMQ server packages";
    assert!(std::env::var("CI").map_or(true, |v| v != "true"), "{message}");
    eprintln!("SKIPPED: {message}");
    true
}

#[tokio::test]
async fn readiness_names_rabbitmq_while_it_is_down_and_recovers() {
    if skip_without_local_servers() {
        return;
    }
    let rabbit = LocalRabbit::start().await.expect("starting a throwaway RabbitMQ");
    let system = system!(TestSystem::builder().amqp(rabbit.url()));
    let pids = [system.gateway.pid(), system.jobs.pid()];

    rabbit.stop().await.unwrap();
    let body = system
        .wait_until(Duration::from_secs(15), |status, _| status == 503)
        .await
        .expect("readiness turns 503");
    assert!(names(&body).contains(&"jobs.rabbitmq".to_owned()), "{body}");
    assert_eq!(
        body["backends"]["jobs"]["down"],
        serde_json::json!(["rabbitmq"]),
        "{body}"
    );
    assert_eq!(body["backends"]["analytics"]["status"], "serving", "{body}");

    rabbit.start_again().await.unwrap();
    system
        .wait_until(Duration::from_secs(30), |status, _| status == 200)
        .await
        .unwrap_or_else(|body| panic!("readiness never recovered: {body}\n{}", system.all_logs()));
    assert_eq!([system.gateway.pid(), system.jobs.pid()], pids, "no service restarted");
}

#[tokio::test]
async fn readiness_names_postgres_while_it_is_down_and_recovers() {
    if skip_without_local_servers() {
        return;
    }
    let postgres = LocalPostgres::start().await.expect("starting a throwaway PostgreSQL");
    let Some(infra) = sextant_e2e::Infra::get().await else {
        return;
    };
    let system = system!(
        TestSystem::builder()
            .database(postgres.admin_url())
            .amqp(infra.amqp_url.clone())
    );

    postgres.stop().await.unwrap();
    let body = system
        .wait_until(Duration::from_secs(15), |status, body| {
            status == 503 && names(body).len() == 3
        })
        .await
        .unwrap_or_else(|body| panic!("readiness never named all three: {body}"));
    for backend in ["analytics", "jobs", "exports"] {
        assert!(names(&body).contains(&format!("{backend}.postgres")), "{body}");
    }

    postgres.start_again().await.unwrap();
    system
        .wait_until(Duration::from_secs(30), |status, _| status == 200)
        .await
        .unwrap_or_else(|body| panic!("readiness never recovered: {body}\n{}", system.all_logs()));
}
