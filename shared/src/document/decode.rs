//! The strict JSON decoder shared by execution documents and message envelopes: size and UTF-8
//! limits first, then serde with the failing field's path, and no trailing bytes.

use super::{DocumentError, FieldError};

/// Strictly decodes JSON bytes into `T`, reporting the failing field's path.
pub(crate) fn decode_strict<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    limit: usize,
) -> Result<T, DocumentError> {
    if bytes.len() > limit {
        return Err(DocumentError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(DocumentError::NotUtf8(e.valid_up_to()));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            DocumentError::Syntax {
                line: inner.line(),
                column: inner.column(),
                message: strip_position(&inner.to_string()),
            }
        } else {
            DocumentError::Field(FieldError {
                path,
                message: strip_position(&inner.to_string()),
            })
        }
    })?;
    // Trailing garbage after the value is a syntax error, not something to ignore.
    de.end().map_err(|e| DocumentError::Syntax {
        line: e.line(),
        column: e.column(),
        message: strip_position(&e.to_string()),
    })?;
    Ok(value)
}

/// serde_json appends " at line X column Y" to messages; the path already says where.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}
