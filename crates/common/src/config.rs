//! Layered configuration: built-in defaults < optional TOML file < `SEXTANT_*`
//! environment variables (nested with `__`: `SEXTANT_GATEWAY__HTTP__PORT` is
//! `gateway.http.port`).
//!
//! Loading never stops at the first bad value: every problem is collected and
//! reported on its own line naming the key, and the binary exits with
//! [`EXIT_CONFIG`] before any runtime starts. The source is injected
//! ([`ConfigSource`]) so tests never touch the process environment.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Value};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;

pub const ENV_PREFIX: &str = "SEXTANT_";
/// Names the optional config file.
pub const CONFIG_FILE_ENV: &str = "SEXTANT_CONFIG";
/// `EX_USAGE` from sysexits.h: the configuration is wrong, retrying will not help.
pub const EXIT_CONFIG: i32 = 64;

/// Where configuration comes from: an optional file and a set of environment pairs.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    pub file: Option<PathBuf>,
    pub env: Vec<(String, String)>,
}

impl ConfigSource {
    /// The process environment, with the file named by `--config` or `SEXTANT_CONFIG`.
    pub fn from_process(file: Option<PathBuf>) -> Self {
        let env: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        let file = file.or_else(|| {
            env.iter()
                .find(|(k, _)| k == CONFIG_FILE_ENV)
                .map(|(_, v)| PathBuf::from(v))
        });
        Self { file, env }
    }

    pub fn from_env<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Self {
            file: None,
            env: pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
        }
    }
}

/// One bad configuration value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub key: String,
    pub message: String,
    /// Where the value came from, e.g. `SEXTANT_GATEWAY__HTTP__PORT`.
    pub origin: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config error: {}: {}", self.key, self.message)?;
        if let Some(origin) = &self.origin {
            write!(f, " (set by {origin})")?;
        }
        Ok(())
    }
}

/// Every problem found while loading, one per line when displayed.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.problems.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl ConfigError {
    /// Prints every problem to stderr and exits with [`EXIT_CONFIG`].
    pub fn exit(&self) -> ! {
        eprintln!("{self}");
        std::process::exit(EXIT_CONFIG)
    }
}

/// Collects semantic problems that deserialisation cannot see.
#[derive(Debug, Default)]
pub struct Problems(Vec<Problem>);

impl Problems {
    pub fn add(&mut self, key: &str, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.to_owned(),
            message: message.into(),
            origin: None,
        });
    }

    pub fn check(&mut self, ok: bool, key: &str, message: impl Into<String>) {
        if !ok {
            self.add(key, message);
        }
    }
}

/// Checks that deserialisation cannot express (ranges, relations between keys).
pub trait Validate {
    fn validate(&self, problems: &mut Problems);
}

/// Loads `T` from `defaults` (TOML text), then the file, then the environment.
pub fn load<T: DeserializeOwned + Validate>(defaults: &str, source: &ConfigSource) -> Result<T, ConfigError> {
    let mut problems = Vec::new();
    let defaults = parse_toml(defaults, "built-in defaults").expect("built-in defaults are valid TOML");

    let file = match &source.file {
        None => Value::from(Dict::new()),
        Some(path) => read_file(path).unwrap_or_else(|p| {
            problems.push(p);
            Value::from(Dict::new())
        }),
    };
    let env = env_value(&source.env);

    let mut merged: Value = Figment::from(Serialized::defaults(defaults.clone()))
        .merge(Serialized::defaults(file.clone()))
        .merge(Serialized::defaults(env.clone()))
        .extract()
        .expect("merging plain values cannot fail");

    // serde stops at the first error; reset each bad key to its default (or drop
    // it) and try again, so one run reports every bad key.
    let mut seen = BTreeSet::new();
    for _ in 0..64 {
        match merged.deserialize::<T>() {
            Ok(config) => {
                // Type errors were reset to defaults above, so the semantic
                // checks still run and their problems join the list.
                let mut semantic = Problems::default();
                config.validate(&mut semantic);
                problems.extend(semantic.0.into_iter().map(|p| Problem {
                    origin: origin_of(&p.key, &env, &file, source.file.as_deref()),
                    ..p
                }));
                return if problems.is_empty() {
                    Ok(config)
                } else {
                    Err(ConfigError { problems })
                };
            }
            Err(errors) => {
                for error in errors {
                    let path: Vec<String> = error.path.clone();
                    let key = path.join(".");
                    if !seen.insert(key.clone()) {
                        return Err(ConfigError { problems });
                    }
                    problems.push(Problem {
                        origin: origin_of(&key, &env, &file, source.file.as_deref()),
                        message: error.kind.to_string(),
                        key: if key.is_empty() { "(root)".into() } else { key },
                    });
                    if path.is_empty() || !replace_at(&mut merged, &path, lookup(&defaults, &path).cloned()) {
                        return Err(ConfigError { problems });
                    }
                }
            }
        }
    }
    Err(ConfigError { problems })
}

