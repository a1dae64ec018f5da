//! The flow of services whose purchase call takes no client handle: EC2 Reserved Instances
//! (`PurchaseReservedInstancesOffering` has no `ClientToken` and no `TagSpecifications`) and
//! Redshift reserved nodes (`PurchaseReservedNodeOffering` takes only the offering and a count,
//! and reserved nodes cannot be tagged). A service implements [`SnapshotService`]; this file
//! owns the **intent + snapshot** attribution (DESIGN §3).
//!
//! Purchases of one (account, region, offering) are serialised across the fleet by an offering
//! lock. Before its first purchase call an item records on itself which commitments of the
//! offering already exist (the snapshot). Any later attempt that finds a commitment absent from
//! the snapshot, with the same count, not carrying another item's token and not in the ledger
//! for another item, takes it as the purchase of the earlier attempt — the earliest such one,
//! since purchases of the offering are serialised. If none is visible, the settle gate keeps the
//! attempt from buying until an earlier ambiguous purchase had time to appear. A commitment
//! bought by hand in that window makes buyonce under-buy (the safe direction), never double-buy.
//!
//! **When the lock changes hands under a live holder.** The offering lock is a Postgres session
//! lock. A holder cut off from Postgres loses its session — the server drops it after
//! `BUYONCE_DATABASE_TCP_TIMEOUT` of silence (keepalives asked for at connect) — and another
//! worker may then take the lock while the first one still runs. Two things keep that safe:
//!
//! * The fence: right before the buy call the holder asks the server, on the lock's own
//!   connection, whether its session still holds the lock ([`PurchaseContext::confirm_offering_lock`],
//!   answered within 2 s). An answer means the server heard from the session just now, so it
//!   keeps the session (and the lock) for at least the timeout — far longer than sending the
//!   call takes. A holder whose session is gone, or that cannot tell, does not buy.
//! * The worst a late call can do is reorder two purchases of the same offering. Say holder A
//!   sent its call, and B took over and bought before A's commitment was visible, so B's
//!   snapshot lacks A's. Every candidate either item can recover is absent from its own
//!   snapshot, of the same offering and count, and not attributed to anyone else — so if both
//!   responses were lost, each recovery takes one of the two, and the ledger records one
//!   commitment per item: possibly swapped between A and B (identical, interchangeable
//!   commitments), never one item with two or a purchase that nobody holds. The number bought
//!   still equals the number of items that succeeded. A commitment that is still invisible
//!   when a retry looks is what the settle gate already waits for.
//! * A record delayed past the lock. Holder A bought X and got the answer, but cannot record
//!   it (cut off); its session and lock go; item B, whose earlier attempt saved a snapshot but
//!   bought nothing (settle gate, a failed fence), takes the lock and recovers X — absent from
//!   its snapshot, untagged, not yet in the ledger. When A's record finally lands, it is
//!   *exclusive* (`Recorded::exclusive`): Postgres writes nothing because X is B's in the
//!   ledger, and A goes back to the queue as ambiguous, so its next attempt finds its own
//!   purchase if there is one and otherwise buys after the settle window. One commitment per
//!   item again, never two items on one commitment.

use async_trait::async_trait;
use buyonce_shared::{IdempotencyToken, Recommendation};
use serde_json::{json, Value};

use super::{
    aws_liveness, ended_commitment, offering_key, required, Executor, How, Liveness, OfferingCache,
    PurchaseContext, PurchaseError, PurchaseRequest, Purchased,
};
use crate::clients::aws::{AwsClients, Clients, SdkClient};

/// A commitment of the offering, as the service's describe call shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Commitment {
    pub id: String,
    pub count: Option<i32>,
    pub state: Option<String>,
    /// Start time (seconds, nanoseconds), to take the earliest of several candidates.
    pub start: Option<(i64, u32)>,
    /// Upfront cost of all units, USD.
    pub cost_usd: Option<f64>,
    /// Carries the token tag of some item (EC2): never mistaken for an untagged purchase.
    pub tagged: bool,
    /// Carries the token tag of another item.
    pub tagged_for_other: bool,
}

/// What the flow needs of a resolved offering.
pub trait OfferingInfo: Clone + Send + Sync + 'static {
    fn id(&self) -> &str;
    /// Upfront price per unit, USD.
    fn fixed_price(&self) -> f64;
}

