//! Parsers from a catalogued variable to a typed value: each reads the variable (or its
//! default) and, when the value will not do, names the variable, the value (`(redacted)` for a
//! secret) and the expected form.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::{get, get_or_default, ConfigError, EnvSource, VarSpec};
use crate::duration::parse_duration;

pub(super) fn invalid(spec: &VarSpec, value: &str, problem: impl fmt::Display) -> ConfigError {
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

pub(super) fn missing(spec: &VarSpec) -> ConfigError {
    ConfigError::Missing {
        var: spec.name.to_owned(),
        expected: spec.expected.to_owned(),
    }
}