fn parse_toml(text: &str, name: &str) -> Result<Value, Problem> {
    Figment::from(Toml::string(text))
        .extract::<Value>()
        .map_err(|e| Problem {
            key: "(file)".into(),
            message: format!("{name}: {}", e.kind),
            origin: None,
        })
}

fn read_file(path: &Path) -> Result<Value, Problem> {
    let text = std::fs::read_to_string(path).map_err(|e| Problem {
        key: CONFIG_FILE_ENV.into(),
        message: format!("cannot read config file {}: {e}", path.display()),
        origin: None,
    })?;
    parse_toml(&text, &path.display().to_string())
}

/// `SEXTANT_A__B_C=v` becomes `{a: {b_c: v}}`; values are parsed like TOML
/// scalars (`8080` is a number, `true` a bool, anything else a string).
fn env_value(env: &[(String, String)]) -> Value {
    let mut root = Value::from(Dict::new());
    for (key, raw) in env {
        let Some(rest) = key.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if key == CONFIG_FILE_ENV || rest.is_empty() {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
        let value: Value = raw.parse().unwrap_or_else(|never| match never {});
        replace_at(&mut root, &path, Some(value));
    }
    root
}

fn lookup<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, k| v.as_dict()?.get(k))
}

/// Sets (or with `None` removes) the value at `path`, creating dictionaries on the way.
fn replace_at(root: &mut Value, path: &[String], new: Option<Value>) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut cur = root;
    for key in parents {
        let Value::Dict(_, dict) = cur else {
            return false;
        };
        cur = dict.entry(key.clone()).or_insert_with(|| Value::from(Dict::new()));
    }
    let Value::Dict(_, dict) = cur else {
        return false;
    };
    match new {
        Some(v) => {
            dict.insert(last.clone(), v);
        }
        None => {
            dict.remove(last);
        }
    }
    true
}

fn origin_of(key: &str, env: &Value, file: &Value, file_path: Option<&Path>) -> Option<String> {
    let path: Vec<String> = key.split('.').map(str::to_owned).collect();
    if lookup(env, &path).is_some() {
        return Some(format!("{ENV_PREFIX}{}", path.join("__").to_uppercase()));
    }
    if lookup(file, &path).is_some() {
        return file_path.map(|p| p.display().to_string());
    }
    None
}

// ---------- sections shared by several binaries ----------

/// Where a server listens. Port 0 picks a free port (tests use it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    pub host: String,
    pub port: u16,
}

