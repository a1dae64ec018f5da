//! Where configuration values come from: the process environment or a map in tests, plain
//! variables with their defaults, and secrets, which may instead come from a file named by
//! `<VAR>_FILE` (the Docker/Kubernetes secrets convention; setting both forms is an error) and
//! never print themselves.

use std::collections::BTreeMap;
use std::fmt;

use super::{ConfigError, VarSpec};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CommonConfig;

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
    fn secret_debug_is_redacted() {
        assert_eq!(format!("{:?}", Secret::new("x")), "(redacted)");
    }
}