/// One service bought without a client handle.
#[async_trait]
pub trait SnapshotService: Send + Sync + 'static {
    /// `ec2`, `redshift`: messages, the intent's key and the lock key.
    const NAME: &'static str;
    /// The service's SDK client.
    type Sdk: SdkClient;
    type Offering: OfferingInfo;

    /// The commitment carrying the token, where the service can carry one (EC2's tag).
    async fn find_by_token(
        _client: &Clients<Self::Sdk>,
        _tag_key: &str,
        _token: &IdempotencyToken,
    ) -> Result<Option<Commitment>, PurchaseError> {
        Ok(None)
    }
    async fn resolve_offering(
        client: &Clients<Self::Sdk>,
        rec: &Recommendation,
    ) -> Result<Self::Offering, PurchaseError>;
    /// The provider's own dry run, if it has one (EC2 `DryRun`).
    async fn dry_run(
        _client: &Clients<Self::Sdk>,
        _offering: &Self::Offering,
        _count: i32,
    ) -> Result<(), PurchaseError> {
        Ok(())
    }
    /// Commitments of the offering in the account and region, live or ended (not retired).
    async fn list_matching(
        client: &Clients<Self::Sdk>,
        offering: &Self::Offering,
        tag_key: &str,
        token: &IdempotencyToken,
    ) -> Result<Vec<Commitment>, PurchaseError>;
    /// The purchase call, sent once; the new commitment's ID.
    async fn buy(
        client: &Clients<Self::Sdk>,
        offering: &Self::Offering,
        count: i32,
    ) -> Result<String, PurchaseError>;
    /// Writes the token where the next guard looks for it (EC2's tag); `true` when it could not
    /// be written yet (recorded as `tag_pending`, retried by the reaper).
    async fn mark(
        _client: &Clients<Self::Sdk>,
        _id: &str,
        _tag_key: &str,
        _token: &IdempotencyToken,
    ) -> bool {
        false
    }
    /// Re-writes the mark of a recorded commitment; `Ok(true)` when it is in place.
    async fn remark(
        _client: &Clients<Self::Sdk>,
        _id: &str,
        _tag_key: &str,
        _token: &IdempotencyToken,
    ) -> Result<bool, PurchaseError> {
        Ok(true)
    }
}

/// The executor of a [`SnapshotService`].
pub struct BySnapshot<S: SnapshotService> {
    aws: AwsClients,
    offerings: OfferingCache<S::Offering>,
}

impl<S: SnapshotService> BySnapshot<S> {
    pub fn new(aws: AwsClients) -> Self {
        Self {
            aws,
            offerings: OfferingCache::default(),
        }
    }
}

/// The snapshot an earlier attempt saved for `offering_id`.
fn snapshot_of(intent: Option<&Value>, service: &str, offering_id: &str) -> Option<Vec<String>> {
    let saved = intent?.get(service)?;
    if saved.get("offering_id")?.as_str()? != offering_id {
        return None;
    }
    Some(
        saved
            .get("snapshot")?
            .as_array()?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
    )
}

fn ended<S: SnapshotService>(c: &Commitment) -> PurchaseError {
    ended_commitment(
        &format!("{} commitment", S::NAME),
        &c.id,
        c.state.as_deref().unwrap_or("ended"),
        "re-drive the item once the cause (e.g. the payment method) is fixed, or submit the \
         recommendation again under a new idempotency_key",
    )
}