impl ListenConfig {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The secret the backends require in gRPC metadata.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternalConfig {
    pub secret: SecretString,
}

impl Validate for InternalConfig {
    fn validate(&self, problems: &mut Problems) {
        problems.check(
            self.secret.expose_secret().len() >= 16,
            "internal.secret",
            "must be at least 16 characters",
        );
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `tracing` filter for logs, e.g. `info,sextant=debug`.
    pub log_filter: String,
    /// `json` (default) or `pretty`.
    pub log_format: LogFormat,
    /// OTLP/gRPC endpoint; traces are exported only when set.
    pub otlp_endpoint: Option<String>,
    pub trace_filter: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

impl Validate for TelemetryConfig {
    fn validate(&self, problems: &mut Problems) {
        if let Some(endpoint) = &self.otlp_endpoint {
            problems.check(
                url::Url::parse(endpoint).is_ok(),
                "telemetry.otlp_endpoint",
                "must be a URL such as http://127.0.0.1:4317",
            );
        }
        problems.check(
            tracing_subscriber::EnvFilter::try_new(&self.log_filter).is_ok(),
            "telemetry.log_filter",
            "is not a valid tracing filter",
        );
    }
}

/// Telemetry and internal auth, shared by all four binaries' defaults.
pub const COMMON_DEFAULTS: &str = r#"
[telemetry]
log_filter = "info"
log_format = "json"
trace_filter = "info"

[internal]
# Development default; every deployment sets SEXTANT_INTERNAL__SECRET.
secret = "sextant-dev-internal-secret"
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug, Deserialize)]
    struct Sample {
        http: ListenConfig,
        #[serde(with = "humantime_serde")]
        grace: Duration,
        workers: u32,
    }

    impl Validate for Sample {
        fn validate(&self, problems: &mut Problems) {
            problems.check(self.workers > 0, "workers", "must be at least 1");
        }
    }

    const DEFAULTS: &str = "grace = \"5s\"\nworkers = 2\n[http]\nhost = \"127.0.0.1\"\nport = 8080\n";

    #[test]
    fn environment_overrides_defaults_with_nested_keys() {
        let source = ConfigSource::from_env([
            ("SEXTANT_HTTP__PORT", "9090"),
            ("SEXTANT_GRACE", "250ms"),
            ("OTHER", "x"),
        ]);
        let cfg: Sample = load(DEFAULTS, &source).unwrap();
        assert_eq!(cfg.http.port, 9090);
        assert_eq!(cfg.http.host, "127.0.0.1");
        assert_eq!(cfg.grace, Duration::from_millis(250));
        assert_eq!(cfg.workers, 2);
    }

    #[test]
    fn every_bad_value_is_reported_on_its_own_line_naming_the_key() {
        let source = ConfigSource::from_env([
            ("SEXTANT_HTTP__PORT", "abc"),
            ("SEXTANT_WORKERS", "0"),
            ("SEXTANT_GRACE", "soon"),
        ]);
        let err = load::<Sample>(DEFAULTS, &source).unwrap_err();
        let text = err.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines.iter().any(|l| l.contains("grace") && l.contains("SEXTANT_GRACE")),
            "{text}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("http.port") && l.contains("SEXTANT_HTTP__PORT")),
            "{text}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("workers") && l.contains("SEXTANT_WORKERS")),
            "{text}"
        );
    }

    #[test]
    fn semantic_problems_name_the_key_and_origin() {
        let source = ConfigSource::from_env([("SEXTANT_WORKERS", "0")]);
        let err = load::<Sample>(DEFAULTS, &source).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config error: workers: must be at least 1 (set by SEXTANT_WORKERS)"
        );
    }

    #[test]
    fn unknown_keys_in_a_strict_section_are_refused() {
        let source = ConfigSource::from_env([("SEXTANT_HTTP__PROT", "1")]);
        let err = load::<Sample>(DEFAULTS, &source).unwrap_err();
        assert!(err.to_string().contains("prot"), "{err}");
    }

    #[test]
    fn file_sits_between_defaults_and_environment() {
        let dir = std::env::temp_dir().join(format!("sextant-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, "workers = 7\n[http]\nport = 7000\n").unwrap();
        let source = ConfigSource {
            file: Some(path.clone()),
            env: vec![("SEXTANT_HTTP__PORT".into(), "7001".into())],
        };
        let cfg: Sample = load(DEFAULTS, &source).unwrap();
        assert_eq!((cfg.workers, cfg.http.port), (7, 7001));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_missing_file_is_a_problem() {
        let source = ConfigSource {
            file: Some("/nonexistent/sextant.toml".into()),
            env: vec![],
        };
        let err = load::<Sample>(DEFAULTS, &source).unwrap_err();
        assert!(err.to_string().contains("cannot read config file"), "{err}");
    }
}
