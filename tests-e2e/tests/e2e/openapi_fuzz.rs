//! The OpenAPI document against the running gateway: schemathesis generates
//! requests from the served document, every check on, with a fixed seed, and
//! any finding fails the test. A route added to the document is covered
//! without a change here. The WebSocket route is left to the protocol tests
//! (`websocket.rs`, `jobs_live.rs`): schemathesis speaks only HTTP.

use std::path::PathBuf;
use std::process::Stdio;

use crate::system;

/// The schemathesis CLI: `SEXTANT_SCHEMATHESIS`, set by `make test`.
fn schemathesis() -> Option<PathBuf> {
    match std::env::var_os("SEXTANT_SCHEMATHESIS") {
        Some(path) => Some(PathBuf::from(path)),
        None => {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "SEXTANT_SCHEMATHESIS is not set: run the tests with `make test`"
            );
            eprintln!("SKIPPED: SEXTANT_SCHEMATHESIS is not set (make test sets it)");
            None
        }
    }
}

#[tokio::test]
async fn the_served_openapi_document_holds_under_property_based_fuzzing() {
    let Some(cli) = schemathesis() else {
        return;
    };
    let system = system!();
    let token = system.token("acme", "contract");
    let scripts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts");
    // Schemathesis keeps failures in ./.schemathesis and replays them first:
    // a fresh directory keeps each run to the seed alone.
    let workdir = tempfile::tempdir().expect("a temporary directory");
    let output = tokio::process::Command::new(cli)
        .current_dir(workdir.path())
        .arg("--config-file")
        .arg(scripts.join("schemathesis.toml"))
        .arg("run")
        .arg(system.url("/api/v1/openapi.json"))
        .args(["--url", &system.url("")])
        .args(["--checks", "all"])
        .args(["--seed", "20261122"])
        .args(["--max-examples", "30"])
        // One worker: with two, the order of generation varied between runs
        // and schemathesis's coverage phase sometimes crashed (an internal
        // KeyError); with one, the seed means one sequence of requests.
        .args(["--workers", "1"])
        .args(["--exclude-path", "/api/v1/ws"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--request-timeout", "20"])
        .env("SCHEMATHESIS_HOOKS", "contract_hooks")
        .env("PYTHONPATH", &scripts)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("running schemathesis");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis found problems ({}):\n{stdout}\n{stderr}",
        output.status
    );
}
