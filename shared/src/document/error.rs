//! What a rejected document reports: every problem as a field path and a message, so the
//! submitting system's operator (and the API's JSON response) can point at the field.

use std::fmt;

use serde::Serialize;

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON path of the field, e.g. `recommendations[2].count` (`.` for the document itself).
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a document (or a message envelope) was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DocumentError {
    #[error("document is {size} bytes, the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("not valid UTF-8 at byte {0}")]
    NotUtf8(usize),
    #[error("not valid JSON (line {line}, column {column}): {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// Wrong type, unknown field, missing field or unknown enum value.
    #[error("{0}")]
    Field(FieldError),
    /// Well-formed but semantically wrong; every problem found is listed.
    #[error("{}", join_errors(.0))]
    Invalid(Vec<FieldError>),
}

fn join_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl DocumentError {
    /// All field errors, for API responses (`[]` for syntax/size errors).
    pub fn field_errors(&self) -> Vec<FieldError> {
        match self {
            DocumentError::Field(e) => vec![e.clone()],
            DocumentError::Invalid(errors) => errors.clone(),
            _ => Vec::new(),
        }
    }
}
