//! Provider executors: one file per service, one registration list ([`registry`]).
//!
//! Each executor buys one recommendation **idempotently** with the token as DESIGN §3 specifies:
//! a guard lookup first (a failed lookup refuses to buy), the purchase call with the token as the
//! provider-visible handle, recovery of an `AlreadyExists`. Executors never retry a purchase call
//! themselves (SDK retries are disabled for purchases): a possibly-committed purchase is retried
//! only through the queue, and every retry starts with the guard. A purchase call whose outcome
//! is unknown is [`PurchaseError::Ambiguous`]; until the provider's settle window has passed, a
//! later attempt that finds nothing waits ([`PurchaseContext::settle_gate`]) instead of buying:
//! no provider documents that a new commitment is visible to its describe calls at once
//! (`docs/provider-semantics.md`).
//!
//! Look-alike services share one flow: [`by_handle`] for reservations bought under a handle
//! derived from the token (RDS, ElastiCache, MemoryDB, OpenSearch), [`snapshot`] for those
//! without one (EC2, Redshift).

pub mod azure;
pub mod by_handle;
pub mod ec2;
pub mod elasticache;
pub mod memorydb;
pub mod opensearch;
pub mod rds;
pub mod redshift;
pub mod savings_plans;
pub mod snapshot;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use buyonce_shared::{IdempotencyToken, Recommendation, Service};
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::clients::aws::AwsClients;
use crate::clients::azure::AzureClient;
use crate::error::{PermanentKind, PurchaseError};

/// Everything an executor needs to know about the item it buys.
pub struct PurchaseRequest<'a> {
    pub token: &'a IdempotencyToken,
    pub rec: &'a Recommendation,
    pub execution_id: &'a str,
    pub rec_index: i32,
    /// What an earlier attempt saved before buying (Azure order ID, EC2/Redshift snapshot).
    pub intent: Option<&'a Value>,
    /// Since when an earlier attempt's purchase call may have gone through unseen.
    pub ambiguous_at: Option<DateTime<Utc>>,
}

/// How the commitment was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// This attempt bought it.
    Purchased,
    /// The purchase call said it already exists (or an earlier attempt's purchase was found
    /// through the intent); recovered.
    Recovered,
    /// The guard lookup found it before any purchase call.
    Guard,
}

impl How {
    pub fn as_str(self) -> &'static str {
        match self {
            How::Purchased => "purchased",
            How::Recovered => "recovered",
            How::Guard => "guard",
        }
    }
}

/// A commitment that exists now.
#[derive(Debug, Clone, PartialEq)]
pub struct Purchased {
    pub commitment_id: String,
    /// Upfront cost in USD, read from the provider (re-read for recovered commitments).
    pub cost_usd: Option<f64>,
    pub how: How,
    /// Bought, but the token tag is not written yet (EC2); the reaper retries it.
    pub tag_pending: bool,
}

/// What executors ask of the worker while buying.
#[async_trait]
pub trait PurchaseContext: Send + Sync {
    /// The last check before the buy call: spend cap (`max_upfront_usd`), dry run, the pause
    /// flag, that the claim is still this attempt's (not taken over meanwhile), and the daily
    /// budget reservation. `what` describes the offering for messages.
    async fn authorize_spend(&self, upfront_usd: f64, what: &str) -> Result<(), PurchaseError>;
    /// Saves intent on the item before buying; an error means "do not buy".
    async fn save_intent(&self, state: &Value) -> Result<(), PurchaseError>;
    /// Serialises purchases of one (account, region, offering) across the fleet, so that a
    /// snapshot-based attribution is never ambiguous. The context holds the lock until the
    /// purchase is recorded in Postgres (or has failed), so no other item can attribute the
    /// new commitment to itself in between.
    async fn lock_offering(&self, key: &str) -> Result<(), PurchaseError>;
    /// Right before the buy call under an offering lock: that the lock's Postgres session is
    /// still alive and holds it. A worker cut off from Postgres loses the session (and the lock)
    /// within `BUYONCE_DATABASE_TCP_TIMEOUT`, and another worker may then take the lock; an
    /// error here means "do not buy".
    async fn confirm_offering_lock(&self) -> Result<(), PurchaseError>;
    /// The last check before a purchase call that could buy a second time if an earlier
    /// attempt's call went through unseen: `Err(Settling)` while the provider's settle window
    /// since [`PurchaseRequest::ambiguous_at`] has not passed. Call it after the guard found
    /// nothing.
    fn settle_gate(&self) -> Result<(), PurchaseError>;
    /// Which of `commitment_ids` are already recorded in the ledger for another token.
    async fn attributed_elsewhere(
        &self,
        commitment_ids: &[String],
    ) -> Result<Vec<String>, PurchaseError>;
    /// The tag key carrying the token.
    fn tag_key(&self) -> &str;
    /// Dry run: executors may use the provider's native dry run (EC2 `DryRun`).
    fn dry_run(&self) -> bool;
}

