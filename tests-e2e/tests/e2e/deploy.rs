//! The Kubernetes manifests (`deploy/kubernetes`), checked offline by
//! `scripts/check-manifests.py`: rendered with kustomize, validated against
//! the Kubernetes OpenAPI schemas, every config key settable, each service
//! with its probes, limits, Service, disruption budget and autoscaler. The
//! check itself is shown to fail on a copy broken two ways.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tools() -> Option<[String; 3]> {
    let vars = ["SEXTANT_K8S_PYTHON", "SEXTANT_KUSTOMIZE", "SEXTANT_KUBERNETES_VALIDATE"];
    match vars.map(std::env::var) {
        [Ok(python), Ok(kustomize), Ok(validate)] => Some([python, kustomize, validate]),
        _ => {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "set {vars:?} (scripts/test.sh does)"
            );
            eprintln!("SKIPPED: {vars:?} not set; run through scripts/test.sh");
            None
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn check(manifests: &Path) -> Output {
    let [python, kustomize, validate] = tools().expect("checked by the caller");
    Command::new(python)
        .arg(root().join("scripts/check-manifests.py"))
        .args([kustomize, validate])
        .env("SEXTANT_MANIFESTS", manifests)
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn the_kubernetes_manifests_validate_and_every_config_key_is_settable() {
    if tools().is_none() {
        return;
    }
    let output = check(&root().join("deploy/kubernetes"));
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("2 kustomizations"), "{}", text(&output));
}

#[test]
fn the_check_fails_on_an_unknown_field_and_on_a_key_the_manifests_cannot_set() {
    if tools().is_none() {
        return;
    }
    let copy = tempfile::tempdir().unwrap();
    let status = Command::new("cp")
        .arg("-r")
        .arg(root().join("deploy/kubernetes/."))
        .arg(copy.path())
        .status()
        .unwrap();
    assert!(status.success());
    let toml = copy.path().join("base/sextant.toml");
    let config = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, config.replace("lease = \"10s\"\n", "")).unwrap();
    let jobs = copy.path().join("base/jobs.yaml");
    let manifest = std::fs::read_to_string(&jobs).unwrap();
    std::fs::write(
        &jobs,
        manifest.replacen("  revisionHistoryLimit: 5\n", "  revisionHistoryLimits: 5\n", 1),
    )
    .unwrap();

    let output = check(copy.path());
    let report = text(&output);
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert!(
        report.contains("base: sextant-jobs: config key jobs.worker.lease is not settable from the manifests"),
        "{report}"
    );
    assert!(report.contains("revisionHistoryLimits"), "{report}");
    // Nothing else: the other services and keys are as they were.
    assert!(!report.contains("sextant-gateway"), "{report}");
}
