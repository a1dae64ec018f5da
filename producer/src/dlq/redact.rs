//! Token redaction: the dead-letter table keeps messages as they arrived, foreign and
//! malformed ones too, so whatever is shown of them (errors, headers, bodies) passes through
//! here first.

use buyonce_shared::token::mask;
use serde_json::Value;

/// Masks every run of 64 or more hex digits (a token, wherever a foreign or malformed message
/// put it): only masked tokens leave buyonce.
pub fn redact_tokens(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= buyonce_shared::token::TOKEN_LEN {
            out.push_str(&mask(run));
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_hexdigit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

pub(super) fn redact_json(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(redact_tokens(s)),
        Value::Array(a) => Value::Array(a.iter().map(redact_json).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), redact_json(v))).collect())
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_masked_wherever_they_appear() {
        let token = "4a667998cddd36583ee6f92b4e1f9fe36aeef04b9676a2007da7c5eefc9e96c0";
        let text = format!("{{\"token\":\"{token}\",\"short\":\"abc123\"}}");
        let red = redact_tokens(&text);
        assert!(!red.contains(token), "{red}");
        assert!(red.contains("4a667998..."), "{red}");
        assert!(red.contains("abc123"), "{red}");
    }
}
