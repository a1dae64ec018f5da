//! Message headers buyonce writes, and readers for the ones the broker writes (`x-death`).

use chrono::{DateTime, Utc};
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::{json, Map, Value};

/// Why a message was dead-lettered ([`crate::envelope::DeadLetterReason`]).
pub const REASON: &str = "x-buyonce-reason";
/// The error text that goes with the reason.
pub const ERROR: &str = "x-buyonce-error";
/// Unique ID of one dead-lettering by a worker (dedupes the archive).
pub const DEAD_LETTER_ID: &str = "x-buyonce-dead-letter-id";
/// When the worker dead-lettered it (RFC 3339).
pub const DEAD_AT: &str = "x-buyonce-dead-at";
pub const EXECUTION_ID: &str = "x-buyonce-execution-id";
pub const REC_INDEX: &str = "x-buyonce-rec-index";
pub const SERVICE: &str = "x-buyonce-service";
/// Masked token, for people reading the queue in the management UI.
pub const TOKEN_MASKED: &str = "x-buyonce-token";
/// Why a message sits in a retry queue (`retry`, `paused`, `owned-elsewhere`, `budget`).
pub const RETRY_REASON: &str = "x-buyonce-retry-reason";

pub fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

/// Reads a header as text, whatever string-ish type it was sent as.
pub fn text(headers: Option<&FieldTable>, key: &str) -> Option<String> {
    headers?.inner().get(key).and_then(value_text)
}

fn value_text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        AMQPValue::ByteArray(b) => Some(String::from_utf8_lossy(b.as_slice()).into_owned()),
        _ => None,
    }
}

/// Converts an AMQP value to JSON for storage and display (bytes as lossy UTF-8).
pub fn to_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(i) => json!(i),
        AMQPValue::ShortShortUInt(i) => json!(i),
        AMQPValue::ShortInt(i) => json!(i),
        AMQPValue::ShortUInt(i) => json!(i),
        AMQPValue::LongInt(i) => json!(i),
        AMQPValue::LongUInt(i) => json!(i),
        AMQPValue::LongLongInt(i) => json!(i),
        AMQPValue::Float(f) => json!(f),
        AMQPValue::Double(f) => json!(f),
        AMQPValue::DecimalValue(d) => json!(format!("{d:?}")),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(to_json).collect()),
        AMQPValue::Timestamp(t) => json!(DateTime::<Utc>::from_timestamp(*t as i64, 0)
            .map(|d| d.to_rfc3339())
            .unwrap_or_else(|| t.to_string())),
        AMQPValue::FieldTable(t) => table_to_json(t),
        AMQPValue::ByteArray(b) => json!(String::from_utf8_lossy(b.as_slice())),
        AMQPValue::Void => Value::Null,
    }
}

pub fn table_to_json(t: &FieldTable) -> Value {
    let mut map = Map::new();
    for (k, v) in t.inner() {
        map.insert(k.as_str().to_owned(), to_json(v));
    }
    Value::Object(map)
}

/// One entry of the broker's `x-death` header.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Death {
    pub queue: String,
    pub reason: String,
    pub count: i64,
    pub time: Option<DateTime<Utc>>,
}

/// Parses `x-death` (newest first, as RabbitMQ writes it). Missing or malformed → empty.
pub fn deaths(headers: Option<&FieldTable>) -> Vec<Death> {
    let Some(AMQPValue::FieldArray(entries)) = headers.and_then(|h| h.inner().get("x-death"))
    else {
        return Vec::new();
    };
    entries
        .as_slice()
        .iter()
        .filter_map(|e| match e {
            AMQPValue::FieldTable(t) => {
                let get = |k: &str| t.inner().get(k);
                Some(Death {
                    queue: get("queue").and_then(value_text).unwrap_or_default(),
                    reason: get("reason").and_then(value_text).unwrap_or_default(),
                    count: match get("count") {
                        Some(AMQPValue::LongLongInt(n)) => *n,
                        Some(AMQPValue::LongInt(n)) => i64::from(*n),
                        Some(AMQPValue::LongUInt(n)) => i64::from(*n),
                        _ => 0,
                    },
                    time: match get("time") {
                        Some(AMQPValue::Timestamp(t)) => {
                            DateTime::<Utc>::from_timestamp(*t as i64, 0)
                        }
                        _ => None,
                    },
                })
            }
            _ => None,
        })
        .collect()
}
