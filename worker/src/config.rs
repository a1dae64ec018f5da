//! Worker configuration: the shared variables plus the worker's own, validated at start.

use std::net::SocketAddr;
use std::time::Duration;

use buyonce_shared::config::{self, vars, CommonConfig, ConfigError, EnvSource, ProcessEnv};

use crate::clients::aws::AwsSettings;
use crate::clients::azure::AzureSettings;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub common: CommonConfig,
    /// In-flight purchases (and the AMQP prefetch).
    pub concurrency: usize,
    pub per_account_concurrency: usize,
    pub max_attempts: i32,
    pub heartbeat_interval: Duration,
    /// After an ambiguous purchase call, how long a retry that finds nothing waits before it
    /// may buy again, per provider.
    pub aws_settle_window: Duration,
    pub azure_settle_window: Duration,
    /// A running item whose heartbeat is older than this is presumed orphaned and may be taken
    /// over by a redelivered message (3 × the heartbeat interval).
    pub stale_after: Duration,
    pub shutdown_grace: Duration,
    pub dry_run: bool,
    pub daily_budget_usd: Option<f64>,
    pub tag_key: String,
    pub listen: SocketAddr,
    pub aws: AwsSettings,
    /// `None` when Azure is not configured (Azure items then fail permanently with a reason).
    pub azure: Option<AzureSettings>,
    /// Also archive the dead-letter queue into Postgres.
    pub archive_dead_letters: bool,
    /// Hot-path compare-and-sets share transactions (`BUYONCE_DATABASE_GROUP_COMMIT`).
    pub group_commit: bool,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9101";

/// Refuses a pool of one for a process that holds a lock on one connection while it works
/// through another: with one connection it would wait for itself until the pool timeout.
pub fn at_least_two_connections(
    common: &CommonConfig,
    who: &str,
    why: &str,
) -> Result<(), ConfigError> {
    if common.database.pool_size >= 2 {
        return Ok(());
    }
    Err(config::invalid(
        &vars::DATABASE_POOL_SIZE,
        &common.database.pool_size.to_string(),
        format!("{who} needs at least 2 connections ({why})"),
    )
    .expecting(format!("an integer from 2 to 1000 for {who}")))
}

impl WorkerConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&ProcessEnv)
    }

    pub fn from_source(env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let common = CommonConfig::from_source(env)?;
        // An EC2/Redshift purchase holds its offering lock on one connection and records
        // through another.
        at_least_two_connections(
            &common,
            "a worker",
            "an offering lock holds one while the purchase records through another",
        )?;
        let heartbeat_interval = config::parse_positive_duration(env, &vars::HEARTBEAT_INTERVAL)?;
        let listen = config::parse_socket_addr(env, &vars::LISTEN, DEFAULT_LISTEN)?;
        let tag_key = config::get_or_default(env, &vars::TAG_KEY).unwrap_or_default();
        if tag_key.is_empty() || tag_key.len() > 128 {
            return Err(config::invalid(&vars::TAG_KEY, &tag_key, "length"));
        }
        // Azure is optional: configured when a credential other than the default is chosen or
        // the client-secret variables are present.
        let azure_wanted = config::get(env, &vars::AZURE_CREDENTIAL).is_some()
            || config::get(env, &vars::AZURE_CLIENT_ID).is_some();
        let azure = if azure_wanted {
            Some(AzureSettings::from_source(env)?)
        } else {
            None
        };
        let shutdown_grace = config::parse_duration(env, &vars::SHUTDOWN_GRACE)?;
        Ok(Self {
            concurrency: config::parse_number(env, &vars::CONCURRENCY, 1usize, 10_000)?,
            per_account_concurrency: config::parse_number(
                env,
                &vars::PER_ACCOUNT_CONCURRENCY,
                1usize,
                10_000,
            )?,
            max_attempts: config::parse_number(env, &vars::MAX_ATTEMPTS, 1i32, 100)?,
            heartbeat_interval,
            aws_settle_window: config::parse_positive_duration(env, &vars::AWS_SETTLE_WINDOW)?,
            azure_settle_window: config::parse_positive_duration(env, &vars::AZURE_SETTLE_WINDOW)?,
            stale_after: heartbeat_interval * 3,
            shutdown_grace,
            dry_run: config::parse_bool(env, &vars::DRY_RUN)?,
            daily_budget_usd: config::parse_optional_f64(env, &vars::DAILY_BUDGET_USD)?,
            tag_key,
            listen,
            aws: AwsSettings::from_source(env),
            azure,
            archive_dead_letters: true,
            group_commit: config::parse_bool(env, &vars::DATABASE_GROUP_COMMIT)?,
            common,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let env: [(&str, &str); 0] = [];
        let c = WorkerConfig::from_source(&env).unwrap();
        assert_eq!(c.concurrency, 64);
        assert_eq!(c.per_account_concurrency, 4);
        assert_eq!(c.shutdown_grace, Duration::from_secs(25));
        assert_eq!(c.stale_after, Duration::from_secs(30));
        assert_eq!(c.aws_settle_window, Duration::from_secs(300));
        assert_eq!(c.azure_settle_window, Duration::from_secs(1800));
        assert_eq!(c.listen.to_string(), "127.0.0.1:9101");
        assert!(c.azure.is_none());
        assert!(!c.dry_run);
    }

    #[test]
    fn errors_name_the_variable() {
        let e = WorkerConfig::from_source(&[("BUYONCE_CONCURRENCY", "0")]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("BUYONCE_CONCURRENCY=\"0\" is invalid"),
            "{e}"
        );
        let e = WorkerConfig::from_source(&[("BUYONCE_DRY_RUN", "maybe")]).unwrap_err();
        assert!(e.to_string().contains("BUYONCE_DRY_RUN"), "{e}");
        let e = WorkerConfig::from_source(&[("BUYONCE_AZURE_CREDENTIAL", "client-secret")])
            .unwrap_err();
        assert!(e.to_string().contains("AZURE_TENANT_ID"), "{e}");
        let e = WorkerConfig::from_source(&[
            ("BUYONCE_AZURE_CREDENTIAL", "emulator"),
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "s"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("loopback"), "{e}");
    }

    #[test]
    fn a_worker_needs_at_least_two_database_connections() {
        // An EC2/Redshift purchase holds its offering lock on one connection and records
        // through another: with one, it would wait for itself.
        let e = WorkerConfig::from_source(&[("BUYONCE_DATABASE_POOL_SIZE", "1")]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("BUYONCE_DATABASE_POOL_SIZE=\"1\" is invalid"),
            "{text}"
        );
        assert!(text.contains("at least 2"), "{text}");
        let c = WorkerConfig::from_source(&[("BUYONCE_DATABASE_POOL_SIZE", "2")]).unwrap();
        assert_eq!(c.common.database.pool_size, 2);
    }
}
