//! The worker's side of an item's life: claim it (`queued|stale running → running`), keep its
//! heartbeat, save provider intent, then record the purchase (`→ succeeded`), release it for a
//! retry (`running → queued`) or end it (`running → failed|dead`). Every write after the claim
//! checks the claim ID, so a worker that lost its claim changes nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{item_cas, secs, ItemStatus, ITEM_STATUS};
use crate::envelope::PurchaseMessage;
use crate::ids::ExecutionId;
use crate::store::{cas_miss, parsed_opt, Cas, Store, StoreError, StoreResult};
use crate::token::IdempotencyToken;

/// What the claim step decided about a message (DESIGN §4: "a worker buys only what Postgres
/// says").
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The item is ours to buy now (`queued|stale running → running`, attempts + 1).
    Claimed {
        claim_id: Uuid,
        attempts: i32,
        provider_state: Option<Value>,
        /// Since when an earlier attempt's purchase call may have gone through without the
        /// worker learning of it: set when that attempt reported an ambiguous outcome, and by
        /// this claim when it takes over a `running` item whose owner stopped heartbeating (it
        /// may have died inside the purchase call). `None`: every earlier purchase call is
        /// accounted for.
        ambiguous_at: Option<DateTime<Utc>>,
    },
    /// No such execution or item.
    UnknownItem,
    /// The stored token differs from the message's.
    TokenMismatch,
    /// The message's recommendation differs from the approved one.
    RecommendationMismatch,
    /// The execution or the item was cancelled.
    Cancelled,
    /// Already bought: nothing to do, zero provider calls.
    AlreadySucceeded { commitment_id: Option<String> },
    /// Failed or dead: only an operator re-drive buys it again.
    Ended { status: ItemStatus },
    /// The fleet is paused.
    Paused,
    /// Running under another live claim (its heartbeat is fresh), or a race was lost.
    OwnedElsewhere,
}

/// A commitment the executor bought, recovered or found.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub commitment_id: String,
    pub cost_usd: Option<f64>,
    /// `purchased`, `recovered` or `guard`.
    pub how: &'static str,
    /// The token tag could not be written (EC2); the reaper retries it.
    pub tag_pending: bool,
    /// Refuse when another item's ledger row already holds this commitment ID: for a
    /// commitment attributed by snapshot (EC2, Redshift), where a delayed record could
    /// otherwise meet another item's recovery of the same commitment.
    pub exclusive: bool,
}

/// What [`Store::confirm_before_buy`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuyCheck {
    /// Not paused, and the heartbeat was refreshed under our claim: buy.
    Go,
    /// The fleet is paused (the heartbeat was left alone).
    Paused,
    /// The item is no longer running under our claim (another worker took it over).
    ClaimLost,
}

/// What [`Store::record_success`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Recording {
    /// The item is `succeeded` now; its execution.
    Recorded(ExecutionId),
    /// It was `succeeded` already (another delivery recorded it first).
    AlreadySucceeded,
    /// No such item.
    NotFound,
    /// Nothing written ([`Recorded::exclusive`]): another item holds the commitment in the
    /// ledger. Its token, masked.
    TakenBy(String),
}

