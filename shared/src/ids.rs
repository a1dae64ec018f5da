//! Validated identifiers. Built once at the boundary; the rest of the code never re-checks them.

use std::fmt;

/// Longest execution ID / idempotency key accepted. Long enough for UUIDs with prefixes, short
/// enough to stay readable in logs, tables and AMQP headers.
pub const MAX_ID_LEN: usize = 128;

/// Why an identifier was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_ID_LEN} characters, got {0}")]
    TooLong(usize),
    #[error("may contain only letters, digits and . _ : - (found {0:?})")]
    Charset(char),
    #[error("must begin with a letter or digit (`.`, `..` and `-x` read as paths and options)")]
    Start,
}

fn check_id(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong(s.len()));
    }
    if let Some(bad) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(IdError::Charset(bad));
    }
    if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(IdError::Start);
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Validates `s`: 1–128 characters of `[A-Za-z0-9._:-]`.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                check_id(s)?;
                Ok(Self(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// An execution's ID as submitted by the other system (the outbox primary key).
    ExecutionId
);
string_id!(
    /// The execution's lineage key (its `idempotency_key`): written once, never changed, the
    /// input of every token of the execution.
    LineageKey
);

impl From<ExecutionId> for LineageKey {
    fn from(id: ExecutionId) -> Self {
        LineageKey(id.0)
    }
}

/// A recommendation's position in the submitted list. At most [`RecIndex::MAX`] so it fits a
/// Postgres `INT` and the list length limit.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, serde::Serialize)]
pub struct RecIndex(u32);

impl RecIndex {
    /// Largest index accepted (the execution document allows at most 10,000 recommendations).
    pub const MAX: u32 = 9_999;

    pub fn new(i: u32) -> Result<Self, String> {
        if i > Self::MAX {
            Err(format!("must be at most {}, got {i}", Self::MAX))
        } else {
            Ok(Self(i))
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }

    /// For SQL parameters (`INT`).
    pub fn as_i32(self) -> i32 {
        // Cannot overflow: bounded by MAX at construction.
        self.0 as i32
    }
}

impl fmt::Display for RecIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<'de> serde::Deserialize<'de> for RecIndex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let i = u32::deserialize(d)?;
        Self::new(i).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_ids_are_validated() {
        assert!(ExecutionId::parse("exec-2026-11-28-0001").is_ok());
        assert!(ExecutionId::parse("a.b_c:d-1").is_ok());
        assert_eq!(ExecutionId::parse(""), Err(IdError::Empty));
        assert_eq!(ExecutionId::parse("has space"), Err(IdError::Charset(' ')));
        assert_eq!(
            ExecutionId::parse(&"x".repeat(129)),
            Err(IdError::TooLong(129))
        );
        // `Location: /v1/executions/..` would name the collection, `-x` reads as an option.
        for bad in ["..", ".", ".hidden", "-rf", ":x", "_x"] {
            assert_eq!(ExecutionId::parse(bad), Err(IdError::Start), "{bad}");
        }
        assert_eq!(
            ExecutionId::parse("a\u{0}b"),
            Err(IdError::Charset('\u{0}'))
        );
    }

    #[test]
    fn rec_index_is_bounded() {
        assert!(RecIndex::new(9_999).is_ok());
        assert!(RecIndex::new(10_000).is_err());
    }
}
