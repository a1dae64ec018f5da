//! Configuration from the environment, in one place, failing fast with the variable's name and
//! the expected form.
//!
//! Every variable any binary reads is declared once in [`vars`] (name, default, expected form,
//! who reads it). The README's config table, the deployment manifests' test and the parsing code
//! all use that list, so they cannot drift apart.
//!
//! Secrets (`BUYONCE_AMQP_URL`, `BUYONCE_DATABASE_URL`, `BUYONCE_API_TOKENS`,
//! `AZURE_CLIENT_SECRET`) can also come from a file named by `<VAR>_FILE`, the Docker/Kubernetes
//! secrets convention; setting both forms is an error.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::duration::parse_duration;

/// Where configuration values come from: the process environment, or a map in tests (tests run
/// in parallel, so they must not mutate the process environment).
pub trait EnvSource {
    fn get(&self, key: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

impl EnvSource for BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        BTreeMap::get(self, key).cloned()
    }
}

impl EnvSource for [(&str, &str)] {
    fn get(&self, key: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| (*v).to_owned())
    }
}

impl<const N: usize> EnvSource for [(&str, &str); N] {
    fn get(&self, key: &str) -> Option<String> {
        EnvSource::get(self.as_slice(), key)
    }
}

/// A configuration problem, always naming the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}={shown} is invalid: {problem}; expected {expected}")]
    Invalid {
        var: String,
        /// The value as given, or `(redacted)` for secrets.
        shown: String,
        problem: String,
        expected: String,
    },
    #[error("{var} is required: {expected}")]
    Missing { var: String, expected: String },
    #[error("both {a} and {b} are set; set only one of them")]
    Conflict { a: String, b: String },
    #[error("{var}: cannot read {path}: {problem}")]
    File {
        var: String,
        path: String,
        problem: String,
    },
}

/// A string that must not be printed: `Debug`/`Display` show `(redacted)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself, for the one place that needs it (a connect call, a comparison).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(redacted)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(redacted)")
    }
}

/// One environment variable: its name, default and documentation.
#[derive(Debug, Clone, Copy)]
pub struct VarSpec {
    pub name: &'static str,
    /// Default as it would be written in the environment; `None` = unset by default.
    pub default: Option<&'static str>,
    pub expected: &'static str,
    pub doc: &'static str,
    /// Binaries that read it.
    pub read_by: &'static [&'static str],
    /// Holds a secret (accepts `<NAME>_FILE`, never logged).
    pub secret: bool,
}

/// Every environment variable buyonce reads.
pub mod vars {
    use super::VarSpec;

    const ALL_BINS: &[&str] = &["buyonce-producer", "buyonce-worker", "buyonce-reaper"];
    const WORKER: &[&str] = &["buyonce-worker"];
    const REAPER: &[&str] = &["buyonce-reaper"];
    const PRODUCER: &[&str] = &["buyonce-producer"];
    const WORKER_REAPER: &[&str] = &["buyonce-worker", "buyonce-reaper"];

