//! Parsers from a catalogued variable to a typed value, and the two errors every check builds
//! ([`invalid`], [`missing`]): each reads the variable (or its default) and, when the value
//! will not do, names the variable, the value (`(redacted)` for a secret) and the expected form,
//! so every crate fails alike without building a [`ConfigError`] by hand.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use url::Url;

use super::{get, get_or_default, ConfigError, EnvSource, VarSpec};
use crate::duration;

/// `spec`'s value will not do: says why and what it expects; a secret's value is not shown.
pub fn invalid(spec: &VarSpec, value: &str, problem: impl fmt::Display) -> ConfigError {
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

/// `spec` is unset and has no default.
pub fn missing(spec: &VarSpec) -> ConfigError {
    ConfigError::Missing {
        var: spec.name.to_owned(),
        expected: spec.expected.to_owned(),
    }
}

/// The variable or its default; [`missing`] when it has neither.
fn required(env: &dyn EnvSource, spec: &VarSpec) -> Result<String, ConfigError> {
    get_or_default(env, spec).ok_or_else(|| missing(spec))
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
    let raw = required(env, spec)?;
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

/// Parses one of a fixed set of words, exactly as written (`pretty` or `json`); any other
/// value is refused as an "unknown {what}".
pub fn parse_choice<T: Clone>(
    env: &dyn EnvSource,
    spec: &VarSpec,
    what: &str,
    choices: &[(&str, T)],
) -> Result<T, ConfigError> {
    let raw = required(env, spec)?;
    choices
        .iter()
        .find(|(word, _)| *word == raw)
        .map(|(_, value)| value.clone())
        .ok_or_else(|| invalid(spec, &raw, format_args!("unknown {what}")))
}

/// Parses a non-negative Go-style duration; zero is allowed (a shutdown grace of none).
pub fn parse_duration(env: &dyn EnvSource, spec: &VarSpec) -> Result<Duration, ConfigError> {
    let raw = required(env, spec)?;
    duration_value(spec, &raw)
}

/// Parses a positive Go-style duration.
pub fn parse_positive_duration(
    env: &dyn EnvSource,
    spec: &VarSpec,
) -> Result<Duration, ConfigError> {
    let raw = required(env, spec)?;
    let d = duration_value(spec, &raw)?;
    if d.is_zero() {
        return Err(invalid(spec, &raw, "must be greater than zero"));
    }
    Ok(d)
}

/// Parses a Go-style duration from `min` to `max`; `0` too when `zero_ok` (then it means "off").
pub fn parse_duration_between(
    env: &dyn EnvSource,
    spec: &VarSpec,
    (min, max): (Duration, Duration),
    zero_ok: bool,
) -> Result<Duration, ConfigError> {
    let raw = required(env, spec)?;
    let d = duration_value(spec, &raw)?;
    if (d.is_zero() && zero_ok) || (min..=max).contains(&d) {
        return Ok(d);
    }
    let range = format!(
        "must be from {} to {}",
        duration::format_duration(min),
        duration::format_duration(max)
    );
    Err(invalid(
        spec,
        &raw,
        if zero_ok {
            format!("{range}, or 0")
        } else {
            range
        },
    ))
}

fn duration_value(spec: &VarSpec, raw: &str) -> Result<Duration, ConfigError> {
    duration::parse_duration(raw).map_err(|e| invalid(spec, raw, e.why))
}

/// Parses a comma-separated list of increasing positive durations.
pub fn parse_duration_list(
    env: &dyn EnvSource,
    spec: &VarSpec,
) -> Result<Vec<Duration>, ConfigError> {
    let raw = get_or_default(env, spec).unwrap_or_default();
    let mut out = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let d = duration::parse_duration(part).map_err(|e| invalid(spec, &raw, e.why))?;
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

/// Parses an `ip:port` listen address. `default` is the reading binary's own, for a variable
/// such as `BUYONCE_LISTEN` whose default depends on who reads it (the catalog's comes first).
pub fn parse_socket_addr(
    env: &dyn EnvSource,
    spec: &VarSpec,
    default: &str,
) -> Result<SocketAddr, ConfigError> {
    let raw = get_or_default(env, spec).unwrap_or_else(|| default.to_owned());
    raw.parse().map_err(|e| invalid(spec, &raw, e))
}

/// Parses an absolute URL; what scheme or host it may have is the caller's rule.
pub fn parse_url(env: &dyn EnvSource, spec: &VarSpec) -> Result<Url, ConfigError> {
    let raw = required(env, spec)?;
    Url::parse(&raw).map_err(|e| invalid(spec, &raw, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::vars;

    const NO_ENV: [(&str, &str); 0] = [];

    #[test]
    fn invalid_names_the_variable_and_the_form_but_never_a_secret() {
        assert_eq!(
            invalid(&vars::TAG_KEY, "", "length").to_string(),
            "BUYONCE_TAG_KEY=\"\" is invalid: length; expected 1-128 characters"
        );
        let e = invalid(&vars::API_TOKENS, "hunter2", "too short").to_string();
        assert!(
            e.starts_with("BUYONCE_API_TOKENS=(redacted) is invalid: too short"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn missing_names_the_variable_and_the_form() {
        assert_eq!(
            missing(&vars::AZURE_TENANT_ID).to_string(),
            "AZURE_TENANT_ID is required: a tenant GUID or domain"
        );
    }

    #[test]
    fn a_rule_of_the_reader_can_say_what_it_expects_instead() {
        let e = invalid(
            &vars::DATABASE_POOL_SIZE,
            "1",
            "a worker needs at least 2 connections",
        )
        .expecting("an integer from 2 to 1000 for a worker");
        assert_eq!(
            e.to_string(),
            "BUYONCE_DATABASE_POOL_SIZE=\"1\" is invalid: a worker needs at least 2 connections; \
             expected an integer from 2 to 1000 for a worker"
        );
        let e = missing(&vars::AZURE_TENANT_ID).expecting("a tenant (required by emulator)");
        assert_eq!(
            e.to_string(),
            "AZURE_TENANT_ID is required: a tenant (required by emulator)"
        );
    }

    #[test]
    fn choices_are_matched_exactly() {
        let formats = [("pretty", 1), ("json", 2)];
        let pick = |env: &dyn EnvSource| parse_choice(env, &vars::LOG_FORMAT, "format", &formats);
        assert_eq!(pick(&NO_ENV), Ok(1));
        assert_eq!(pick(&[("BUYONCE_LOG_FORMAT", "json")]), Ok(2));
        assert_eq!(
            pick(&[("BUYONCE_LOG_FORMAT", "JSON")])
                .unwrap_err()
                .to_string(),
            "BUYONCE_LOG_FORMAT=\"JSON\" is invalid: unknown format; expected pretty or json"
        );
    }

    #[test]
    fn a_duration_may_be_zero_unless_it_must_be_positive() {
        assert_eq!(
            parse_duration(&NO_ENV, &vars::SHUTDOWN_GRACE),
            Ok(Duration::from_secs(25))
        );
        let zero = [("BUYONCE_SHUTDOWN_GRACE", "0s")];
        assert_eq!(
            parse_duration(&zero, &vars::SHUTDOWN_GRACE),
            Ok(Duration::ZERO)
        );
        let zero = [("BUYONCE_HEARTBEAT_INTERVAL", "0s")];
        let e = parse_positive_duration(&zero, &vars::HEARTBEAT_INTERVAL).unwrap_err();
        assert_eq!(
            e.to_string(),
            "BUYONCE_HEARTBEAT_INTERVAL=\"0s\" is invalid: must be greater than zero; \
             expected a positive Go duration"
        );
        let e = parse_duration(&[("BUYONCE_SHUTDOWN_GRACE", "soon")], &vars::SHUTDOWN_GRACE)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "BUYONCE_SHUTDOWN_GRACE=\"soon\" is invalid: expected a number; expected a Go duration"
        );
    }

    #[test]
    fn a_listen_address_falls_back_to_the_readers_default() {
        let addr = parse_socket_addr(&NO_ENV, &vars::LISTEN, "127.0.0.1:9101").unwrap();
        assert_eq!(addr.to_string(), "127.0.0.1:9101");
        let env = [("BUYONCE_LISTEN", "0.0.0.0:0")];
        let addr = parse_socket_addr(&env, &vars::LISTEN, "127.0.0.1:9101").unwrap();
        assert_eq!(addr.to_string(), "0.0.0.0:0");
        let e = parse_socket_addr(
            &[("BUYONCE_LISTEN", "nowhere")],
            &vars::LISTEN,
            "127.0.0.1:1",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("BUYONCE_LISTEN=\"nowhere\" is invalid: "),
            "{e}"
        );
        assert!(
            e.ends_with(&format!("; expected {}", vars::LISTEN.expected)),
            "{e}"
        );
    }

    #[test]
    fn a_url_must_parse() {
        let url = parse_url(&NO_ENV, &vars::AZURE_RESOURCE_MANAGER_URL).unwrap();
        assert_eq!(url.as_str(), "https://management.azure.com/");
        let env = [(
            "BUYONCE_AZURE_RESOURCE_MANAGER_URL",
            "http://127.0.0.1:4566",
        )];
        let url = parse_url(&env, &vars::AZURE_RESOURCE_MANAGER_URL).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1:4566/");
        let env = [("BUYONCE_AZURE_RESOURCE_MANAGER_URL", "management.azure.com")];
        let e = parse_url(&env, &vars::AZURE_RESOURCE_MANAGER_URL)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "BUYONCE_AZURE_RESOURCE_MANAGER_URL=\"management.azure.com\" is invalid: relative URL \
             without a base; expected an https:// URL (http:// only for a loopback emulator)"
        );
    }
}
