//! Go-style durations (`10m`, `2h30m`, `1.5s`, `-5m`), the form operators already use for
//! `PURCHASE_APPROVED_REAP_AFTER` in the system this one replaces.

use std::time::Duration;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {why} (expected Go form like \"90s\", \"10m\", \"2h30m\")")]
pub struct DurationError {
    pub input: String,
    pub why: &'static str,
}

/// Parses a Go `time.ParseDuration` string into signed nanoseconds.
///
/// Accepts an optional sign, then one or more `<number><unit>` pairs with units `ns`, `us`
/// (`µs`), `ms`, `s`, `m`, `h`; numbers may have a fraction. `"0"` alone is zero.
pub fn parse_go_duration(input: &str) -> Result<i128, DurationError> {
    let fail = |why| DurationError {
        input: input.to_owned(),
        why,
    };
    let mut s = input.trim();
    let mut negative = false;
    if let Some(rest) = s.strip_prefix('-') {
        negative = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(fail("empty"));
    }
    let mut total: f64 = 0.0;
    while !s.is_empty() {
        let num_len = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        if num_len == 0 {
            return Err(fail("expected a number"));
        }
        let number: f64 = s[..num_len].parse().map_err(|_| fail("bad number"))?;
        s = &s[num_len..];
        let unit_len = s
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(s.len());
        let nanos_per_unit = match &s[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(fail("missing unit")),
            _ => return Err(fail("unknown unit")),
        };
        s = &s[unit_len..];
        total += number * nanos_per_unit;
    }
    if !total.is_finite() || total > 1e30 {
        return Err(fail("out of range"));
    }
    let nanos = total.round() as i128;
    Ok(if negative { -nanos } else { nanos })
}

/// Parses a non-negative Go duration into a `Duration` (negative → error).
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let nanos = parse_go_duration(input)?;
    if nanos < 0 {
        return Err(DurationError {
            input: input.to_owned(),
            why: "must not be negative",
        });
    }
    Ok(Duration::from_nanos(
        u64::try_from(nanos).unwrap_or(u64::MAX),
    ))
}

/// Formats a duration compactly in the same style: `10m`, `2h30m`, `1.5s`, `250ms`.
pub fn format_duration(d: Duration) -> String {
    let total_ms = d.as_millis();
    if total_ms == 0 {
        return if d.is_zero() {
            "0s".into()
        } else {
            format!("{}µs", d.as_micros())
        };
    }
    if total_ms < 1000 {
        return format!("{total_ms}ms");
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let ms = d.subsec_millis();
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || ms > 0 {
        if ms > 0 {
            let frac = format!("{:03}", ms);
            out.push_str(&format!("{s}.{}s", frac.trim_end_matches('0')));
        } else {
            out.push_str(&format!("{s}s"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_forms() {
        assert_eq!(parse_go_duration("10m"), Ok(600_000_000_000));
        assert_eq!(parse_go_duration("2h30m"), Ok(9_000_000_000_000));
        assert_eq!(parse_go_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_go_duration("250ms"), Ok(250_000_000));
        assert_eq!(parse_go_duration("-5m"), Ok(-300_000_000_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("0s"), Ok(0));
        assert_eq!(parse_go_duration("1h1m1s1ms1us1ns"), Ok(3_661_001_001_001));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "garbage",
            "10",
            "m",
            "5 minutes",
            "1.2.3s",
            "10x",
            "--5m",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} should fail");
        }
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn formats_compactly() {
        assert_eq!(format_duration(Duration::from_secs(600)), "10m");
        assert_eq!(format_duration(Duration::from_secs(9000)), "2h30m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