    pub const AMQP_URL: VarSpec = VarSpec {
        name: "BUYONCE_AMQP_URL",
        default: Some("amqp://guest:guest@127.0.0.1:5672/%2f"),
        expected: "an amqp:// or amqps:// URL",
        doc: "RabbitMQ connection URL.",
        read_by: ALL_BINS,
        secret: true,
    };
    pub const AMQP_CA_FILE: VarSpec = VarSpec {
        name: "BUYONCE_AMQP_CA_FILE",
        default: None,
        expected: "a path to a PEM file of CA certificates",
        doc: "Private CA for amqps:// (system roots are used otherwise).",
        read_by: ALL_BINS,
        secret: false,
    };
    pub const AMQP_CLIENT_CERT_FILE: VarSpec = VarSpec {
        name: "BUYONCE_AMQP_CLIENT_CERT_FILE",
        default: None,
        expected: "a path to a PEM certificate chain",
        doc: "Client certificate for amqps:// mutual TLS (with BUYONCE_AMQP_CLIENT_KEY_FILE).",
        read_by: ALL_BINS,
        secret: false,
    };
    pub const AMQP_CLIENT_KEY_FILE: VarSpec = VarSpec {
        name: "BUYONCE_AMQP_CLIENT_KEY_FILE",
        default: None,
        expected: "a path to a PEM private key",
        doc: "Client key for amqps:// mutual TLS.",
        read_by: ALL_BINS,
        secret: false,
    };
    pub const DATABASE_URL: VarSpec = VarSpec {
        name: "BUYONCE_DATABASE_URL",
        default: Some("postgres://postgres@127.0.0.1:5432/buyonce"),
        expected: "a postgres:// URL (sslmode=disable|prefer|require|verify-ca|verify-full)",
        doc: "Postgres URL; the database is created if missing.",
        read_by: ALL_BINS,
        secret: true,
    };
    pub const DATABASE_CA_FILE: VarSpec = VarSpec {
        name: "BUYONCE_DATABASE_CA_FILE",
        default: None,
        expected: "a path to a PEM file of CA certificates",
        doc: "Private CA for Postgres TLS (system roots are used otherwise).",
        read_by: ALL_BINS,
        secret: false,
    };
    pub const DATABASE_POOL_SIZE: VarSpec = VarSpec {
        name: "BUYONCE_DATABASE_POOL_SIZE",
        default: Some("16"),
        expected: "an integer from 1 to 1000",
        doc: "Postgres connections per process (a worker or the reaper needs at least 2).",
        read_by: ALL_BINS,
        secret: false,
    };
    pub const QUEUE_PREFIX: VarSpec = VarSpec {
        name: "BUYONCE_QUEUE_PREFIX",
        default: Some("buyonce"),
        expected: "1-64 characters of a-z 0-9 . _ -",
        doc: "Prefix of every exchange and queue name.",
        read_by: ALL_BINS,
        secret: false,
    };
    pub const DELIVERY_LIMIT: VarSpec = VarSpec {
        name: "BUYONCE_DELIVERY_LIMIT",
        default: Some("20"),
        expected: "an integer from 1 to 1000",
        doc:
            "Quorum queue x-delivery-limit: redeliveries (crashes) before the broker dead-letters.",
        read_by: ALL_BINS,
        secret: false,
    };
    pub const LOG_FORMAT: VarSpec = VarSpec {
        name: "BUYONCE_LOG_FORMAT",
        default: Some("pretty"),
        expected: "pretty or json",
        doc: "Log line format.",
        read_by: ALL_BINS,
        secret: false,
    };
    pub const RUST_LOG: VarSpec = VarSpec {
        name: "RUST_LOG",
        default: Some("info"),
        expected: "a tracing filter, e.g. info,buyonce_worker=debug",
        doc: "Log level filter.",
        read_by: ALL_BINS,
        secret: false,
    };
    pub const API_TOKENS: VarSpec = VarSpec {
        name: "BUYONCE_API_TOKENS",
        default: None,
        expected: "comma-separated bearer tokens, each at least 32 random characters (e.g. `openssl rand -hex 32`)",
        doc: "Bearer tokens accepted by `buyonce-producer serve`; without any, it binds only to loopback.",
        read_by: PRODUCER,
        secret: true,
    };
    pub const LISTEN: VarSpec = VarSpec {
        name: "BUYONCE_LISTEN",
        default: None,
        expected: "host:port (worker 127.0.0.1:9101, reaper 127.0.0.1:9102, producer 127.0.0.1:8080)",
        doc: "HTTP listen address (metrics/health; the API for the producer). Port 0 picks a free port.",
        read_by: ALL_BINS,
        secret: false,
    };
    pub const RELAY_INTERVAL: VarSpec = VarSpec {
        name: "BUYONCE_RELAY_INTERVAL",
        default: Some("30s"),
        expected: "a positive Go duration, e.g. 30s",
        doc: "How often `serve` republishes committed-but-unpublished items.",
        read_by: PRODUCER,
        secret: false,
    };
    pub const CONCURRENCY: VarSpec = VarSpec {
        name: "BUYONCE_CONCURRENCY",
        default: Some("64"),
        expected: "an integer from 1 to 10000",
        doc: "In-flight purchases per worker (prefetch is set to match).",
        read_by: WORKER,
        secret: false,
    };
    pub const PER_ACCOUNT_CONCURRENCY: VarSpec = VarSpec {
        name: "BUYONCE_PER_ACCOUNT_CONCURRENCY",
        default: Some("4"),
        expected: "an integer from 1 to 10000",
        doc: "In-flight purchases per cloud account per worker, so one throttled account cannot starve the rest.",
        read_by: WORKER,
        secret: false,
    };
    pub const MAX_ATTEMPTS: VarSpec = VarSpec {
        name: "BUYONCE_MAX_ATTEMPTS",
        default: Some("8"),
        expected: "an integer from 1 to 100",
        doc: "Purchase attempts (transient failures) before an item is dead.",
        read_by: WORKER_REAPER,
        secret: false,
    };
    pub const RETRY_DELAYS: VarSpec = VarSpec {
        name: "BUYONCE_RETRY_DELAYS",
        default: Some("1s,5s,30s,2m,10m"),
        expected: "comma-separated Go durations, increasing, e.g. 1s,5s,30s",
        doc: "Backoff wait queues: attempt n waits about the n-th delay (with jitter), the last repeats.",
        read_by: ALL_BINS,
        secret: false,
    };
    pub const HEARTBEAT_INTERVAL: VarSpec = VarSpec {
        name: "BUYONCE_HEARTBEAT_INTERVAL",
        default: Some("10s"),
        expected: "a positive Go duration",
        doc: "How often a worker refreshes heartbeat_at while a purchase runs.",
        read_by: WORKER,
        secret: false,
    };
    pub const AWS_SETTLE_WINDOW: VarSpec = VarSpec {
        name: "BUYONCE_AWS_SETTLE_WINDOW",
        default: Some("5m"),
        expected: "a positive Go duration",
        doc: "After an AWS purchase call whose outcome is unknown, how long a retry that finds nothing waits before it may buy again (AWS describe calls may not show a new reservation at once).",
        read_by: WORKER,
        secret: false,
    };
    pub const AZURE_SETTLE_WINDOW: VarSpec = VarSpec {
        name: "BUYONCE_AZURE_SETTLE_WINDOW",
        default: Some("30m"),
        expected: "a positive Go duration",
        doc: "After an Azure purchase whose outcome is unknown, how long the order must stay absent from GET and from the order list before a new quote is bought.",
        read_by: WORKER,
        secret: false,
    };
    pub const SHUTDOWN_GRACE: VarSpec = VarSpec {
        name: "BUYONCE_SHUTDOWN_GRACE",
        default: Some("25s"),
        expected: "a Go duration",
        doc: "On SIGTERM, how long in-flight purchases may take before the worker exits.",
        read_by: WORKER,
        secret: false,
    };
    pub const DRY_RUN: VarSpec = VarSpec {
        name: "BUYONCE_DRY_RUN",
        default: Some("false"),
        expected: "true or false",
        doc: "Resolve offerings and guards but buy nothing.",
        read_by: WORKER,
        secret: false,
    };
    pub const DAILY_BUDGET_USD: VarSpec = VarSpec {
        name: "BUYONCE_DAILY_BUDGET_USD",
        default: None,
        expected: "a non-negative amount in USD, e.g. 25000",
        doc: "Fleet-wide upfront spend per UTC day; purchases above it wait (the producer shows it in `status`).",
        read_by: &["buyonce-worker", "buyonce-producer"],
        secret: false,
    };
    pub const TAG_KEY: VarSpec = VarSpec {
        name: "BUYONCE_TAG_KEY",
        default: Some("buyonce-idempotency-token"),
        expected: "1-128 characters",
        doc: "Tag key carrying the token: the EC2 guard, and set on Savings Plans, RDS, ElastiCache and MemoryDB purchases.",
        read_by: WORKER_REAPER,
        secret: false,
    };
    pub const AWS_ROLE_NAME: VarSpec = VarSpec {
        name: "BUYONCE_AWS_ROLE_NAME",
        default: None,
        expected: "an IAM role name",
        doc: "If set, assume arn:aws:iam::<account>:role/<name> for each recommendation's account.",
        read_by: WORKER_REAPER,
        secret: false,
    };
    pub const AWS_ENDPOINT_URL: VarSpec = VarSpec {
        name: "AWS_ENDPOINT_URL",
        default: None,
        expected: "a URL",
        doc: "AWS SDK standard: send every AWS call here (fakecloud in tests and the demo).",
        read_by: WORKER_REAPER,
        secret: false,
    };
    pub const AWS_REGION: VarSpec = VarSpec {
        name: "AWS_REGION",
        default: Some("us-east-1"),
        expected: "an AWS region",
        doc: "AWS SDK standard: region for calls that have none in the recommendation (STS).",
        read_by: WORKER_REAPER,
        secret: false,
    };
    pub const AZURE_CREDENTIAL: VarSpec = VarSpec {
        name: "BUYONCE_AZURE_CREDENTIAL",
        default: Some("client-secret"),
        expected: "client-secret, managed-identity, workload-identity, developer-tools or emulator",
        doc: "Which Azure credential the worker uses (azure_identity has no default chain). Azure is enabled when this or AZURE_CLIENT_ID is set.",
        read_by: WORKER,
        secret: false,
    };
    pub const AZURE_RESOURCE_MANAGER_URL: VarSpec = VarSpec {
        name: "BUYONCE_AZURE_RESOURCE_MANAGER_URL",
        default: Some("https://management.azure.com"),
        expected: "an https:// URL (http:// only for a loopback emulator)",
        doc: "Azure Resource Manager endpoint.",
        read_by: WORKER,
        secret: false,
    };
    pub const AZURE_AUTHORITY_HOST: VarSpec = VarSpec {
        name: "AZURE_AUTHORITY_HOST",
        default: Some("https://login.microsoftonline.com"),
        expected: "a URL",
        doc: "Azure identity standard: token authority (the emulator credential's token endpoint).",
        read_by: WORKER,
        secret: false,
    };
    pub const AZURE_TENANT_ID: VarSpec = VarSpec {
        name: "AZURE_TENANT_ID",
        default: None,
        expected: "a tenant GUID or domain",
        doc: "Azure identity standard (client-secret, workload-identity, emulator).",
        read_by: WORKER,
        secret: false,
    };
    pub const AZURE_CLIENT_ID: VarSpec = VarSpec {
        name: "AZURE_CLIENT_ID",
        default: None,
        expected: "an application (client) ID",
        doc: "Azure identity standard (client-secret, workload-identity, user-assigned managed identity, emulator).",
        read_by: WORKER,
        secret: false,
    };
    pub const AZURE_CLIENT_SECRET: VarSpec = VarSpec {
        name: "AZURE_CLIENT_SECRET",
        default: None,
        expected: "the application's client secret",
        doc: "Azure identity standard (client-secret, emulator).",
        read_by: WORKER,
        secret: true,
    };
    pub const REAP_AFTER: VarSpec = VarSpec {
        name: "PURCHASE_APPROVED_REAP_AFTER",
        default: Some("10m"),
        expected: "a positive Go duration, e.g. 10m or 2h30m",
        doc: "Items running longer than this without a heartbeat are failed by the reaper (invalid → WARN and 10m).",
        read_by: REAPER,
        secret: false,
    };
    pub const REAP_INTERVAL: VarSpec = VarSpec {
        name: "BUYONCE_REAP_INTERVAL",
        default: Some("5m"),
        expected: "a positive Go duration",
        doc: "How often the reaper sweeps (without --once).",
        read_by: REAPER,
        secret: false,
    };
    pub const UNPUBLISHED_GRACE: VarSpec = VarSpec {
        name: "BUYONCE_UNPUBLISHED_GRACE",
        default: Some("30s"),
        expected: "a positive Go duration",
        doc: "Queued items unpublished for longer than this are republished (reaper and producer relay).",
        read_by: &["buyonce-producer", "buyonce-reaper"],
        secret: false,
    };

