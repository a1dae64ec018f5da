//! The producer's own settings (`serve`), read from the variables declared in
//! [`buyonce_shared::config::vars`]; command-line flags override them.

use std::fmt;
use std::time::Duration;

use buyonce_shared::config::{
    get, get_secret, invalid, parse_optional_f64, parse_positive_duration, vars, CommonConfig,
    ConfigError, EnvSource, ProcessEnv, Secret, VarSpec,
};
use subtle::ConstantTimeEq;

/// Where `serve` listens when neither `--listen` nor `BUYONCE_LISTEN` says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Shortest bearer token accepted: anything shorter is guessable.
pub const MIN_TOKEN_LEN: usize = 32;
/// Fewest distinct characters a token must use: `aaaa…` or a repeated word is not random.
pub const MIN_TOKEN_DISTINCT: usize = 10;
/// Rows per relay batch.
pub const RELAY_BATCH: i64 = 500;

/// The bearer tokens the API accepts. `Debug` never shows them.
#[derive(Clone, Default)]
pub struct ApiTokens(Vec<Secret>);

impl ApiTokens {
    /// No tokens: the API is open, and so may only listen on loopback.
    pub fn none() -> Self {
        Self(Vec::new())
    }

    /// Parses a comma-separated list; every token must be at least [`MIN_TOKEN_LEN`] long.
    pub fn parse(raw: &Secret) -> Result<Self, ConfigError> {
        let tokens: Vec<&str> = raw
            .expose()
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        // A secret: the error shows `(redacted)`, never the list.
        let refuse = |problem: String| invalid(&vars::API_TOKENS, raw.expose(), problem);
        if tokens.is_empty() {
            return Err(refuse("no token in the list".into()));
        }
        for (i, t) in tokens.iter().enumerate() {
            if t.chars().count() < MIN_TOKEN_LEN {
                return Err(refuse(format!(
                    "token {} of {} is shorter than {MIN_TOKEN_LEN} characters",
                    i + 1,
                    tokens.len()
                )));
            }
            let distinct: std::collections::BTreeSet<char> = t.chars().collect();
            if distinct.len() < MIN_TOKEN_DISTINCT {
                return Err(refuse(format!(
                    "token {} of {} uses only {} distinct characters (at least \
                     {MIN_TOKEN_DISTINCT}); generate one, e.g. `openssl rand -hex 32`",
                    i + 1,
                    tokens.len(),
                    distinct.len()
                )));
            }
        }
        Ok(Self(tokens.into_iter().map(Secret::new).collect()))
    }

    /// From `BUYONCE_API_TOKENS` or `BUYONCE_API_TOKENS_FILE`; none when both are unset.
    pub fn from_source(env: &dyn EnvSource) -> Result<Self, ConfigError> {
        match get_secret(env, &vars::API_TOKENS)? {
            Some(raw) => Self::parse(&raw),
            None => Ok(Self::none()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `presented` is one of the tokens. Compares in constant time against every
    /// token (no early exit on a match), so timing says nothing about which one or how much of
    /// it matched.
    pub fn accepts(&self, presented: &str) -> bool {
        let presented = presented.as_bytes();
        let mut ok = subtle::Choice::from(0);
        for token in &self.0 {
            ok |= token.expose().as_bytes().ct_eq(presented);
        }
        bool::from(ok)
    }
}

impl fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiTokens({} configured)", self.0.len())
    }
}

/// Command-line values that take precedence over the environment.
#[derive(Debug, Clone, Default)]
pub struct ServeOverrides {
    pub listen: Option<String>,
    pub relay_interval: Option<Duration>,
    pub unpublished_grace: Option<Duration>,
}

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub common: CommonConfig,
    /// `host:port`; resolved (and checked against the token policy) at start.
    pub listen: String,
    pub tokens: ApiTokens,
    pub relay_interval: Duration,
    pub unpublished_grace: Duration,
    /// `BUYONCE_DAILY_BUDGET_USD`, shown next to today's spend (the workers enforce it).
    pub daily_budget_usd: Option<f64>,
}

