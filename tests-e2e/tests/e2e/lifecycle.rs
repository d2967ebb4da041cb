//! Start-up and shutdown of the real binaries: the dev token command, and
//! SIGTERM draining the backends within their grace period.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sextant_e2e::process::binary;

use crate::system;

#[tokio::test]
async fn the_dev_token_command_signs_tokens_the_gateway_accepts() {
    let system = system!();
    let output = Command::new(binary("sextant-gateway"))
        .env_clear()
        .env("SEXTANT_GATEWAY__AUTH__JWT_SECRET", &system.jwt_secret)
        .args([
            "token",
            "--tenant",
            "globex",
            "--user",
            "hank",
            "--scope",
            "jobs:write",
            "--ttl",
            "5m",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();

    let response = system
        .http
        .get(system.url("/api/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let me: Value = response.json().await.unwrap();
    assert_eq!(me["tenant"], "globex");
    assert_eq!(me["user"], "hank");
    assert_eq!(me["scopes"], serde_json::json!(["jobs:write"]));
}

#[tokio::test]
async fn the_token_command_refuses_ids_that_cannot_be_carried() {
    let output = Command::new(binary("sextant-gateway"))
        .env_clear()
        .args(["token", "--tenant", "has space", "--user", "alice"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("tenant"));
}

#[tokio::test]
async fn sigterm_stops_each_backend_cleanly_and_readiness_names_it() {
    let mut system = system!();
    system.jobs.terminate();
    let status = system
        .jobs
        .wait_exit(Duration::from_secs(10))
        .expect("jobs exits within its grace period");
    assert!(status.success(), "{status}");
    assert!(system.jobs.logs().contains("\"stopped\""), "{}", system.jobs.logs());

    let body = system
        .wait_until(Duration::from_secs(10), |status, _| status == 503)
        .await
        .expect("readiness turns 503");
    assert_eq!(body["backends"]["jobs"]["status"], "unreachable", "{body}");
    assert!(
        body["down"].as_array().unwrap().contains(&Value::from("jobs")),
        "{body}"
    );

    for backend in [&mut system.analytics, &mut system.exports] {
        backend.terminate();
        let status = backend.wait_exit(Duration::from_secs(10)).expect("backend exits");
        assert!(status.success(), "{}: {status}", backend.name);
    }
}