    /// Every variable, for documentation and manifest checks.
    pub const ALL: &[VarSpec] = &[
        AMQP_URL,
        AMQP_CA_FILE,
        AMQP_CLIENT_CERT_FILE,
        AMQP_CLIENT_KEY_FILE,
        DATABASE_URL,
        DATABASE_CA_FILE,
        DATABASE_POOL_SIZE,
        QUEUE_PREFIX,
        DELIVERY_LIMIT,
        RETRY_DELAYS,
        LOG_FORMAT,
        RUST_LOG,
        LISTEN,
        API_TOKENS,
        RELAY_INTERVAL,
        UNPUBLISHED_GRACE,
        CONCURRENCY,
        PER_ACCOUNT_CONCURRENCY,
        MAX_ATTEMPTS,
        HEARTBEAT_INTERVAL,
        AWS_SETTLE_WINDOW,
        AZURE_SETTLE_WINDOW,
        SHUTDOWN_GRACE,
        DRY_RUN,
        DAILY_BUDGET_USD,
        TAG_KEY,
        AWS_ROLE_NAME,
        AWS_ENDPOINT_URL,
        AWS_REGION,
        AZURE_CREDENTIAL,
        AZURE_RESOURCE_MANAGER_URL,
        AZURE_AUTHORITY_HOST,
        AZURE_TENANT_ID,
        AZURE_CLIENT_ID,
        AZURE_CLIENT_SECRET,
        REAP_AFTER,
        REAP_INTERVAL,
    ];
}