impl Store {
    /// Authorises and claims in one statement: `queued → running`, or `running → running` when
    /// the owner's heartbeat is older than `stale_after` (the owner died). Requires the item to
    /// exist, its execution not cancelled, the same token and the same recommendation, and the
    /// fleet not paused. When nothing matches, a second query says why.
    #[tracing::instrument(skip_all, fields(execution.id = %msg.execution_id, item.rec_index = %msg.rec_index, token = %msg.token))]
    pub async fn claim(&self, msg: &PurchaseMessage, stale_after: Duration) -> StoreResult<Claim> {
        let claim_id = Uuid::new_v4();
        let recommendation = serde_json::to_value(&msg.recommendation)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let rows = self
            .grouped(
                "claim",
                CLAIM_SQL,
                msg.token.as_str(),
                vec![
                    Box::new(msg.execution_id.as_str().to_owned()),
                    Box::new(msg.rec_index.as_i32()),
                    Box::new(msg.token.as_str().to_owned()),
                    Box::new(claim_id),
                    Box::new(recommendation.clone()),
                    Box::new(secs(stale_after)),
                ],
            )
            .await?;
        if let Some(row) = rows.first() {
            return Ok(Claim::Claimed {
                claim_id,
                attempts: row.try_get(0)?,
                provider_state: row.try_get(1)?,
                ambiguous_at: row.try_get(2)?,
            });
        }
        // Nothing matched: find out why (advisory; the row may move again meanwhile).
        let client = self.conn("claim_miss").await?;
        let why = client.prepare_cached(CLAIM_MISS_SQL).await?;
        let row = client
            .query_opt(
                &why,
                &[
                    &msg.execution_id.as_str(),
                    &msg.rec_index.as_i32(),
                    &recommendation,
                    &secs(stale_after),
                ],
            )
            .await?;
        let Some(row) = row else {
            return Ok(Claim::UnknownItem);
        };
        let status: String = row.try_get(0)?;
        let token: String = row.try_get(1)?;
        let same_recommendation: bool = row.try_get(2)?;
        let execution_status: String = row.try_get(3)?;
        let paused: bool = row.try_get(5)?;
        let status = ItemStatus::parse(&status)
            .ok_or_else(|| StoreError::Invalid(format!("unknown item status {status:?}")))?;
        Ok(if token != msg.token.as_str() {
            Claim::TokenMismatch
        } else if !same_recommendation {
            Claim::RecommendationMismatch
        } else if status == ItemStatus::Succeeded {
            Claim::AlreadySucceeded {
                commitment_id: row.try_get(6)?,
            }
        } else if execution_status == "cancelled" || status == ItemStatus::Cancelled {
            Claim::Cancelled
        } else if matches!(status, ItemStatus::Failed | ItemStatus::Dead) {
            Claim::Ended { status }
        } else if paused {
            Claim::Paused
        } else {
            Claim::OwnedElsewhere
        })
    }

    /// Refreshes the heartbeat of a running item we own. `false` when the claim was lost (the
    /// item moved on or another worker took it over).
    pub async fn heartbeat(&self, token: &IdempotencyToken, claim_id: Uuid) -> StoreResult<bool> {
        let client = self.conn("heartbeat").await?;
        let stmt = client.prepare_cached(HEARTBEAT_SQL).await?;
        let n = client.execute(&stmt, &[&token.as_str(), &claim_id]).await?;
        Ok(n == 1)
    }

    /// Right before a buy call: is the fleet still unpaused, and is the item still ours? When
    /// it is not paused, refreshes the heartbeat under our claim. One statement and one round
    /// trip for what were two (a pause read, then a heartbeat).
    pub async fn confirm_before_buy(
        &self,
        token: &IdempotencyToken,
        claim_id: Uuid,
    ) -> StoreResult<BuyCheck> {
        let rows = self
            .grouped(
                "confirm_before_buy",
                CONFIRM_BEFORE_BUY_SQL,
                token.as_str(),
                vec![Box::new(token.as_str().to_owned()), Box::new(claim_id)],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| StoreError::Invalid("confirm_before_buy returned no row".into()))?;
        Ok(if row.try_get::<_, bool>(0)? {
            BuyCheck::Paused
        } else if row.try_get::<_, bool>(1)? {
            BuyCheck::Go
        } else {
            BuyCheck::ClaimLost
        })
    }

    /// Saves executor intent (Azure order ID, Redshift snapshot) before the purchase call, on
    /// the item we own (`running`, our claim). Returns whether it was written.
    pub async fn set_provider_state(
        &self,
        token: &IdempotencyToken,
        claim_id: Uuid,
        state: &Value,
    ) -> StoreResult<bool> {
        let client = self.conn("set_provider_state").await?;
        let stmt = client.prepare_cached(SET_PROVIDER_STATE_SQL).await?;
        let n = client
            .execute(&stmt, &[&token.as_str(), &claim_id, state])
            .await?;
        Ok(n == 1)
    }

