//! The idempotency token: the one value that makes at-least-once delivery safe (DESIGN §2).
//!
//! `token = lowercase_hex(SHA-256("<lineage_key>:<rec_index>"))`. The lineage key is written once
//! per execution and never changes, so every retry, re-drive and duplicate submission of the same
//! recommendation carries the same token, and the provider-side guards see the same handle.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Length of a token in hex characters (fits the AWS `ClientToken` limit of 64).
pub const TOKEN_LEN: usize = 64;

/// A validated idempotency token: exactly 64 lowercase hex characters.
///
/// `Debug` and `Display` print the masked form, so a token cannot end up whole in a log line by
/// accident; [`IdempotencyToken::as_str`] is the deliberate way to get the full value.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyToken(String);

/// Why a string is not a valid token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token must be {TOKEN_LEN} characters, got {0}")]
    Length(usize),
    #[error("token must be lowercase hex (0-9, a-f)")]
    Charset,
}

impl IdempotencyToken {
    /// Derives the token of recommendation `rec_index` of the execution whose lineage key is
    /// `lineage_key`.
    pub fn derive(lineage_key: &str, rec_index: u32) -> Self {
        let digest = Sha256::digest(format!("{lineage_key}:{rec_index}").as_bytes());
        Self(hex::encode(digest))
    }

    /// Parses a token received from outside (a message, a database row).
    pub fn parse(s: &str) -> Result<Self, TokenError> {
        if s.len() != TOKEN_LEN {
            return Err(TokenError::Length(s.len()));
        }
        if !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(TokenError::Charset);
        }
        Ok(Self(s.to_owned()))
    }

    /// The whole token. Only for provider calls, storage and the operator `token` command —
    /// never for logs.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The log-safe form: first 8 characters and `...`.
    pub fn mask(&self) -> String {
        mask(&self.0)
    }

    /// The first 32 hex characters formatted as a GUID (8-4-4-4-12), for APIs that want one.
    pub fn guid(&self) -> String {
        let h = &self.0;
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    /// A provider reservation ID: `prefix` + the first 40 hex characters, restricted to
    /// `[A-Za-z0-9-]` and cut to `max_len`.
    ///
    /// The prefix is sanitised too, so a caller cannot produce an ID the provider would reject.
    /// With `max_len` below `prefix.len() + 40` the hex part is shortened, which keeps the ID
    /// unique only as long as enough hex characters remain; callers pass the service's limit.
    pub fn reservation_id(&self, prefix: &str, max_len: usize) -> String {
        let mut id: String = prefix
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        id.push_str(&self.0[..40]);
        id.truncate(max_len);
        id
    }
}

/// Masks any token-like string for logs: first 8 chars + `...`; empty → `(none)`;
/// 8 characters or fewer → `(redacted)` (showing them would show the whole value).
pub fn mask(value: &str) -> String {
    if value.is_empty() {
        "(none)".to_owned()
    } else if value.chars().count() <= 8 {
        "(redacted)".to_owned()
    } else {
        let prefix: String = value.chars().take(8).collect();
        format!("{prefix}...")
    }
}

impl fmt::Debug for IdempotencyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyToken({})", self.mask())
    }
}

impl fmt::Display for IdempotencyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.mask())
    }
}

impl FromStr for IdempotencyToken {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for IdempotencyToken {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for IdempotencyToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn derives_the_design_test_vectors() {
        let cases = [
            (
                "exec-1",
                0,
                "4a667998cddd36583ee6f92b4e1f9fe36aeef04b9676a2007da7c5eefc9e96c0",
            ),
            (
                "exec-1",
                1,
                "9833ac0467d57e784ed47c33d1732fedc8bc37122b8f09832587954817cebb47",
            ),
            (
                "exec-abc-123",
                2,
                "166745ca1a281fde7c65ea20730938bd9cd942204b5940108fb8f7d2319db347",
            ),
        ];
        for (lineage, index, expected) in cases {
            assert_eq!(IdempotencyToken::derive(lineage, index).as_str(), expected);
        }
    }

    #[test]
    fn mask_follows_the_design_rules() {
        assert_eq!(mask(""), "(none)");
        assert_eq!(mask("abcdefgh"), "(redacted)");
        assert_eq!(mask("abc"), "(redacted)");
        assert_eq!(mask("abcdefghi"), "abcdefgh...");
        let token = IdempotencyToken::derive("exec-1", 0);
        assert_eq!(token.mask(), "4a667998...");
        assert_eq!(format!("{token}"), "4a667998...");
        assert_eq!(format!("{token:?}"), "IdempotencyToken(4a667998...)");
    }

    #[test]
    fn guid_of_the_first_vector() {
        let token = IdempotencyToken::derive("exec-1", 0);
        assert_eq!(token.guid(), "4a667998-cddd-3658-3ee6-f92b4e1f9fe3");
    }

    #[test]
    fn reservation_id_is_prefix_plus_40_hex() {
        let token = IdempotencyToken::derive("exec-1", 0);
        assert_eq!(
            token.reservation_id("rds-", 255),
            "rds-4a667998cddd36583ee6f92b4e1f9fe36aeef04b"
        );
        assert_eq!(token.reservation_id("bad_prefix!", 255).len(), 9 + 40);
        assert_eq!(token.reservation_id("rds-", 20).len(), 20);
    }

    #[test]
    fn parse_rejects_wrong_length_and_uppercase() {
        let good = IdempotencyToken::derive("x", 1);
        assert_eq!(IdempotencyToken::parse(good.as_str()), Ok(good.clone()));
        assert_eq!(IdempotencyToken::parse("abc"), Err(TokenError::Length(3)));
        let upper = good.as_str().to_uppercase();
        assert_eq!(IdempotencyToken::parse(&upper), Err(TokenError::Charset));
    }

    proptest! {
        #[test]
        fn derivation_is_deterministic_and_64_lowercase_hex(key in ".{0,80}", index in any::<u32>()) {
            let a = IdempotencyToken::derive(&key, index);
            let b = IdempotencyToken::derive(&key, index);
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(a.as_str().len(), 64);
            prop_assert!(a.as_str().bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
            prop_assert!(IdempotencyToken::parse(a.as_str()).is_ok());
        }

        #[test]
        fn different_indexes_give_different_tokens(key in "[a-z0-9-]{1,40}", i in 0u32..10_000, j in 0u32..10_000) {
            prop_assume!(i != j);
            prop_assert_ne!(IdempotencyToken::derive(&key, i), IdempotencyToken::derive(&key, j));
        }

        #[test]
        fn guid_has_the_8_4_4_4_12_shape(key in ".{0,40}", index in any::<u32>()) {
            let guid = IdempotencyToken::derive(&key, index).guid();
            let parts: Vec<&str> = guid.split('-').collect();
            prop_assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), vec![8, 4, 4, 4, 12]);
            prop_assert!(guid.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        }

        #[test]
        fn reservation_id_charset_and_length(key in ".{0,40}", index in any::<u32>(), prefix in ".{0,12}", max in 1usize..300) {
            let id = IdempotencyToken::derive(&key, index).reservation_id(&prefix, max);
            prop_assert!(id.len() <= max);
            prop_assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        }

        #[test]
        fn mask_never_shows_more_than_8_chars(value in ".{0,100}") {
            let masked = mask(&value);
            prop_assert!(masked.chars().count() <= 11);
        }
    }
}