/// Reads a plain variable; empty counts as unset.
pub fn get(env: &dyn EnvSource, spec: &VarSpec) -> Option<String> {
    env.get(spec.name).filter(|v| !v.trim().is_empty())
}

/// Reads a variable with its default applied.
pub fn get_or_default(env: &dyn EnvSource, spec: &VarSpec) -> Option<String> {
    get(env, spec).or_else(|| spec.default.map(str::to_owned))
}

/// Reads a secret from `NAME` or from the file named by `NAME_FILE` (trailing newline removed).
pub fn get_secret(env: &dyn EnvSource, spec: &VarSpec) -> Result<Option<Secret>, ConfigError> {
    let file_var = format!("{}_FILE", spec.name);
    let direct = get(env, spec);
    let file = env.get(&file_var).filter(|v| !v.trim().is_empty());
    match (direct, file) {
        (Some(_), Some(_)) => Err(ConfigError::Conflict {
            a: spec.name.to_owned(),
            b: file_var,
        }),
        (Some(v), None) => Ok(Some(Secret(v))),
        (None, Some(path)) => {
            let content = std::fs::read_to_string(&path).map_err(|e| ConfigError::File {
                var: file_var.clone(),
                path: path.clone(),
                problem: e.to_string(),
            })?;
            let value = content.trim_end_matches(['\n', '\r']).to_owned();
            if value.trim().is_empty() {
                return Err(ConfigError::File {
                    var: file_var,
                    path,
                    problem: "file is empty".into(),
                });
            }
            Ok(Some(Secret(value)))
        }
        (None, None) => Ok(spec.default.map(Secret::new)),
    }
}