    /// Records a bought (or recovered) commitment: inserts it into the `commitments` ledger
    /// (the token is the key, so a second record is a no-op) and moves the item
    /// `any status except succeeded → succeeded`, in one statement. Any status is allowed on
    /// purpose: the money is spent, so Postgres must say so even if the reaper or an operator
    /// moved the item meanwhile. With [`Recorded::exclusive`], nothing is written when another
    /// token's ledger row has the same commitment ID (an index lookup on
    /// `commitments_commitment_id`).
    #[tracing::instrument(skip_all, fields(token = %token, commitment.id = %recorded.commitment_id))]
    pub async fn record_success(
        &self,
        token: &IdempotencyToken,
        recorded: &Recorded,
    ) -> StoreResult<Recording> {
        let rows = self
            .grouped(
                "record_success",
                RECORD_SUCCESS_SQL,
                token.as_str(),
                vec![
                    Box::new(token.as_str().to_owned()),
                    Box::new(recorded.commitment_id.clone()),
                    Box::new(recorded.cost_usd),
                    Box::new(recorded.how),
                    Box::new(recorded.tag_pending),
                    Box::new(recorded.exclusive),
                ],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| StoreError::Invalid("record_success returned no row".into()))?;
        if let Some(execution) = parsed_opt(row, 0, ExecutionId::parse)? {
            return Ok(Recording::Recorded(execution));
        }
        if let Some(other) = parsed_opt(row, 1, IdempotencyToken::parse)? {
            return Ok(Recording::TakenBy(other.mask()));
        }
        let client = self.conn("record_success").await?;
        Ok(
            match cas_miss::<()>(&client, ITEM_STATUS, token.as_str()).await? {
                Cas::NotFound => Recording::NotFound,
                _ => Recording::AlreadySucceeded,
            },
        )
    }

    /// After a transient failure: `running (our claim) → queued`, keeping the error, so the
    /// retry message finds it claimable. The attempt stays counted unless `uncount` (the
    /// purchase was only deferred: fleet paused, budget exhausted, settle window). `ambiguous`:
    /// this attempt's purchase call may have gone through unseen; `ambiguous_at` becomes now.
    pub async fn release_for_retry(
        &self,
        token: &IdempotencyToken,
        claim_id: Uuid,
        error: &str,
        uncount: bool,
        ambiguous: bool,
    ) -> StoreResult<Cas<()>> {
        let client = self.conn("release_for_retry").await?;
        let stmt = client.prepare_cached(RELEASE_FOR_RETRY_SQL).await?;
        let n = client
            .execute(
                &stmt,
                &[&token.as_str(), &claim_id, &error, &uncount, &ambiguous],
            )
            .await?;
        if n == 1 {
            Ok(Cas::Applied(()))
        } else {
            cas_miss(&client, ITEM_STATUS, token.as_str()).await
        }
    }

    /// Ends an item we own: `running (our claim) → failed` (permanent failure) or `→ dead`
    /// (attempts exhausted), with the reason. `ambiguous` as in [`Store::release_for_retry`]:
    /// a re-drive of the item then waits for the settle window before buying again.
    pub async fn finish_unsuccessful(
        &self,
        token: &IdempotencyToken,
        claim_id: Uuid,
        status: ItemStatus,
        error: &str,
        ambiguous: bool,
    ) -> StoreResult<Cas<ExecutionId>> {
        debug_assert!(matches!(status, ItemStatus::Failed | ItemStatus::Dead));
        let client = self.conn("finish_unsuccessful").await?;
        let stmt = client.prepare_cached(FINISH_UNSUCCESSFUL_SQL).await?;
        let rows = client
            .query(
                &stmt,
                &[
                    &token.as_str(),
                    &claim_id,
                    &status.as_str(),
                    &error,
                    &ambiguous,
                ],
            )
            .await?;
        item_cas(&client, &rows, token).await
    }
}

// The statements, named so that `shared/tests/plans.rs` EXPLAINs exactly these.

/// The claim: authorises and takes the item in one statement ([`Store::claim`]).
pub(crate) const CLAIM_SQL: &str = "UPDATE purchase_items i
           SET status = 'running', attempts = i.attempts + 1, claim_id = $4,
               heartbeat_at = now(), updated_at = now(),
               -- Taking over from an owner that stopped heartbeating: it may have died
               -- inside the purchase call (right-hand sides read the old row).
               ambiguous_at = CASE WHEN i.status = 'running' THEN now()
                                   ELSE i.ambiguous_at END
          FROM executions e
         WHERE i.execution_id = $1 AND i.rec_index = $2
           AND e.execution_id = i.execution_id
           AND i.token = $3
           AND i.recommendation = $5::jsonb
           AND e.status <> 'cancelled'
           AND (i.status = 'queued'
                OR (i.status = 'running'
                    AND (i.heartbeat_at IS NULL
                         OR i.heartbeat_at < now() - make_interval(secs => $6))))
           AND NOT (SELECT paused FROM fleet_control)
     RETURNING i.attempts, i.provider_state, i.ambiguous_at";

