//! The purchase scope: what an executor may ask of the worker while it buys one item (spend
//! authorisation with the budget, the purchase intent, the offering lock, the settle gate),
//! and the giving back of what it took once the attempt is over.

use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use buyonce_shared::store::control::Reservation;
use buyonce_shared::store::items::BuyCheck;
use buyonce_shared::store::Store;
use buyonce_shared::{IdempotencyToken, Recommendation};
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::Mutex;
use tracing::warn;
use uuid::Uuid;

use super::limits::{OfferingLock, OfferingLocks};
use super::HandlerSettings;
use crate::error::{PermanentKind, PurchaseError};
use crate::executors::PurchaseContext;

/// The worker side of [`PurchaseContext`] for one item's purchase attempt. What it takes on the
/// executor's behalf — the offering lock, the budget reservation — it also gives back, in
/// [`PurchaseScope::close`], which the handler calls once the attempt's outcome is recorded.
pub(super) struct PurchaseScope<'a> {
    pub store: &'a Store,
    pub token: &'a IdempotencyToken,
    pub claim_id: Uuid,
    pub rec: &'a Recommendation,
    pub settings: &'a HandlerSettings,
    pub offering_locks: &'a OfferingLocks,
    pub ambiguous_at: Option<DateTime<Utc>>,
    lock: Mutex<Option<OfferingLock>>,
    reserved: AtomicBool,
}

/// Whether the attempt that ends with [`PurchaseScope::close`] certainly bought nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Bought {
    /// Bought, or may have (ambiguous), or may still (settling): the reservation stays.
    Maybe,
    /// Refused for good before or by the purchase call: the reserved budget goes back.
    Nothing,
}

impl<'a> PurchaseScope<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: &'a Store,
        token: &'a IdempotencyToken,
        claim_id: Uuid,
        rec: &'a Recommendation,
        settings: &'a HandlerSettings,
        offering_locks: &'a OfferingLocks,
        ambiguous_at: Option<DateTime<Utc>>,
    ) -> Self {
        Self {
            store,
            token,
            claim_id,
            rec,
            settings,
            offering_locks,
            ambiguous_at,
            lock: Mutex::new(None),
            reserved: AtomicBool::new(false),
        }
    }

    /// Gives back what the attempt took: the budget reservation when it certainly bought
    /// nothing, then the offering lock — only now, after the outcome is recorded, so no other
    /// item can attribute a new commitment to itself in between.
    pub async fn close(self, bought: Bought) {
        if bought == Bought::Nothing && self.reserved.load(Ordering::SeqCst) {
            if let Err(e) = self.store.release_budget(self.token).await {
                warn!(error = %e, "could not give back the reserved budget; it frees at the day's end");
            }
        }
        if let Some(lock) = self.lock.into_inner() {
            lock.release().await;
        }
    }
}

#[async_trait]
impl PurchaseContext for PurchaseScope<'_> {
    async fn authorize_spend(&self, upfront_usd: f64, what: &str) -> Result<(), PurchaseError> {
        if let Some(cap) = self.rec.max_upfront_usd {
            if upfront_usd > cap + 1e-6 {
                return Err(PurchaseError::permanent(
                    PermanentKind::SpendCap,
                    format!(
                        "{what} costs ${upfront_usd:.2} upfront, above max_upfront_usd ${cap:.2}; nothing bought"
                    ),
                ));
            }
        }
        if self.settings.dry_run {
            return Err(PurchaseError::DryRun(format!(
                "{what} for ${upfront_usd:.2} upfront"
            )));
        }
        // The brake is checked again right before the buy call, not only at the claim, and
        // so is the claim itself: a worker that stalled after its claim (a Postgres outage, a
        // long pause) may have been taken over, and the new owner buys. Not every provider
        // refuses a second purchase under the token's handle (OpenSearch does not), so a stale
        // owner must not reach its buy call. What remains — a takeover between this check and
        // the call — the new owner's settle window covers (a takeover marks the item ambiguous).
        match self
            .store
            .confirm_before_buy(self.token, self.claim_id)
            .await
        {
            Ok(BuyCheck::Go) => {}
            Ok(BuyCheck::Paused) => return Err(PurchaseError::Paused),
            Ok(BuyCheck::ClaimLost) => return Err(PurchaseError::transient(
                "lost the claim to another worker before buying; not buying (the new owner buys)",
            )),
            Err(e) => {
                return Err(PurchaseError::transient(format!(
                    "cannot read the pause flag or confirm the claim, not buying: {e}"
                )))
            }
        }
        if let Some(budget) = self.settings.daily_budget_usd {
            match self.store.reserve_budget(self.token, upfront_usd, budget).await {
                Ok(Reservation::Reserved | Reservation::AlreadyReserved) => {
                    self.reserved.store(true, Ordering::SeqCst);
                }
                Ok(Reservation::OverBudget {
                    reserved_usd,
                    budget_usd,
                }) => {
                    return Err(PurchaseError::OverBudget(format!(
                        "today's reserved spend ${reserved_usd:.2} + ${upfront_usd:.2} for {what} would exceed the daily budget ${budget_usd:.2}"
                    )))
                }
                Err(e) => return Err(PurchaseError::transient(format!("budget reservation failed: {e}"))),
            }
        }
        Ok(())
    }

    async fn save_intent(&self, state: &Value) -> Result<(), PurchaseError> {
        match self
            .store
            .set_provider_state(self.token, self.claim_id, state)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(PurchaseError::transient(
                "lost the claim before saving the purchase intent; not buying",
            )),
            Err(e) => Err(PurchaseError::transient(format!(
                "cannot save the purchase intent, not buying: {e}"
            ))),
        }
    }

    async fn lock_offering(&self, key: &str) -> Result<(), PurchaseError> {
        let lock = self.offering_locks.acquire(key).await?;
        *self.lock.lock().await = Some(lock);
        Ok(())
    }

    async fn confirm_offering_lock(&self) -> Result<(), PurchaseError> {
        let guard = self.lock.lock().await;
        let Some(lock) = guard.as_ref() else {
            return Err(PurchaseError::transient(
                "no offering lock held; not buying (a bug: the lock is taken first)",
            ));
        };
        lock.confirm().await
    }

    async fn attributed_elsewhere(
        &self,
        commitment_ids: &[String],
    ) -> Result<Vec<String>, PurchaseError> {
        self.store
            .attributed_among(commitment_ids, self.token)
            .await
            .map_err(|e| PurchaseError::transient(format!("ledger lookup failed, not buying: {e}")))
    }

    fn settle_gate(&self) -> Result<(), PurchaseError> {
        let Some(since) = self.ambiguous_at else {
            return Ok(());
        };
        let window = self.settings.settle_window(self.rec.service.provider());
        let until = since + chrono::TimeDelta::from_std(window).unwrap_or(chrono::TimeDelta::MAX);
        if chrono::Utc::now() < until {
            return Err(PurchaseError::Settling {
                until,
                message: format!(
                    "an earlier purchase call ({}) may have gone through and is not visible yet",
                    since.to_rfc3339()
                ),
            });
        }
        Ok(())
    }

    fn tag_key(&self) -> &str {
        &self.settings.tag_key
    }

    fn dry_run(&self) -> bool {
        self.settings.dry_run
    }
}
