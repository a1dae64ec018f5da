//! The reaper's configuration: the shared variables, `PURCHASE_APPROVED_REAP_AFTER` (which
//! never fails the start: a bad value falls back to the default with a WARN), the sweep interval
//! and the metrics address.

use std::net::SocketAddr;
use std::time::Duration;

use buyonce_shared::config::{self, vars, CommonConfig, ConfigError, EnvSource, ProcessEnv};
use buyonce_shared::duration::{format_duration, parse_go_duration};
use tracing::warn;

use crate::clients::aws::AwsSettings;

/// Default `reap_after`.
pub const DEFAULT_REAP_AFTER: Duration = Duration::from_secs(600);
/// Rows per batch: bounded statements and memory on tables of any size.
pub const BATCH: i64 = 1000;

/// Parses `PURCHASE_APPROVED_REAP_AFTER`. Unset, unparseable, zero or negative → a WARN naming
/// the value and the default (10m): a bad value must never crash the reaper, and must never
/// become a zero or negative cutoff that would reap live purchases.
pub fn reap_after_from(raw: Option<&str>) -> Duration {
    let name = vars::REAP_AFTER.name;
    let default = format_duration(DEFAULT_REAP_AFTER);
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
        warn!("{name} is not set; using the default {default}");
        return DEFAULT_REAP_AFTER;
    };
    match parse_go_duration(raw) {
        Ok(nanos) if nanos > 0 => Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)),
        Ok(_) => {
            warn!("{name}={raw:?} is zero or negative; using the default {default}");
            DEFAULT_REAP_AFTER
        }
        Err(e) => {
            warn!(
                "{name}={raw:?} is not a Go duration ({}); using the default {default}",
                e.why
            );
            DEFAULT_REAP_AFTER
        }
    }
}

/// Reaper configuration.
#[derive(Debug, Clone)]
pub struct ReaperConfig {
    pub common: CommonConfig,
    pub reap_after: Duration,
    pub interval: Duration,
    pub unpublished_grace: Duration,
    pub redrive_failed: bool,
    pub max_attempts: i32,
    pub tag_key: String,
    pub listen: SocketAddr,
    pub aws: AwsSettings,
    pub batch: i64,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9102";

impl ReaperConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&ProcessEnv)
    }

    pub fn from_source(env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let common = CommonConfig::from_source(env)?;
        crate::config::at_least_two_connections(
            &common,
            "the reaper",
            "its single-reaper lock holds one while the sweep works through another",
        )?;
        let listen = config::parse_socket_addr(env, &vars::LISTEN, DEFAULT_LISTEN)?;
        Ok(Self {
            reap_after: reap_after_from(env.get(vars::REAP_AFTER.name).as_deref()),
            interval: config::parse_positive_duration(env, &vars::REAP_INTERVAL)?,
            unpublished_grace: config::parse_positive_duration(env, &vars::UNPUBLISHED_GRACE)?,
            redrive_failed: false,
            max_attempts: config::parse_number(env, &vars::MAX_ATTEMPTS, 1i32, 100)?,
            tag_key: config::get_or_default(env, &vars::TAG_KEY).unwrap_or_default(),
            listen,
            aws: AwsSettings::from_source(env),
            batch: BATCH,
            common,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by running the suites with a pool of 2: the reaper holds its lock on one
    /// connection for the whole sweep, so with a pool of one every sweep waited 30 s for
    /// itself and failed.
    #[test]
    fn a_reaper_needs_at_least_two_database_connections() {
        let e = ReaperConfig::from_source(&[("BUYONCE_DATABASE_POOL_SIZE", "1")]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("BUYONCE_DATABASE_POOL_SIZE=\"1\" is invalid"),
            "{text}"
        );
        assert!(text.contains("the reaper needs at least 2"), "{text}");
        assert!(ReaperConfig::from_source(&[("BUYONCE_DATABASE_POOL_SIZE", "2")]).is_ok());
    }

    #[test]
    fn reap_after_falls_back_to_ten_minutes_on_bad_values() {
        assert_eq!(reap_after_from(None), DEFAULT_REAP_AFTER);
        assert_eq!(reap_after_from(Some("")), DEFAULT_REAP_AFTER);
        assert_eq!(reap_after_from(Some("garbage")), DEFAULT_REAP_AFTER);
        assert_eq!(reap_after_from(Some("0s")), DEFAULT_REAP_AFTER);
        assert_eq!(reap_after_from(Some("-5m")), DEFAULT_REAP_AFTER);
        assert_eq!(reap_after_from(Some("2h30m")), Duration::from_secs(9000));
        assert_eq!(reap_after_from(Some("15m")), Duration::from_secs(900));
    }
}
