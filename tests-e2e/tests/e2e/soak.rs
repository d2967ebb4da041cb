//! The short soak: every service twice behind a load balancer, on a
//! three-node RabbitMQ cluster, under load for about two minutes while each
//! process is restarted (SIGTERM, then SIGKILL), a broker node is killed and
//! another cut off. `make soak` runs the same scenario for ten minutes.

use std::time::Duration;

use sextant_e2e::local;
use sextant_e2e::soak::{self, SoakOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_twice_loses_nothing_through_restarts_and_broker_faults() {
    if !local::available() || std::process::Command::new("haproxy").arg("-v").output().is_err() {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "needs root, iproute2, haproxy and a local RabbitMQ server package"
        );
        eprintln!("SKIPPED: needs root, iproute2, haproxy and a local RabbitMQ server package");
        return;
    }
    let admin_url = std::env::var(sextant_e2e::infra::DATABASE_URL_ENV)
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let report = soak::run(SoakOptions::new(Duration::from_secs(90), admin_url))
        .await
        .expect("running the soak scenario");
    println!("{report}");
    assert!(report.ok(), "{report}");
    assert!(report.jobs_accepted > 500, "{report}");
    assert!(report.exports_accepted > 10, "{report}");
    assert!(report.alert_high_phases >= 3, "{report}");
    assert!(
        report.jobs_retried >= 1,
        "the SIGKILLed jobs replica had jobs running: {report}"
    );
    assert!(
        report.subscriber_reconnects >= 1000,
        "the gateway restarts moved every subscriber: {report}"
    );
}