/// Why a claim matched nothing (advisory).
pub(crate) const CLAIM_MISS_SQL: &str =
    "SELECT i.status, i.token, i.recommendation = $3::jsonb, e.status,
           i.heartbeat_at IS NOT NULL
               AND i.heartbeat_at >= now() - make_interval(secs => $4),
           (SELECT paused FROM fleet_control), i.commitment_id
      FROM purchase_items i JOIN executions e USING (execution_id)
     WHERE i.execution_id = $1 AND i.rec_index = $2";

/// A heartbeat of a running item we own ([`Store::heartbeat`]).
pub(crate) const HEARTBEAT_SQL: &str = "UPDATE purchase_items SET heartbeat_at = now()
     WHERE token = $1 AND status = 'running' AND claim_id = $2";

/// The pause flag and a fenced heartbeat in one snapshot ([`Store::confirm_before_buy`]).
pub(crate) const CONFIRM_BEFORE_BUY_SQL: &str = "WITH brake AS (
         SELECT paused FROM fleet_control WHERE id
     ), beat AS (
         UPDATE purchase_items SET heartbeat_at = now()
          WHERE token = $1 AND status = 'running' AND claim_id = $2
            AND NOT (SELECT paused FROM brake)
      RETURNING 1
     )
     SELECT (SELECT paused FROM brake), EXISTS (SELECT 1 FROM beat)";

/// Saves executor intent on the item we own ([`Store::set_provider_state`]).
pub(crate) const SET_PROVIDER_STATE_SQL: &str =
    "UPDATE purchase_items SET provider_state = $3, updated_at = now()
     WHERE token = $1 AND status = 'running' AND claim_id = $2";

/// Ledger insert and `→ succeeded` in one statement ([`Store::record_success`]).
pub(crate) const RECORD_SUCCESS_SQL: &str = "WITH other AS (
         SELECT token FROM commitments
          WHERE $6 AND commitment_id = $2 AND token <> $1
          LIMIT 1
     ), c AS (
         INSERT INTO commitments (token, execution_id, rec_index, provider, service,
                                  account, region, commitment_id, cost_usd, how)
         SELECT token, execution_id, rec_index, provider, service, account, region,
                $2, $3::float8::numeric, $4
           FROM purchase_items
          WHERE token = $1 AND NOT EXISTS (SELECT 1 FROM other)
         ON CONFLICT (token) DO NOTHING
     ), u AS (
         UPDATE purchase_items
            SET status = 'succeeded', commitment_id = $2,
                cost_usd = $3::float8::numeric, error = NULL, heartbeat_at = NULL,
                claim_id = NULL, tag_pending = $5, updated_at = now()
          WHERE token = $1 AND status <> 'succeeded'
            AND NOT EXISTS (SELECT 1 FROM other)
      RETURNING execution_id
     )
     SELECT (SELECT execution_id FROM u), (SELECT token FROM other)";

/// `running (our claim) → queued` ([`Store::release_for_retry`]).
pub(crate) const RELEASE_FOR_RETRY_SQL: &str = "UPDATE purchase_items
       SET status = 'queued', error = $3, heartbeat_at = NULL, claim_id = NULL,
           attempts = CASE WHEN $4 THEN greatest(attempts - 1, 0) ELSE attempts END,
           ambiguous_at = CASE WHEN $5 THEN now() ELSE ambiguous_at END,
           updated_at = now()
     WHERE token = $1 AND status = 'running' AND claim_id = $2";

/// `running (our claim) → failed|dead` ([`Store::finish_unsuccessful`]).
pub(crate) const FINISH_UNSUCCESSFUL_SQL: &str = "UPDATE purchase_items
           SET status = $3, error = $4, heartbeat_at = NULL, claim_id = NULL,
               ambiguous_at = CASE WHEN $5 THEN now() ELSE ambiguous_at END,
               updated_at = now()
         WHERE token = $1 AND status = 'running' AND claim_id = $2
     RETURNING execution_id";
