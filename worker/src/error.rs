//! Why a purchase did not end in a commitment ([`PurchaseError`]), in one place below every
//! module that produces one: the provider clients, the executors, the offering locks and the
//! handler's purchase scope all import it from here, and the handler maps it to an outcome.

use chrono::{DateTime, Utc};

/// Why a permanent failure is permanent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermanentKind {
    /// The provider rejected the request as invalid.
    Validation,
    /// No offering (or several) match the recommendation.
    UnknownOffering,
    /// The offering costs more than `max_upfront_usd`.
    SpendCap,
    /// Credentials refused or for the wrong account.
    Auth,
    /// Insufficient funds / billing refused.
    Funds,
    /// The commitment carrying the token exists but is no longer live (payment failed,
    /// retired, returned, cancelled): the token's handle is used up.
    NotLive,
}

/// Why a purchase did not end in a commitment. The handler maps these to retry / dead letter.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PurchaseError {
    /// May succeed later (throttling, failed guard lookup, lock busy, a refused call): nothing
    /// was bought by this attempt's purchase call, or none was made.
    #[error("transient: {0}")]
    Transient(String),
    /// The purchase call's outcome is unknown (timeout, 5xx, dropped connection, a purchase
    /// still provisioning): it may have bought. The next attempt starts with the guard and,
    /// finding nothing, waits for the settle window before it could buy again.
    #[error("outcome unknown: {0}")]
    Ambiguous(String),
    /// An earlier attempt's purchase may still become visible: nothing found yet, so wait
    /// until `until` and look again; do not count an attempt.
    #[error("settling until {}: {message}", until.to_rfc3339())]
    Settling {
        until: DateTime<Utc>,
        message: String,
    },
    /// Will not succeed without a change; nothing was bought.
    #[error("permanent ({kind:?}): {message}")]
    Permanent {
        kind: PermanentKind,
        message: String,
    },
    /// The daily budget is exhausted: wait, do not count an attempt.
    #[error("over budget: {0}")]
    OverBudget(String),
    /// Dry run: everything resolved, nothing bought.
    #[error("dry run: {0}")]
    DryRun(String),
    /// The fleet was paused between the claim and the buy call: wait, do not count an attempt.
    #[error("fleet paused")]
    Paused,
    /// The offering lock could not be confirmed right before the buy call (its Postgres session
    /// is gone or did not answer): nothing bought; retry without counting an attempt, so that
    /// repeated partitions do not use up an item's attempts.
    #[error("fenced: {0}")]
    Fenced(String),
}

impl PurchaseError {
    pub fn transient(msg: impl Into<String>) -> Self {
        PurchaseError::Transient(msg.into())
    }
    pub fn permanent(kind: PermanentKind, msg: impl Into<String>) -> Self {
        PurchaseError::Permanent {
            kind,
            message: msg.into(),
        }
    }
    pub fn ambiguous(msg: impl Into<String>) -> Self {
        PurchaseError::Ambiguous(msg.into())
    }

    /// The message without the variant's prefix.
    pub fn message(&self) -> String {
        match self {
            PurchaseError::Transient(m)
            | PurchaseError::Ambiguous(m)
            | PurchaseError::OverBudget(m)
            | PurchaseError::DryRun(m)
            | PurchaseError::Permanent { message: m, .. }
            | PurchaseError::Fenced(m)
            | PurchaseError::Settling { message: m, .. } => m.clone(),
            PurchaseError::Paused => "fleet paused".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_keeps_the_variant_prefix_and_message_drops_it() {
        let e = PurchaseError::permanent(PermanentKind::SpendCap, "too dear");
        assert_eq!(e.to_string(), "permanent (SpendCap): too dear");
        assert_eq!(e.message(), "too dear");
        let until = DateTime::parse_from_rfc3339("2026-12-02T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let e = PurchaseError::Settling {
            until,
            message: "not visible yet".into(),
        };
        assert_eq!(
            e.to_string(),
            "settling until 2026-12-02T10:00:00+00:00: not visible yet"
        );
        assert_eq!(PurchaseError::Paused.to_string(), "fleet paused");
        assert_eq!(
            PurchaseError::ambiguous("timeout").to_string(),
            "outcome unknown: timeout"
        );
    }
}