/// A provider executor.
#[async_trait]
pub trait Executor: Send + Sync {
    /// Buys (or finds) the commitment for `req`, idempotently.
    async fn purchase(
        &self,
        req: &PurchaseRequest<'_>,
        ctx: &dyn PurchaseContext,
    ) -> Result<Purchased, PurchaseError>;

    /// Retries the token tag of an already-recorded commitment (EC2); `Ok(true)` when the tag
    /// is in place. Services without tags have nothing to do.
    async fn retag(
        &self,
        _rec: &Recommendation,
        _token: &IdempotencyToken,
        _commitment_id: &str,
        _tag_key: &str,
    ) -> Result<bool, PurchaseError> {
        Ok(true)
    }
}

/// Whether a commitment found by its handle holds what was bought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Bought and in force, or on its way (pending payment, queued, exchanging, or a state
    /// we do not know: recorded as bought, the safe direction).
    Live,
    /// Bought once, but not in force any more or never: payment failed, retired, returned,
    /// deleted from the queue.
    Ended,
}

/// The AWS reservation states that mean "not (or no longer) in force". EC2
/// (`ReservedInstanceState`) and Savings Plans (`SavingsPlanState`) enumerate their states in
/// their botocore models and Redshift lists its in `ReservedNode.State`'s documentation; RDS,
/// ElastiCache, MemoryDB and OpenSearch document none, so any state not named here counts as
/// live.
pub fn aws_liveness(state: Option<&str>) -> Liveness {
    match state {
        Some("payment-failed" | "retired" | "returned" | "queued-deleted") => Liveness::Ended,
        _ => Liveness::Live,
    }
}

/// The permanent error for a commitment that carries the token but is not live.
pub fn ended_commitment(what: &str, id: &str, state: &str, advice: &str) -> PurchaseError {
    PurchaseError::permanent(
        PermanentKind::NotLive,
        format!(
            "{what} {id} carries this item's token but is {state}: nothing usable was bought and \
             the token's handle is used up; {advice}"
        ),
    )
}

/// The executors by service: adding a service is one file and one line here.
pub fn registry(
    aws: AwsClients,
    azure: Option<AzureClient>,
) -> HashMap<Service, Arc<dyn Executor>> {
    let mut map: HashMap<Service, Arc<dyn Executor>> = HashMap::new();
    map.insert(
        Service::SavingsPlans,
        Arc::new(savings_plans::SavingsPlans::new(aws.clone())),
    );
    map.insert(Service::Ec2, Arc::new(ec2::Ec2::new(aws.clone())));
    map.insert(Service::Rds, Arc::new(rds::Rds::new(aws.clone())));
    map.insert(
        Service::Elasticache,
        Arc::new(elasticache::ElastiCache::new(aws.clone())),
    );
    map.insert(
        Service::Memorydb,
        Arc::new(memorydb::MemoryDb::new(aws.clone())),
    );
    map.insert(
        Service::Opensearch,
        Arc::new(opensearch::OpenSearch::new(aws.clone())),
    );
    map.insert(Service::Redshift, Arc::new(redshift::Redshift::new(aws)));
    if let Some(azure) = azure {
        // `search` has no documented reservedResourceType (see azure::reserved_resource_type).
        for service in [
            Service::Vm,
            Service::SqlDatabase,
            Service::RedisCache,
            Service::CosmosDb,
        ] {
            map.insert(
                service,
                Arc::new(azure::AzureReservations::new(azure.clone(), service)),
            );
        }
    }
    map
}

/// How long a resolved offering is reused. Offerings are catalog data (they change with price
/// lists, not per purchase); reusing them saves a lookup call on every purchase, and a stale one
/// can only make the purchase call fail, never buy twice (guards do not use this cache).
pub const OFFERING_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// A short-lived cache of resolved offerings, keyed by [`offering_key`].
pub struct OfferingCache<V: Clone> {
    ttl: std::time::Duration,
    entries: std::sync::Mutex<HashMap<String, (std::time::Instant, V)>>,
}