fn invalid(spec: &VarSpec, value: &str, problem: impl fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        var: spec.name.to_owned(),
        shown: if spec.secret {
            "(redacted)".into()
        } else {
            format!("{value:?}")
        },
        problem: problem.to_string(),
        expected: spec.expected.to_owned(),
    }
}

/// Parses a variable (or its default) with `FromStr`, checking `[min, max]`.
pub fn parse_number<T>(
    env: &dyn EnvSource,
    spec: &VarSpec,
    min: T,
    max: T,
) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + fmt::Display + Copy,
    T::Err: fmt::Display,
{
    let raw = get_or_default(env, spec).ok_or_else(|| ConfigError::Missing {
        var: spec.name.to_owned(),
        expected: spec.expected.to_owned(),
    })?;
    let value: T = raw.trim().parse().map_err(|e| invalid(spec, &raw, e))?;
    if value < min || value > max {
        return Err(invalid(spec, &raw, format!("out of range {min}..={max}")));
    }
    Ok(value)
}

/// Parses an optional number (no default).
pub fn parse_optional_f64(env: &dyn EnvSource, spec: &VarSpec) -> Result<Option<f64>, ConfigError> {
    match get(env, spec) {
        None => Ok(None),
        Some(raw) => {
            let v: f64 = raw.trim().parse().map_err(|e| invalid(spec, &raw, e))?;
            if !(v >= 0.0 && v.is_finite()) {
                return Err(invalid(spec, &raw, "must be a non-negative number"));
            }
            Ok(Some(v))
        }
    }
}

/// Parses `true`/`false` (also `1`/`0`, `yes`/`no`).
pub fn parse_bool(env: &dyn EnvSource, spec: &VarSpec) -> Result<bool, ConfigError> {
    let raw = get_or_default(env, spec).unwrap_or_else(|| "false".into());
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(invalid(spec, &raw, "not a boolean")),
    }
}

/// Parses a positive Go-style duration.
pub fn parse_positive_duration(
    env: &dyn EnvSource,
    spec: &VarSpec,
) -> Result<Duration, ConfigError> {
    let raw = get_or_default(env, spec).ok_or_else(|| ConfigError::Missing {
        var: spec.name.to_owned(),
        expected: spec.expected.to_owned(),
    })?;
    let d = parse_duration(&raw).map_err(|e| invalid(spec, &raw, e.why))?;
    if d.is_zero() {
        return Err(invalid(spec, &raw, "must be greater than zero"));
    }
    Ok(d)
}

/// Parses a comma-separated list of increasing positive durations.
pub fn parse_duration_list(
    env: &dyn EnvSource,
    spec: &VarSpec,
) -> Result<Vec<Duration>, ConfigError> {
    let raw = get_or_default(env, spec).unwrap_or_default();
    let mut out = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let d = parse_duration(part).map_err(|e| invalid(spec, &raw, e.why))?;
        if d < Duration::from_millis(10) {
            return Err(invalid(spec, &raw, "each delay must be at least 10ms"));
        }
        if out.last().is_some_and(|prev: &Duration| *prev >= d) {
            return Err(invalid(spec, &raw, "delays must increase"));
        }
        out.push(d);
    }
    if out.is_empty() || out.len() > 16 {
        return Err(invalid(spec, &raw, "need 1 to 16 delays"));
    }
    Ok(out)
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Configuration every binary shares: where the broker and database are, and naming.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    pub amqp: AmqpConfig,
    pub database: DatabaseConfig,
    pub queue_prefix: String,
    pub delivery_limit: u32,
    pub retry_delays: Vec<Duration>,
    pub log_format: LogFormat,
}

