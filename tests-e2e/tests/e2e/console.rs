//! The web console in a real browser: `tests-e2e/console/journeys.py`
//! (Playwright for Python driving Debian's chromium) signs in from the
//! printed link, explores a metric and reads on the page the values the API
//! answers, sees a live update arrive, submits and cancels a job, builds a
//! dashboard and finds it intact after a reload, creates an alert rule (a
//! bad one refused next to its field) and watches it fire, shows hostile
//! strings as text, and sends an expired token back to sign-in.
//! Screenshots go to `SEXTANT_CONSOLE_SHOTS` (a temporary directory unless
//! set). Also here: the console's files and headers as served.

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::json;
use sextant_e2e::tokens;

use crate::system;

/// The Python with Playwright: `SEXTANT_PLAYWRIGHT_PYTHON`, set by `make test`.
fn playwright() -> Option<PathBuf> {
    match std::env::var_os("SEXTANT_PLAYWRIGHT_PYTHON") {
        Some(path) => Some(PathBuf::from(path)),
        None => {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "SEXTANT_PLAYWRIGHT_PYTHON is not set: run the tests with `make test`"
            );
            eprintln!("SKIPPED: SEXTANT_PLAYWRIGHT_PYTHON is not set (make test sets it)");
            None
        }
    }
}

#[tokio::test]
async fn a_person_signs_in_explores_a_metric_live_and_runs_and_cancels_a_job_in_a_browser() {
    let Some(python) = playwright() else {
        return;
    };
    // Alert rules evaluated every second, so a rule fires while the page looks.
    let system = system!(crate::alerts::alerting());
    let token = system.token("acme", "alice");
    let mut claims = tokens::claims("acme", "alice");
    claims["exp"] = json!(tokens::now() - 3600);
    claims["iat"] = json!(tokens::now() - 7200);
    claims["nbf"] = json!(tokens::now() - 7200);
    let expired = tokens::sign(&system.jwt_secret, &claims);
    let temp = tempfile::tempdir().expect("a temporary directory");
    let shots = std::env::var_os("SEXTANT_CONSOLE_SHOTS").map_or_else(|| temp.path().to_owned(), PathBuf::from);
    std::fs::create_dir_all(&shots).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("console/journeys.py");
    let output = tokio::process::Command::new(python)
        .arg(script)
        .arg(system.url(""))
        .arg(&token)
        .arg(&expired)
        .arg(&shots)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("running the browser journeys");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser journeys failed:\n{stdout}\n{stderr}"
    );
    eprintln!("{stdout}");
}

#[tokio::test]
async fn the_console_is_served_with_a_strict_policy_and_revalidated_by_etag() {
    let system = system!();
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in ["/", "/console"] {
        let response = redirect.get(system.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 308, "{path}");
        assert_eq!(response.headers()["location"], "/console/", "{path}");
    }
    let index = system.http.get(system.url("/console/")).send().await.unwrap();
    assert_eq!(index.status(), 200);
    let headers = index.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let html = index.text().await.unwrap();
    assert!(
        !html.contains("<script>") && html.contains("src=\"js/app.js\""),
        "no inline script: {html}"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing from another origin"
    );
    // Revalidation: the same ETag is 304 without a body, weakly compared too.
    let etag = headers["etag"].to_str().unwrap().to_owned();
    for sent in [etag.clone(), format!("W/{etag}"), format!("\"other\", {etag}")] {
        let again = system
            .http
            .get(system.url("/console/"))
            .header("if-none-match", &sent)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{sent}");
        assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
        assert!(again.bytes().await.unwrap().is_empty());
    }
    let script = system.http.get(system.url("/console/js/app.js")).send().await.unwrap();
    assert_eq!(script.status(), 200);
    assert_eq!(script.headers()["content-type"], "text/javascript; charset=utf-8");
    let missing = system.http.get(system.url("/console/nope.js")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn the_console_shows_a_dropped_socket_and_a_stopped_backend_and_recovers_by_itself() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let Some(python) = playwright() else {
        return;
    };
    let mut system = system!();
    let token = system.token("acme", "alice");
    let temp = tempfile::tempdir().expect("a temporary directory");
    let shots = std::env::var_os("SEXTANT_CONSOLE_SHOTS").map_or_else(|| temp.path().to_owned(), PathBuf::from);
    std::fs::create_dir_all(&shots).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("console/faults.py");
    let mut child = tokio::process::Command::new(python)
        .arg(script)
        .arg(system.url(""))
        .arg(&token)
        .arg(&shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("running the browser faults");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port = system.jobs.addr.port().to_string();
    let mut said = Vec::new();
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(180), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            said.push(line.clone());
            match line.as_str() {
                "STOP jobs" => {
                    system.jobs.signal(libc::SIGKILL);
                    system.jobs.wait_exit(std::time::Duration::from_secs(10));
                }
                "START jobs" => {
                    system.jobs = system.spawn_jobs("jobs-again", &[("SEXTANT_JOBS__GRPC__PORT", &port)]);
                }
                _ => continue,
            }
            stdin.write_all(b"done\n").await.unwrap();
        }
    })
    .await;
    let output = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        outcome.is_ok(),
        "the browser faults took over 3 minutes: {said:?}\n{stderr}"
    );
    assert!(
        output.status.success() && said.last().map(String::as_str) == Some("ok"),
        "the browser faults failed: {said:?}\n{stderr}"
    );
}