impl ServeConfig {
    pub fn from_env(common: CommonConfig, overrides: ServeOverrides) -> Result<Self, ConfigError> {
        Self::from_source(&ProcessEnv, common, overrides)
    }

    pub fn from_source(
        env: &dyn EnvSource,
        common: CommonConfig,
        overrides: ServeOverrides,
    ) -> Result<Self, ConfigError> {
        let duration = |spec: &VarSpec, given: Option<Duration>| match given {
            Some(d) => Ok(d),
            None => parse_positive_duration(env, spec),
        };
        Ok(Self {
            common,
            listen: overrides
                .listen
                .or_else(|| get(env, &vars::LISTEN))
                .unwrap_or_else(|| DEFAULT_LISTEN.to_owned()),
            tokens: ApiTokens::from_source(env)?,
            relay_interval: duration(&vars::RELAY_INTERVAL, overrides.relay_interval)?,
            unpublished_grace: duration(&vars::UNPUBLISHED_GRACE, overrides.unpublished_grace)?,
            daily_budget_usd: parse_optional_f64(env, &vars::DAILY_BUDGET_USD)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_ENV: [(&str, &str); 0] = [];

    fn common() -> CommonConfig {
        CommonConfig::from_source(&NO_ENV).unwrap()
    }

    #[test]
    fn defaults_and_overrides() {
        let c = ServeConfig::from_source(&NO_ENV, common(), ServeOverrides::default()).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(c.relay_interval, Duration::from_secs(30));
        assert_eq!(c.unpublished_grace, Duration::from_secs(30));
        assert!(c.tokens.is_empty());

        let env = [
            ("BUYONCE_LISTEN", "0.0.0.0:9000"),
            ("BUYONCE_RELAY_INTERVAL", "5s"),
        ];
        let c = ServeConfig::from_source(
            &env,
            common(),
            ServeOverrides {
                listen: Some("127.0.0.1:0".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:0");
        assert_eq!(c.relay_interval, Duration::from_secs(5));
    }

    #[test]
    fn bad_durations_name_the_variable() {
        let e = ServeConfig::from_source(
            &[("BUYONCE_UNPUBLISHED_GRACE", "soon")],
            common(),
            ServeOverrides::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("BUYONCE_UNPUBLISHED_GRACE="),
            "{e}"
        );
    }

    #[test]
    fn tokens_are_checked_and_never_shown() {
        const A: &str = "3f9a1c7e5b2d8046af13c9e7b5d20864";
        const B: &str = "k2Jd9xQ4mZ7vT1pL8sW3nR6bY0cF5hGu";
        let tokens =
            ApiTokens::from_source(&[("BUYONCE_API_TOKENS", format!("{A}, {B}").as_str())])
                .unwrap();
        assert!(tokens.accepts(A));
        assert!(tokens.accepts(B));
        assert!(!tokens.accepts(&A[1..]));
        assert!(!tokens.accepts(""));
        assert_eq!(format!("{tokens:?}"), "ApiTokens(2 configured)");

        let short = format!("{A},zq9xk0123456789abcdefghijklm"); // 29 characters
        let e = ApiTokens::from_source(&[("BUYONCE_API_TOKENS", short.as_str())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("BUYONCE_API_TOKENS=(redacted)"), "{e}");
        assert!(e.contains("token 2 of 2 is shorter than 32"), "{e}");
        assert!(!e.contains("zq9xk"), "{e}");

        // Long enough but not random.
        let e = ApiTokens::from_source(&[(
            "BUYONCE_API_TOKENS",
            "abababababababababababababababababab",
        )])
        .unwrap_err()
        .to_string();
        assert!(e.contains("only 2 distinct characters"), "{e}");
    }
}