/// How to reach RabbitMQ.
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    pub url: Secret,
    pub ca_file: Option<PathBuf>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
}

/// How to reach Postgres.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: Secret,
    pub ca_file: Option<PathBuf>,
    pub pool_size: usize,
    /// Postgres schema to use instead of the default search path (tests isolate themselves
    /// with one schema each; not exposed as an env var).
    pub schema: Option<String>,
}

impl DatabaseConfig {
    /// A config for a URL with defaults (tests and tools).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: Secret::new(url),
            ca_file: None,
            pool_size: 16,
            schema: None,
        }
    }
}

impl AmqpConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: Secret::new(url),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
        }
    }
}

impl CommonConfig {
    /// Reads the shared variables from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&ProcessEnv)
    }

    pub fn from_source(env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let amqp_url = get_secret(env, &vars::AMQP_URL)?.ok_or_else(|| missing(&vars::AMQP_URL))?;
        let scheme = amqp_url.expose().split("://").next().unwrap_or_default();
        if !matches!(scheme, "amqp" | "amqps") || !amqp_url.expose().contains("://") {
            return Err(invalid(
                &vars::AMQP_URL,
                amqp_url.expose(),
                format!(
                    "scheme must be amqp or amqps (got {:?})",
                    redact_url(amqp_url.expose())
                ),
            ));
        }
        let database_url =
            get_secret(env, &vars::DATABASE_URL)?.ok_or_else(|| missing(&vars::DATABASE_URL))?;
        if let Err(problem) = crate::db::check_url(database_url.expose()) {
            return Err(invalid(&vars::DATABASE_URL, database_url.expose(), problem));
        }
        let path = |spec: &VarSpec| get(env, spec).map(PathBuf::from);
        let amqp = AmqpConfig {
            url: amqp_url,
            ca_file: path(&vars::AMQP_CA_FILE),
            client_cert_file: path(&vars::AMQP_CLIENT_CERT_FILE),
            client_key_file: path(&vars::AMQP_CLIENT_KEY_FILE),
        };
        if amqp.client_cert_file.is_some() != amqp.client_key_file.is_some() {
            return Err(ConfigError::Missing {
                var: if amqp.client_cert_file.is_some() {
                    vars::AMQP_CLIENT_KEY_FILE.name.into()
                } else {
                    vars::AMQP_CLIENT_CERT_FILE.name.into()
                },
                expected: "client certificate and key are set together".into(),
            });
        }
        let database = DatabaseConfig {
            url: database_url,
            ca_file: path(&vars::DATABASE_CA_FILE),
            pool_size: parse_number(env, &vars::DATABASE_POOL_SIZE, 1usize, 1000)?,
            schema: None,
        };
        let prefix = get_or_default(env, &vars::QUEUE_PREFIX).unwrap_or_default();
        if prefix.is_empty()
            || prefix.len() > 64
            || !prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        {
            return Err(invalid(
                &vars::QUEUE_PREFIX,
                &prefix,
                "bad characters or length",
            ));
        }
        let log_format = match get_or_default(env, &vars::LOG_FORMAT).as_deref() {
            Some("json") => LogFormat::Json,
            Some("pretty") | None => LogFormat::Pretty,
            Some(other) => return Err(invalid(&vars::LOG_FORMAT, other, "unknown format")),
        };
        Ok(Self {
            amqp,
            database,
            queue_prefix: prefix,
            delivery_limit: parse_number(env, &vars::DELIVERY_LIMIT, 1u32, 1000)?,
            retry_delays: parse_duration_list(env, &vars::RETRY_DELAYS)?,
            log_format,
        })
    }
}

fn missing(spec: &VarSpec) -> ConfigError {
    ConfigError::Missing {
        var: spec.name.to_owned(),
        expected: spec.expected.to_owned(),
    }
}