impl<V: Clone> Default for OfferingCache<V> {
    fn default() -> Self {
        Self {
            ttl: OFFERING_TTL,
            entries: std::sync::Mutex::new(HashMap::new()),
        }
    }
}

impl<V: Clone> OfferingCache<V> {
    /// The cached value for `key`, or the result of `lookup` (cached when it succeeds).
    pub async fn get_or_try<F, Fut>(&self, key: String, lookup: F) -> Result<V, PurchaseError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<V, PurchaseError>>,
    {
        if let Ok(entries) = self.entries.lock() {
            if let Some((at, v)) = entries.get(&key) {
                if at.elapsed() < self.ttl {
                    return Ok(v.clone());
                }
            }
        }
        let v = lookup().await?;
        if let Ok(mut entries) = self.entries.lock() {
            // Bounded: a fleet buys a handful of distinct offerings; drop everything if not.
            if entries.len() > 10_000 {
                entries.clear();
            }
            entries.insert(key, (std::time::Instant::now(), v.clone()));
        }
        Ok(v)
    }
}

/// What identifies an offering in a recommendation: everything but the quantity and the caps.
pub fn offering_key(rec: &Recommendation) -> String {
    format!(
        "{}|{}|{}|{:?}|{:?}|{}|{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        rec.service,
        rec.account,
        rec.region.as_deref().unwrap_or(""),
        rec.resource_type,
        rec.offering_id,
        rec.term.as_str(),
        rec.payment.as_str(),
        rec.platform,
        rec.offering_class,
        rec.engine,
        rec.multi_az,
        rec.plan_type,
        // Savings Plans offerings do not depend on the commitment, but keep one key per plan type.
        rec.service == Service::SavingsPlans,
    )
}

/// `x` if present, else a permanent validation error naming the missing field.
pub(crate) fn required<'a>(
    value: &'a Option<String>,
    field: &str,
) -> Result<&'a str, PurchaseError> {
    value.as_deref().ok_or_else(|| {
        PurchaseError::permanent(PermanentKind::Validation, format!("{field} is required"))
    })
}

/// Picks exactly one offering, or a permanent error naming the attributes.
pub(crate) fn exactly_one<T>(mut found: Vec<T>, what: &str) -> Result<T, PurchaseError> {
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(PurchaseError::permanent(
            PermanentKind::UnknownOffering,
            format!("no offering matches {what}"),
        )),
        n => Err(PurchaseError::permanent(
            PermanentKind::UnknownOffering,
            format!("{n} offerings match {what}; set offering_id to choose one"),
        )),
    }
}

/// Reads every page of a marker / next-token paginated AWS call. `page(token)` sends one
/// request and returns its items and the next token; an absent or empty token ends it.
pub(crate) async fn all_pages<T, F, Fut>(mut page: F) -> Result<Vec<T>, PurchaseError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, Option<String>), PurchaseError>>,
{
    let mut all = Vec::new();
    let mut token = None;
    loop {
        let (items, next) = page(token).await?;
        all.extend(items);
        token = next.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(all);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn all_pages_follows_tokens_until_none_or_empty() {
        let asked = std::sync::Mutex::new(Vec::new());
        let pages = all_pages(|token: Option<String>| {
            asked.lock().unwrap().push(token.clone());
            async move {
                Ok(match token.as_deref() {
                    None => (vec![1, 2], Some("a".to_owned())),
                    Some("a") => (vec![3], Some("b".to_owned())),
                    Some("b") => (vec![], Some("c".to_owned())),
                    _ => (vec![4], Some(String::new())),
                })
            }
        })
        .await
        .unwrap();
        assert_eq!(pages, vec![1, 2, 3, 4]);
        assert_eq!(
            *asked.lock().unwrap(),
            vec![None, Some("a".into()), Some("b".into()), Some("c".into())]
        );
    }

    #[tokio::test]
    async fn all_pages_stops_at_the_first_error() {
        let mut calls = 0;
        let result: Result<Vec<u8>, _> = all_pages(|_| {
            calls += 1;
            async { Err(PurchaseError::transient("throttled")) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls, 1);
    }
}
