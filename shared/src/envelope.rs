//! The per-item AMQP message: one approved recommendation plus the token that makes buying it
//! idempotent. Versioned (`"v": 1`) and decoded strictly: the worker treats the queue as
//! untrusted input and never buys from a message it cannot fully account for.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::document::{decode_strict, DocumentError, FieldError, Recommendation};
use crate::ids::{ExecutionId, LineageKey, RecIndex};
use crate::token::IdempotencyToken;

/// The envelope version this build writes and reads.
pub const ENVELOPE_VERSION: u32 = 1;
/// Largest message body accepted. A real envelope is well under 2 KiB; anything near this is
/// not ours.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A purchase message, version 1.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
#[serde(deny_unknown_fields)]
pub struct PurchaseMessage {
    pub v: u32,
    pub execution_id: ExecutionId,
    pub lineage_key: LineageKey,
    pub rec_index: RecIndex,
    pub token: IdempotencyToken,
    pub recommendation: Recommendation,
}

impl PurchaseMessage {
    /// Builds the message for one item, deriving its token from the lineage key.
    pub fn new(
        execution_id: ExecutionId,
        lineage_key: LineageKey,
        rec_index: RecIndex,
        recommendation: Recommendation,
    ) -> Self {
        let token = IdempotencyToken::derive(lineage_key.as_str(), rec_index.get());
        Self {
            v: ENVELOPE_VERSION,
            execution_id,
            lineage_key,
            rec_index,
            token,
            recommendation,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Strictly decodes a message body. See [`EnvelopeError`] for the failure classes.
    pub fn decode(body: &[u8]) -> Result<Self, EnvelopeError> {
        if body.len() > MAX_MESSAGE_BYTES {
            return Err(EnvelopeError::Oversize {
                size: body.len(),
                limit: MAX_MESSAGE_BYTES,
            });
        }
        // Look at the version first, so a future envelope is reported as such and not as a
        // pile of unknown fields.
        #[derive(Deserialize)]
        struct Probe {
            v: Option<serde_json::Value>,
        }
        if let Ok(Probe { v: Some(v) }) = serde_json::from_slice::<Probe>(body) {
            if v.as_u64() != Some(u64::from(ENVELOPE_VERSION)) {
                return Err(EnvelopeError::UnsupportedVersion(v.to_string()));
            }
        }
        let msg: PurchaseMessage = decode_strict(body, MAX_MESSAGE_BYTES).map_err(|e| match e {
            DocumentError::Field(f)
                if f.path == "recommendation.service" && f.message.contains("unknown variant") =>
            {
                EnvelopeError::UnknownService(f)
            }
            other => EnvelopeError::Malformed(other),
        })?;
        msg.recommendation
            .validate("recommendation")
            .map_err(EnvelopeError::Malformed)?;
        Ok(msg)
    }

    /// The token this message should carry, recomputed from its own lineage key and index.
    pub fn expected_token(&self) -> IdempotencyToken {
        IdempotencyToken::derive(self.lineage_key.as_str(), self.rec_index.get())
    }
}

/// Why a message body was refused. Each maps to a dead-letter reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("message is {size} bytes, the limit is {limit}")]
    Oversize { size: usize, limit: usize },
    #[error("unsupported envelope version {0} (this worker reads v{ENVELOPE_VERSION})")]
    UnsupportedVersion(String),
    #[error("unknown service: {0}")]
    UnknownService(FieldError),
    #[error("malformed message: {0}")]
    Malformed(DocumentError),
}

impl EnvelopeError {
    pub fn reason(&self) -> DeadLetterReason {
        match self {
            EnvelopeError::Oversize { .. } => DeadLetterReason::Oversize,
            EnvelopeError::UnsupportedVersion(_) => DeadLetterReason::UnsupportedVersion,
            EnvelopeError::UnknownService(_) => DeadLetterReason::UnknownService,
            EnvelopeError::Malformed(_) => DeadLetterReason::Malformed,
        }
    }
}

/// Why a message ended in the dead-letter queue; written to the `x-buyonce-reason` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeadLetterReason {
    /// Not JSON, not UTF-8, wrong shape, missing or invalid token, invalid field.
    Malformed,
    UnsupportedVersion,
    Oversize,
    UnknownService,
    /// The token does not match (lineage key, rec index), or not the stored one.
    TokenMismatch,
    /// The recommendation differs from the approved one stored in Postgres.
    RecommendationMismatch,
    /// No such execution/item in Postgres.
    UnknownItem,
    /// Transient failures exhausted `max_attempts`.
    MaxAttempts,
    /// The provider refused for good (validation, unknown offering, auth, funds).
    PermanentFailure,
    /// The offering costs more than the recommendation's `max_upfront_usd`.
    SpendCap,
    /// The broker's `x-delivery-limit` was reached (the worker kept dying on it).
    DeliveryLimit,
    /// Dead-lettered by the broker for another reason (expired, rejected, maxlen).
    Broker,
}