/// A connection string with its password replaced by `***`, safe to log.
///
/// Handles URLs (`scheme://user:pass@host/...`, `?password=`) and libpq key/value strings
/// (`host=... password=...`).
pub fn redact_url(raw: &str) -> String {
    // A parse is trusted only if it accounts for the `@`: a password with an unescaped `/`,
    // `?`, `#` or `@` makes the parser end the userinfo or the authority early and take the
    // rest of the password for a host or a path. With exactly one `@` that the parser took as
    // the end of a userinfo, everything before it is that userinfo.
    let ats = raw
        .split_once("://")
        .map_or(0, |(_, rest)| rest.matches('@').count());
    let parsed = url::Url::parse(raw).ok().filter(|url| {
        ats == 0 || (ats == 1 && (!url.username().is_empty() || url.password().is_some()))
    });
    if let Some(mut url) = parsed {
        if url.password().is_some() {
            let _ = url.set_password(Some("***"));
        }
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let sensitive = is_password_key(&k);
                (
                    k.into_owned(),
                    if sensitive {
                        "***".into()
                    } else {
                        v.into_owned()
                    },
                )
            })
            .collect();
        if !pairs.is_empty() {
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
        return url.to_string();
    }
    // Looks like a URL but does not parse (libpq multi-host `h1:1,h2:2`, a bad port, a
    // password with a `/` or `#`, …): the userinfo cannot be told apart reliably, so
    // everything between `://` and the last `@` goes.
    if let Some((scheme, rest)) = raw.split_once("://") {
        // The query's password parameters first (a value may hold an `@`), then the userinfo.
        let rest = redact_password_params(rest);
        let rest = match rest.rfind('@') {
            Some(at) => format!("***@{}", &rest[at + 1..]),
            None => rest,
        };
        return format!("{scheme}://{rest}");
    }
    // libpq key=value form; redact anything that looks like a password value.
    raw.split_whitespace()
        .map(|part| match part.split_once('=') {
            Some((k, _)) if is_password_key(k) => format!("{k}=***"),
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A URL query parameter that carries a password (`password`, `sslpassword`, `pass`, any case).
fn is_password_key(key: &str) -> bool {
    ["password", "sslpassword", "pass"]
        .iter()
        .any(|k| key.eq_ignore_ascii_case(k))
}

/// `…?a=1&password=x&b=2` → `…?a=1&password=***&b=2`: the value of every `password`,
/// `sslpassword` or `pass` parameter (any case), up to the next `&` or the end.
fn redact_password_params(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    loop {
        let Some(at) = rest.find(['?', '&']) else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let key_end = rest.find(['=', '&']).unwrap_or(rest.len());
        let key = &rest[..key_end];
        if is_password_key(key) && rest[key_end..].starts_with('=') {
            out.push_str(key);
            out.push_str("=***");
            rest = &rest[key_end + 1..];
            rest = &rest[rest.find('&').unwrap_or(rest.len())..];
        }
    }
}

#[cfg(test)]
mod redaction_properties {
    use super::redact_url;
    use proptest::prelude::*;

    fn host_part() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z]{1,8}(\\.[a-z]{2,5})?".prop_map(|h| h),
            "[a-z]{1,8}:[0-9]{1,5}".prop_map(|h| h),
            // libpq multi-host, which the URL parser refuses.
            "[a-z]{1,6}:[0-9]{1,4},[a-z]{1,6}:[0-9]{1,4}".prop_map(|h| h),
            // A port that is not a number.
            "[a-z]{1,8}:[a-z]{1,4}".prop_map(|h| h),
            Just("[::1]:5432".to_owned()),
        ]
    }

    proptest! {
        /// Whatever the URL looks like, its password never survives redaction.
        #[test]
        fn the_password_never_survives(
            scheme in prop_oneof![Just("postgres"), Just("postgresql"), Just("amqp"), Just("amqps")],
            user in "[a-z]{1,8}",
            password in "[A-Za-z0-9!$%&*+=~@:/?#.-]{6,24}",
            host in host_part(),
            path in "(/[a-z0-9%]{0,8})?",
        ) {
            // A password that is part of the rest of the URL cannot be told apart from it.
            prop_assume!(![user.as_str(), host.as_str(), path.as_str(), scheme].iter().any(|p| p.contains(password.as_str())));
            let url = format!("{scheme}://{user}:{password}@{host}{path}");
            let shown = redact_url(&url);
            prop_assert!(!shown.contains(&password), "{url} -> {shown}");
            let query = format!("{scheme}://{host}{path}?password={}", password.replace(['&', '#', '?'], "x"));
            let shown = redact_url(&query);
            prop_assert!(!shown.contains(&password.replace(['&', '#', '?'], "x")), "{query} -> {shown}");
        }
    }

    #[test]
    fn urls_that_do_not_parse_lose_their_userinfo() {
        assert_eq!(
            redact_url("postgres://u:pw@h1:1,h2:2/db"),
            "postgres://***@h1:1,h2:2/db"
        );
        assert_eq!(redact_url("amqp://u:pw@h:abc/"), "amqp://***@h:abc/");
        assert_eq!(redact_url("amqp://h:abc/"), "amqp://h:abc/");
        // Unescaped `/`, `#`, `@` in a password (found by the property test): the parser
        // would end the userinfo early.
        assert_eq!(redact_url("postgres://a:/A#a#A@h"), "postgres://***@h");
        assert_eq!(redact_url("postgres://a:@$#!#-@h"), "postgres://***@h");
        assert_eq!(
            redact_url("postgres://h?PassWord=@pw&x=1"),
            "postgres://h?PassWord=***&x=1"
        );
        // libpq's key=value form: the client key's passphrase too.
        assert_eq!(
            redact_url("host=db password=pw sslpassword=keypass user=u"),
            "host=db password=*** sslpassword=*** user=u"
        );
        // The usual form keeps its user name.
        assert_eq!(
            redact_url("postgres://buyonce:s3cret@db:5432/buyonce?sslmode=verify-full"),
            "postgres://buyonce:***@db:5432/buyonce?sslmode=verify-full"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let env: [(&str, &str); 0] = [];
        let c = CommonConfig::from_source(&env).unwrap();
        assert_eq!(c.queue_prefix, "buyonce");
        assert_eq!(c.amqp.url.expose(), "amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(
            c.database.url.expose(),
            "postgres://postgres@127.0.0.1:5432/buyonce"
        );
        assert_eq!(c.log_format, LogFormat::Pretty);
        assert_eq!(c.delivery_limit, 20);
        assert_eq!(c.retry_delays.len(), 5);
    }

    #[test]
    fn bad_values_name_the_variable_and_the_expected_form() {
        let e = CommonConfig::from_source(&[("BUYONCE_LOG_FORMAT", "xml")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "BUYONCE_LOG_FORMAT=\"xml\" is invalid: unknown format; expected pretty or json"
        );
        let e = CommonConfig::from_source(&[("BUYONCE_DELIVERY_LIMIT", "lots")]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("BUYONCE_DELIVERY_LIMIT=\"lots\" is invalid"),
            "{e}"
        );
        let e = CommonConfig::from_source(&[("BUYONCE_QUEUE_PREFIX", "Bad Prefix")]).unwrap_err();
        assert!(e.to_string().contains("BUYONCE_QUEUE_PREFIX"), "{e}");
        let e = CommonConfig::from_source(&[("BUYONCE_RETRY_DELAYS", "5s,1s")]).unwrap_err();
        assert!(e.to_string().contains("delays must increase"), "{e}");
    }

    #[test]
    fn secrets_are_never_echoed_in_errors() {
        let e =
            CommonConfig::from_source(&[("BUYONCE_AMQP_URL", "http://u:hunter2@h/")]).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("BUYONCE_AMQP_URL"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn secret_from_file_and_conflict() {
        let dir = std::env::temp_dir().join(format!("buyonce-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("amqp");
        std::fs::write(&file, "amqp://u:p@host:5672/%2f\n").unwrap();
        let file_str = file.to_str().unwrap();
        let c = CommonConfig::from_source(&[("BUYONCE_AMQP_URL_FILE", file_str)]).unwrap();
        assert_eq!(c.amqp.url.expose(), "amqp://u:p@host:5672/%2f");
        let e = CommonConfig::from_source(&[
            ("BUYONCE_AMQP_URL_FILE", file_str),
            ("BUYONCE_AMQP_URL", "amqp://x"),
        ])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "both BUYONCE_AMQP_URL and BUYONCE_AMQP_URL_FILE are set; set only one of them"
        );
        let e = CommonConfig::from_source(&[("BUYONCE_DATABASE_URL_FILE", "/nonexistent/x")])
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("BUYONCE_DATABASE_URL_FILE: cannot read"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn redacts_passwords_in_every_form() {
        assert_eq!(
            redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/buyonce?sslmode=require"),
            "postgres://app:***@db:5432/buyonce?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://db/x?user=a&password=s3cret"),
            "postgres://db/x?user=a&password=***"
        );
        assert_eq!(
            redact_url("host=db user=app password=s3cret dbname=x"),
            "host=db user=app password=*** dbname=x"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1:5432/buyonce"),
            "postgres://postgres@127.0.0.1:5432/buyonce"
        );
    }

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(format!("{:?}", Secret::new("x")), "(redacted)");
    }
}
