//! Bad configuration stops a binary before it starts, with exit status 64 and
//! one line per problem naming the key.

use std::process::Command;

use sextant_e2e::process::binary;

fn run(binary_name: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let output = Command::new(binary(binary_name))
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (output.status.code(), String::from_utf8(output.stderr).unwrap())
}

#[test]
fn a_non_numeric_gateway_port_exits_64_naming_the_key() {
    let (code, stderr) = run("sextant-gateway", &[("SEXTANT_GATEWAY__HTTP__PORT", "abc")]);
    assert_eq!(code, Some(64), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("gateway.http.port"), "{stderr}");
    assert!(lines[0].contains("SEXTANT_GATEWAY__HTTP__PORT"), "{stderr}");
    assert!(lines[0].contains("expected u16"), "{stderr}");
}

#[test]
fn every_bad_value_gets_its_own_line() {
    let (code, stderr) = run(
        "sextant-jobs",
        &[
            ("SEXTANT_JOBS__GRPC__PORT", "seventy"),
            ("SEXTANT_JOBS__DATABASE__URL", "mysql://nope"),
            ("SEXTANT_JOBS__AMQP__URL", "http://not-amqp"),
        ],
    );
    assert_eq!(code, Some(64), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    for key in ["jobs.grpc.port", "jobs.database.url", "jobs.amqp.url"] {
        assert!(lines.iter().any(|l| l.contains(key)), "{key} missing from:\n{stderr}");
    }
}

#[test]
fn a_missing_config_file_exits_64() {
    let (code, stderr) = run("sextant-analytics", &[("SEXTANT_CONFIG", "/nonexistent/sextant.toml")]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("cannot read config file"), "{stderr}");
}

#[test]
fn a_broken_timeout_hierarchy_exits_64_naming_both_keys() {
    let (code, stderr) = run(
        "sextant-gateway",
        &[
            ("SEXTANT_GATEWAY__HTTP__REQUEST_TIMEOUT", "5s"),
            ("SEXTANT_GATEWAY__BACKENDS__REQUEST_TIMEOUT", "10s"),
        ],
    );
    assert_eq!(code, Some(64), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with(
            "config error: gateway.backends.request_timeout: must be shorter than gateway.http.request_timeout"
        ),
        "{stderr}"
    );
}
