//! Reading a query-protocol request (EC2 query and awsQuery): form parameters with their list
//! and structure encodings, and the parameters several services share (`MaxRecords`,
//! `Duration`, EC2 filter wildcards).

use std::collections::BTreeMap;

use super::error::{invalid_parameter, ApiError};

/// The decoded parameters of a query-protocol request (form body or URL query).
#[derive(Debug, Clone, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Decodes `application/x-www-form-urlencoded` bytes.
    pub fn parse(bytes: &[u8]) -> Self {
        Self {
            pairs: form_urlencoded::parse(bytes).into_owned().collect(),
        }
    }

    /// The first value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key` or a `MissingParameter`-style error built by `missing`.
    pub fn require(
        &self,
        key: &str,
        missing: impl FnOnce(&str) -> ApiError,
    ) -> Result<&str, ApiError> {
        match self.get(key) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(missing(key)),
        }
    }

    /// Members of a list serialized as `{prefix}.1`, `{prefix}.2`, … in index order.
    pub fn list(&self, prefix: &str) -> Vec<String> {
        let mut items: BTreeMap<u32, String> = BTreeMap::new();
        for (k, v) in &self.pairs {
            if let Some(rest) = k.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) {
                if let Ok(index) = rest.parse::<u32>() {
                    items.insert(index, v.clone());
                }
            }
        }
        items.into_values().collect()
    }

    /// Structures of a list serialized as `{prefix}.N.{member}`: one `Params` per index, with the
    /// `{prefix}.N.` part stripped from the keys.
    pub fn structs(&self, prefix: &str) -> Vec<Params> {
        let mut items: BTreeMap<u32, Params> = BTreeMap::new();
        for (k, v) in &self.pairs {
            let Some(rest) = k.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) else {
                continue;
            };
            let Some((index, member)) = rest.split_once('.') else {
                continue;
            };
            if let Ok(index) = index.parse::<u32>() {
                items
                    .entry(index)
                    .or_default()
                    .pairs
                    .push((member.to_string(), v.clone()));
            }
        }
        items.into_values().collect()
    }

    /// Parses an optional integer, reporting a bad value through `invalid`.
    pub fn int(
        &self,
        key: &str,
        invalid: impl FnOnce(String) -> ApiError,
    ) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.trim().parse::<i64>().map(Some).map_err(|_| {
                invalid(format!(
                    "Invalid value '{v}' for {key}: an integer is required"
                ))
            }),
        }
    }

    /// Parses an optional boolean (`true`/`false`, case-insensitive).
    pub fn bool(
        &self,
        key: &str,
        invalid: impl FnOnce(String) -> ApiError,
    ) -> Result<Option<bool>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(invalid(format!(
                "Invalid value '{v}' for {key}: a boolean is required"
            ))),
        }
    }
}

/// Matches `value` against an EC2-style filter pattern, where `*` matches any run of characters
/// and `?` exactly one.
pub fn wildcard_match(pattern: &str, value: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    let (mut pi, mut vi) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == v[vi]) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = vi;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            vi = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Parses a reservation `Duration` filter. The documented valid values are `1 | 3 | 31536000 |
/// 94608000` (years or seconds); anything else is the caller's validation error.
pub fn duration_param(value: &str) -> Option<i64> {
    use crate::catalog::{ONE_YEAR, THREE_YEARS};
    match value.trim() {
        "1" => Some(ONE_YEAR),
        "3" => Some(THREE_YEARS),
        v => v
            .parse::<i64>()
            .ok()
            .filter(|s| *s == ONE_YEAR || *s == THREE_YEARS),
    }
}

/// awsQuery `MaxRecords`: default 100, allowed 20–100 (RDS, ElastiCache, Redshift).
pub fn max_records(params: &Params) -> Result<usize, ApiError> {
    let n = params.int("MaxRecords", invalid_parameter)?.unwrap_or(100);
    if !(20..=100).contains(&n) {
        return Err(invalid_parameter(format!(
            "Invalid value {n} for MaxRecords. Must be between 20 and 100"
        )));
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_structs_follow_the_index_not_the_order() {
        let p = Params::parse(
            b"Filter.2.Name=state&Filter.1.Name=tag%3Ak&Filter.1.Value.1=v&Id.2=b&Id.1=a",
        );
        assert_eq!(p.list("Id"), vec!["a", "b"]);
        let filters = p.structs("Filter");
        assert_eq!(filters[0].get("Name"), Some("tag:k"));
        assert_eq!(filters[0].list("Value"), vec!["v"]);
        assert_eq!(filters[1].get("Name"), Some("state"));
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("m5.*", "m5.large"));
        assert!(wildcard_match("?5.large", "m5.large"));
        assert!(!wildcard_match("m5", "m5.large"));
        assert!(wildcard_match("*", ""));
    }
}
