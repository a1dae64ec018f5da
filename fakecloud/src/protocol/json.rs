//! Reading a JSON request body (awsJson1_1 and restJson1): typed members that report a wrong
//! type as the service's validation error.

use super::error::ApiError;

/// The top-level object of a JSON request body, with typed accessors that report a wrong type
/// as the service's validation error instead of panicking.
#[derive(Debug, Clone)]
pub struct JsonInput {
    map: serde_json::Map<String, serde_json::Value>,
    invalid: fn(String) -> ApiError,
}

impl JsonInput {
    /// Parses `body` (empty = `{}`); a non-object or malformed body is `SerializationException`.
    pub fn parse(body: &[u8], invalid: fn(String) -> ApiError) -> Result<Self, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self {
                map: serde_json::Map::new(),
                invalid,
            });
        }
        match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Object(map)) => Ok(Self { map, invalid }),
            _ => Err(ApiError::bad_request(
                "SerializationException",
                "Start of structure or map found where not expected.",
            )),
        }
    }

    /// The raw value.
    pub fn value(&self, key: &str) -> Option<&serde_json::Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// An optional string member.
    pub fn string(&self, key: &str) -> Result<Option<&str>, ApiError> {
        match self.value(key) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err((self.invalid)(format!("{key} must be a string"))),
        }
    }

    /// An optional integer member.
    pub fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.value(key) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| (self.invalid)(format!("{key} must be an integer"))),
        }
    }

    /// An optional list of strings.
    pub fn strings(&self, key: &str) -> Result<Vec<String>, ApiError> {
        match self.value(key) {
            None => Ok(Vec::new()),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| (self.invalid)(format!("{key} must hold strings")))
                })
                .collect(),
            Some(_) => Err((self.invalid)(format!("{key} must be a list"))),
        }
    }

    /// Reports `message` as this service's validation error.
    pub fn invalid(&self, message: impl Into<String>) -> ApiError {
        (self.invalid)(message.into())
    }
}
