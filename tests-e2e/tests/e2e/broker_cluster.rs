//! On a three-node RabbitMQ cluster: the services take the list of its nodes,
//! and jobs keep flowing while one node is killed (and comes back) and then
//! another is cut off from the network (and healed). The work queues are
//! quorum queues, so no message is lost with a node; `redispatch_after` is
//! left at its 5 minutes, so a lost message would show as a job that never
//! finishes within this test.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sextant_e2e::TestSystem;
use sextant_e2e::cluster::RabbitCluster;
use sextant_e2e::local;
use sextant_proto::jobs::v1::{GetJobRequest, JobStatus, SubmitJobRequest};
use tokio::sync::Mutex;

use crate::system;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_flow_on_while_one_broker_node_is_killed_and_another_cut_off() {
    if !local::available() {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "needs local server packages"
        );
        eprintln!("SKIPPED: needs root, iproute2 and a local RabbitMQ server package");
        return;
    }
    let cluster = RabbitCluster::start(3)
        .await
        .expect("starting a three-node RabbitMQ cluster");
    let system = system!(
        TestSystem::builder()
            .amqp(cluster.urls_env())
            .database(
                std::env::var(sextant_e2e::infra::DATABASE_URL_ENV)
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
            )
            .jobs_env("SEXTANT_JOBS__AMQP__RECONNECT_MAX_DELAY", "1s")
    );
    // A second replica: two connections, most likely to different nodes.
    let _second = system.spawn_jobs("jobs-2", &[]);

    // Submits a no-op job every 20 ms, each with a key of its own and tried
    // again with it until answered, so `accepted` is exactly what was taken.
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let submitter = {
        let (accepted, stop, mut client) = (accepted.clone(), stop.clone(), system.jobs_client("acme").await);
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let request = SubmitJobRequest {
                    kind: "noop".into(),
                    payload_json: "{}".into(),
                    idempotency_key: format!("cluster-{n}"),
                    ..Default::default()
                };
                let id = loop {
                    match client.submit_job(request.clone()).await {
                        Ok(response) => break response.into_inner().job.expect("a job").id,
                        Err(status) => {
                            eprintln!("submit {n}: {status}; again");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                };
                accepted.lock().await.push(id);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let count = || async { accepted.lock().await.len() };
    tokio::time::sleep(Duration::from_secs(2)).await;

    // One node dies without a word, and comes back.
    let before = count().await;
    cluster.kill(1).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    cluster.start_node(1).await.unwrap();
    cluster.wait_running(3, Duration::from_secs(60)).await.unwrap();
    assert!(count().await > before, "submits went on while a node was down");

    // Another is cut off: it pauses (pause_minority), and resumes once healed.
    cluster.cut(2).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while cluster.is_running(2).await {
        assert!(tokio::time::Instant::now() < deadline, "the cut-off node never paused");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.heal(2).await.unwrap();
    cluster.wait_running(3, Duration::from_secs(90)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    submitter.await.unwrap();

    // Every accepted job ran, once: attempt 1, no retry.
    let ids = accepted.lock().await.clone();
    assert!(ids.len() > 200, "only {} jobs submitted", ids.len());
    let mut client = system.jobs_client("acme").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for id in &ids {
        loop {
            let job = client
                .get_job(GetJobRequest { id: id.clone() })
                .await
                .unwrap()
                .into_inner();
            if job.status() == JobStatus::Succeeded {
                assert_eq!(job.attempt, 1, "job {id} ran more than once: {job:#?}");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {id} never finished: {job:#?}\n{}",
                system.all_logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
