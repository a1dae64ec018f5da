//! Configuration from the environment, in one place, failing fast with the variable's name and
//! the expected form.
//!
//! Every variable any binary reads is declared once in [`vars`] (name, default, expected form,
//! who reads it). The README's config table, the deployment manifests' test and the parsing code
//! all use that list, so they cannot drift apart. This module holds the settings every binary
//! shares and re-exports the rest: the list (`catalog.rs`), where values and secrets come from
//! (`env.rs`), the typed parsers (`parse.rs`) and connection-string redaction (`redact.rs`).
//!
//! Secrets (`BUYONCE_AMQP_URL`, `BUYONCE_DATABASE_URL`, `BUYONCE_API_TOKENS`,
//! `AZURE_CLIENT_SECRET`) can also come from a file named by `<VAR>_FILE`, the Docker/Kubernetes
//! secrets convention; setting both forms is an error.

use std::path::PathBuf;
use std::time::Duration;

mod catalog;
mod env;
mod parse;
mod redact;

pub use catalog::{vars, VarSpec};
pub use env::{get, get_or_default, get_secret, EnvSource, ProcessEnv, Secret};
pub use parse::{
    invalid, missing, parse_bool, parse_choice, parse_duration, parse_duration_between,
    parse_duration_list, parse_number, parse_optional_f64, parse_positive_duration,
    parse_socket_addr, parse_url,
};
pub use redact::redact_url;

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

impl ConfigError {
    /// The same error expecting `expected` instead of the variable's usual form: for a rule of
    /// the reader (a worker needs two connections) or one that depends on another variable.
    pub fn expecting(mut self, expected: impl Into<String>) -> Self {
        if let Self::Invalid { expected: e, .. } | Self::Missing { expected: e, .. } = &mut self {
            *e = expected.into();
        }
        self
    }
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
    /// The heartbeat asked of the broker (`BUYONCE_AMQP_HEARTBEAT`), unless the URL names one.
    pub heartbeat: Duration,
}

/// How to reach Postgres.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: Secret,
    pub ca_file: Option<PathBuf>,
    pub pool_size: usize,
    /// `statement_timeout` asked of every session; `None` leaves the server's.
    pub statement_timeout: Option<Duration>,
    /// How long a connection may go unanswered before both ends drop it.
    pub tcp_timeout: Duration,
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
            statement_timeout: Some(Duration::from_secs(30)),
            tcp_timeout: Duration::from_secs(20),
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
            heartbeat: Duration::from_secs(15),
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
            heartbeat: parse_duration_between(
                env,
                &vars::AMQP_HEARTBEAT,
                (Duration::from_secs(2), Duration::from_secs(600)),
                false,
            )?,
        };
        if amqp.heartbeat.subsec_nanos() != 0 {
            return Err(invalid(
                &vars::AMQP_HEARTBEAT,
                &crate::duration::format_duration(amqp.heartbeat),
                "must be a whole number of seconds",
            ));
        }
        if amqp.client_cert_file.is_some() != amqp.client_key_file.is_some() {
            let absent = if amqp.client_cert_file.is_some() {
                &vars::AMQP_CLIENT_KEY_FILE
            } else {
                &vars::AMQP_CLIENT_CERT_FILE
            };
            return Err(missing(absent).expecting("client certificate and key are set together"));
        }
        let database = DatabaseConfig {
            url: database_url,
            ca_file: path(&vars::DATABASE_CA_FILE),
            pool_size: parse_number(env, &vars::DATABASE_POOL_SIZE, 1usize, 1000)?,
            statement_timeout: Some(parse_duration_between(
                env,
                &vars::DATABASE_STATEMENT_TIMEOUT,
                (Duration::from_secs(1), Duration::from_secs(3600)),
                true,
            )?)
            .filter(|d| !d.is_zero()),
            tcp_timeout: parse_duration_between(
                env,
                &vars::DATABASE_TCP_TIMEOUT,
                (Duration::from_secs(10), Duration::from_secs(600)),
                false,
            )?,
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
        let log_format = parse_choice(
            env,
            &vars::LOG_FORMAT,
            "format",
            &[("pretty", LogFormat::Pretty), ("json", LogFormat::Json)],
        )?;
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
    fn connection_timeouts_have_defaults_ranges_and_an_off_switch() {
        let env: [(&str, &str); 0] = [];
        let c = CommonConfig::from_source(&env).unwrap();
        assert_eq!(c.database.statement_timeout, Some(Duration::from_secs(30)));
        assert_eq!(c.database.tcp_timeout, Duration::from_secs(20));
        assert_eq!(c.amqp.heartbeat, Duration::from_secs(15));
        let c = CommonConfig::from_source(&[("BUYONCE_DATABASE_STATEMENT_TIMEOUT", "0")]).unwrap();
        assert_eq!(c.database.statement_timeout, None);
        let e = CommonConfig::from_source(&[("BUYONCE_DATABASE_TCP_TIMEOUT", "1s")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "BUYONCE_DATABASE_TCP_TIMEOUT=\"1s\" is invalid: must be from 10s to 10m; expected a Go duration from 10s to 10m"
        );
        let e = CommonConfig::from_source(&[("BUYONCE_DATABASE_TCP_TIMEOUT", "0")]).unwrap_err();
        assert!(e.to_string().contains("must be from 10s to 10m"), "{e}");
        let e = CommonConfig::from_source(&[("BUYONCE_AMQP_HEARTBEAT", "2500ms")]).unwrap_err();
        assert!(
            e.to_string().contains("BUYONCE_AMQP_HEARTBEAT")
                && e.to_string().contains("whole number of seconds"),
            "{e}"
        );
    }

    #[test]
    fn secrets_are_never_echoed_in_errors() {
        let e =
            CommonConfig::from_source(&[("BUYONCE_AMQP_URL", "http://u:hunter2@h/")]).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("BUYONCE_AMQP_URL"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}