impl DeadLetterReason {
    pub const ALL: [DeadLetterReason; 12] = [
        DeadLetterReason::Malformed,
        DeadLetterReason::UnsupportedVersion,
        DeadLetterReason::Oversize,
        DeadLetterReason::UnknownService,
        DeadLetterReason::TokenMismatch,
        DeadLetterReason::RecommendationMismatch,
        DeadLetterReason::UnknownItem,
        DeadLetterReason::MaxAttempts,
        DeadLetterReason::PermanentFailure,
        DeadLetterReason::SpendCap,
        DeadLetterReason::DeliveryLimit,
        DeadLetterReason::Broker,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Malformed => "malformed",
            DeadLetterReason::UnsupportedVersion => "unsupported-version",
            DeadLetterReason::Oversize => "oversize",
            DeadLetterReason::UnknownService => "unknown-service",
            DeadLetterReason::TokenMismatch => "token-mismatch",
            DeadLetterReason::RecommendationMismatch => "recommendation-mismatch",
            DeadLetterReason::UnknownItem => "unknown-item",
            DeadLetterReason::MaxAttempts => "max-attempts",
            DeadLetterReason::PermanentFailure => "permanent-failure",
            DeadLetterReason::SpendCap => "spend-cap",
            DeadLetterReason::DeliveryLimit => "delivery-limit",
            DeadLetterReason::Broker => "broker",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether replaying the stored message could ever succeed: a message that failed to
    /// decode or to match Postgres would only die again.
    pub fn replayable(self) -> bool {
        !matches!(
            self,
            DeadLetterReason::Malformed
                | DeadLetterReason::UnsupportedVersion
                | DeadLetterReason::Oversize
                | DeadLetterReason::UnknownService
                | DeadLetterReason::TokenMismatch
                | DeadLetterReason::RecommendationMismatch
        )
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::{Payment, Provider, Service, Term};
    use serde_json::json;

    fn message() -> PurchaseMessage {
        PurchaseMessage::new(
            ExecutionId::parse("exec-1").unwrap(),
            LineageKey::parse("exec-1").unwrap(),
            RecIndex::new(0).unwrap(),
            Recommendation {
                provider: Provider::Aws,
                service: Service::Ec2,
                account: "123456789012".into(),
                region: Some("us-east-1".into()),
                resource_type: Some("m5.large".into()),
                count: Some(2),
                term: Term::OneYear,
                payment: Payment::AllUpfront,
                platform: None,
                offering_class: None,
                engine: None,
                multi_az: None,
                plan_type: None,
                commitment_usd_per_hour: None,
                offering_id: None,
                max_upfront_usd: None,
            },
        )
    }

    fn json_of(m: &PurchaseMessage) -> serde_json::Value {
        serde_json::to_value(m).unwrap()
    }

    fn decode_value(v: &serde_json::Value) -> Result<PurchaseMessage, EnvelopeError> {
        PurchaseMessage::decode(&serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn round_trips_and_carries_the_derived_token() {
        let m = message();
        assert_eq!(
            m.token.as_str(),
            "4a667998cddd36583ee6f92b4e1f9fe36aeef04b9676a2007da7c5eefc9e96c0"
        );
        assert_eq!(PurchaseMessage::decode(&m.to_bytes()).unwrap(), m);
    }

    fn malformed_path(v: serde_json::Value) -> String {
        match decode_value(&v) {
            Err(EnvelopeError::Malformed(DocumentError::Field(f))) => f.path,
            Err(EnvelopeError::Malformed(DocumentError::Invalid(errors))) => errors[0].path.clone(),
            other => panic!("expected malformed, got {other:?}"),
        }
    }

    #[test]
    fn rejects_each_malformed_case_with_its_field_path() {
        let mut v = json_of(&message());
        v.as_object_mut().unwrap().remove("token");
        assert_eq!(malformed_path(v), ".");

        let mut v = json_of(&message());
        v["token"] = json!("not-a-token");
        assert_eq!(malformed_path(v), "token");

        let mut v = json_of(&message());
        v["rec_index"] = json!("zero");
        assert_eq!(malformed_path(v), "rec_index");

        let mut v = json_of(&message());
        v["extra"] = json!(1);
        assert_eq!(malformed_path(v), "extra");

        let mut v = json_of(&message());
        v["recommendation"]["term"] = json!("5y");
        assert_eq!(malformed_path(v), "recommendation.term");

        let mut v = json_of(&message());
        v["recommendation"]["payment"] = json!("upfront");
        assert_eq!(malformed_path(v), "recommendation.payment");

        let mut v = json_of(&message());
        v["recommendation"]["count"] = json!(0);
        assert_eq!(malformed_path(v), "recommendation.count");
    }

    #[test]
    fn unknown_service_has_its_own_reason() {
        let mut v = json_of(&message());
        v["recommendation"]["service"] = json!("lambda");
        let e = decode_value(&v).unwrap_err();
        assert_eq!(e.reason(), DeadLetterReason::UnknownService);
    }

    #[test]
    fn other_versions_are_refused_by_version() {
        let mut v = json_of(&message());
        v["v"] = json!(99);
        v["something_new"] = json!(true);
        let e = decode_value(&v).unwrap_err();
        assert_eq!(e, EnvelopeError::UnsupportedVersion("99".into()));
        assert_eq!(e.reason(), DeadLetterReason::UnsupportedVersion);
    }

    #[test]
    fn bytes_that_are_not_a_message() {
        assert_eq!(
            PurchaseMessage::decode(b"\xc3\x28").unwrap_err().reason(),
            DeadLetterReason::Malformed
        );
        assert_eq!(
            PurchaseMessage::decode(b"{not json").unwrap_err().reason(),
            DeadLetterReason::Malformed
        );
        assert_eq!(
            PurchaseMessage::decode(b"[1,2,3]").unwrap_err().reason(),
            DeadLetterReason::Malformed
        );
        let big = vec![b'x'; MAX_MESSAGE_BYTES + 1];
        assert_eq!(
            PurchaseMessage::decode(&big).unwrap_err().reason(),
            DeadLetterReason::Oversize
        );
    }

    #[test]
    fn reasons_round_trip_through_their_names() {
        for r in DeadLetterReason::ALL {
            assert_eq!(DeadLetterReason::parse(r.as_str()), Some(r));
        }
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = PurchaseMessage::decode(&bytes);
        }
    }
}