#[async_trait]
impl<S: SnapshotService> Executor for BySnapshot<S> {
    async fn purchase(
        &self,
        req: &PurchaseRequest<'_>,
        ctx: &dyn PurchaseContext,
    ) -> Result<Purchased, PurchaseError> {
        let rec = req.rec;
        let count = rec.units() as i32;
        let client = self
            .aws
            .clients::<S::Sdk>(&rec.account, required(&rec.region, "region")?)
            .await?;
        let tag_key = ctx.tag_key();

        if let Some(c) = S::find_by_token(&client, tag_key, req.token).await? {
            if aws_liveness(c.state.as_deref()) == Liveness::Ended {
                return Err(ended::<S>(&c));
            }
            return Ok(Purchased {
                commitment_id: c.id,
                cost_usd: c.cost_usd,
                how: How::Guard,
                tag_pending: false,
            });
        }

        let offering = self
            .offerings
            .get_or_try(offering_key(rec), || S::resolve_offering(&client, rec))
            .await?;
        let upfront = offering.fixed_price() * f64::from(count);
        if ctx.dry_run() {
            S::dry_run(&client, &offering, count).await?;
        }
        ctx.authorize_spend(
            upfront,
            &format!("{} offering {} x{count}", S::NAME, offering.id()),
        )
        .await?;

        // One purchase of this offering at a time in the whole fleet: the attribution below
        // depends on it. The context holds the lock until the purchase is recorded.
        let region = rec.region.as_deref().unwrap_or_default();
        ctx.lock_offering(&format!(
            "{}:{}:{region}:{}",
            S::NAME,
            rec.account,
            offering.id()
        ))
        .await?;

        match snapshot_of(req.intent, S::NAME, offering.id()) {
            Some(snapshot) => {
                // An earlier attempt may have bought without learning the commitment's ID.
                let fresh: Vec<Commitment> =
                    S::list_matching(&client, &offering, tag_key, req.token)
                        .await?
                        .into_iter()
                        .filter(|c| {
                            !snapshot.contains(&c.id)
                                && c.count == Some(count)
                                && !c.tagged_for_other
                        })
                        .collect();
                let ids: Vec<String> = fresh.iter().map(|c| c.id.clone()).collect();
                let taken = ctx.attributed_elsewhere(&ids).await?;
                let mut candidates: Vec<Commitment> = fresh
                    .into_iter()
                    .filter(|c| !taken.contains(&c.id))
                    .collect();
                candidates.sort_by_key(|c| c.start);
                if let Some(c) = candidates.into_iter().next() {
                    if aws_liveness(c.state.as_deref()) == Liveness::Ended {
                        return Err(ended::<S>(&c));
                    }
                    let tag_pending = S::mark(&client, &c.id, tag_key, req.token).await;
                    return Ok(Purchased {
                        commitment_id: c.id,
                        cost_usd: c.cost_usd,
                        how: How::Recovered,
                        tag_pending,
                    });
                }
            }
            None => {
                // Only commitments that nothing attributes yet can ever be mistaken for this
                // purchase (a tagged one is the guard's or another item's, a recorded one is
                // another item's), so only they go in the snapshot: it stays small.
                let untagged: Vec<String> =
                    S::list_matching(&client, &offering, tag_key, req.token)
                        .await?
                        .into_iter()
                        .filter(|c| !c.tagged)
                        .map(|c| c.id)
                        .collect();
                let taken = ctx.attributed_elsewhere(&untagged).await?;
                let snapshot: Vec<String> = untagged
                    .into_iter()
                    .filter(|id| !taken.contains(id))
                    .collect();
                ctx.save_intent(&json!({
                    S::NAME: {
                        "offering_id": offering.id(),
                        "snapshot": snapshot,
                        "taken_at": chrono::Utc::now().to_rfc3339(),
                    }
                }))
                .await?;
            }
        }

        ctx.settle_gate()?;
        // The fence: the lock must still be ours when the call goes out (see `confirm`).
        ctx.confirm_offering_lock().await?;
        let id = S::buy(&client, &offering, count).await?;
        // Mark before recording; a failure is reported as tag_pending, never ignored.
        let tag_pending = S::mark(&client, &id, tag_key, req.token).await;
        Ok(Purchased {
            commitment_id: id,
            cost_usd: Some(upfront),
            how: How::Purchased,
            tag_pending,
        })
    }

    async fn retag(
        &self,
        rec: &Recommendation,
        token: &IdempotencyToken,
        commitment_id: &str,
        tag_key: &str,
    ) -> Result<bool, PurchaseError> {
        let client = self
            .aws
            .clients::<S::Sdk>(&rec.account, required(&rec.region, "region")?)
            .await?;
        S::remark(&client, commitment_id, tag_key, token).await
    }
}

#[cfg(test)]
mod tests {
    use super::snapshot_of;
    use serde_json::json;

    #[test]
    fn a_snapshot_counts_only_for_its_own_service_and_offering() {
        let intent = json!({"ec2": {"offering_id": "o-1", "snapshot": ["ri-1", "ri-2"]}});
        assert_eq!(
            snapshot_of(Some(&intent), "ec2", "o-1"),
            Some(vec!["ri-1".to_owned(), "ri-2".to_owned()])
        );
        assert_eq!(snapshot_of(Some(&intent), "ec2", "o-2"), None);
        assert_eq!(snapshot_of(Some(&intent), "redshift", "o-1"), None);
        assert_eq!(snapshot_of(None, "ec2", "o-1"), None);
    }
}
