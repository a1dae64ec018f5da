//! How pessimistic fakecloud is about what the providers leave undocumented.
//!
//! The friendly default answers at once and consistently. Real providers are allowed to do
//! worse — nothing public promises otherwise (see `docs/provider-semantics.md`) — and each knob
//! here makes fakecloud do one such thing, so the worker's suites can show that buyonce still
//! buys exactly once when the provider behaves the other way:
//!
//! * new commitments stay invisible to describe / list / get calls for a while (eventual
//!   consistency), and EC2's `CreateTags` does not find a fresh RI yet;
//! * Savings Plans forget a `clientToken` after a while (the model documents no retention);
//! * a purchase goes through and its response is lost, on every purchase API;
//! * some purchases end `payment-failed` (AWS) / `BillingFailed` (Azure);
//! * OpenSearch accepts a second reservation under a name already used;
//! * AWS answers two results per page, whatever the client asks for;
//! * Azure answers a re-PUT of an order ID that was already bought with the price-session
//!   timeout instead of `ReservationOrderIdAlreadyExists`, answers the purchase with 200 while
//!   the order is still being created, and refuses names ARM might normalise.
//!
//! [`Realism::strict`] turns all of them on; per-test values are plain struct updates.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The realism knobs (JSON of `PUT /_fakecloud/realism`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Realism {
    /// A new commitment is invisible to lookups for this long after its purchase.
    #[serde(rename = "visibility_delay_ms", with = "millis")]
    pub visibility_delay: Duration,
    /// Savings Plans forget a client token this long after its plan was created (`None`:
    /// never).
    #[serde(rename = "client_token_ttl_ms", with = "opt_millis")]
    pub client_token_ttl: Option<Duration>,
    /// Chance that a purchase goes through and its response is lost (a 5xx or a dropped
    /// connection, alternately).
    pub lost_response_probability: f64,
    /// Chance that a purchase ends `payment-failed` / `BillingFailed`.
    pub payment_failed_probability: f64,
    /// OpenSearch does not refuse a reservation name already in use.
    pub opensearch_duplicate_names: bool,
    /// Azure answers a re-PUT of an already bought order ID with "Session timed out - Call
    /// CalculatePrice again" (HTTP 400) instead of `ReservationOrderIdAlreadyExists`.
    pub azure_reput_session_timeout: bool,
    /// AWS answers at most this many results per page, whatever the client asks (the models
    /// give page sizes an upper bound only): every paginated lookup must follow its tokens.
    pub max_page_size: Option<usize>,
    /// Azure refuses request details ARM may normalise: a `billingScopeId` not spelled
    /// `/subscriptions/<guid>`, a location not in canonical form (`westeurope`).
    pub azure_strict_names: bool,
    /// Azure answers the purchase PUT with 200 and a non-terminal `provisioningState` (the ARM
    /// PUT pattern) instead of 202 + `Location` (the spec's pattern for this operation).
    pub azure_put_in_progress_200: bool,
}

impl Default for Realism {
    fn default() -> Self {
        Self::friendly()
    }
}

impl Realism {
    /// Answers at once, consistently, with no loss: quick local runs.
    pub fn friendly() -> Self {
        Self {
            visibility_delay: Duration::ZERO,
            client_token_ttl: None,
            lost_response_probability: 0.0,
            payment_failed_probability: 0.0,
            opensearch_duplicate_names: false,
            max_page_size: None,
            azure_reput_session_timeout: false,
            azure_strict_names: false,
            azure_put_in_progress_200: false,
        }
    }

    /// Everything the providers are allowed to do, with values that suit a standalone run:
    /// 3 s of invisibility, client tokens forgotten after 10 minutes, 10 % lost responses,
    /// 2 % payment failures, pages of two. Tests shorten the durations to fit their settle windows.
    pub fn strict() -> Self {
        Self {
            visibility_delay: Duration::from_secs(3),
            client_token_ttl: Some(Duration::from_secs(600)),
            lost_response_probability: 0.10,
            payment_failed_probability: 0.02,
            opensearch_duplicate_names: true,
            max_page_size: Some(2),
            azure_reput_session_timeout: true,
            azure_strict_names: true,
            azure_put_in_progress_200: true,
        }
    }

    /// Strict, without the random faults (lost responses, payment failures), with the given
    /// invisibility: for tests that inject their faults one by one.
    pub fn strict_deterministic(visibility_delay: Duration) -> Self {
        Self {
            visibility_delay,
            client_token_ttl: Some(Duration::from_secs(600)),
            lost_response_probability: 0.0,
            payment_failed_probability: 0.0,
            ..Self::strict()
        }
    }

    /// `friendly` or `strict`.
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "friendly" => Some(Self::friendly()),
            "strict" => Some(Self::strict()),
            _ => None,
        }
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

mod opt_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}
