//! `purchase_items`: one row per recommendation, the outbox and the purchase state machine.
//!
//! ```text
//! queued ──claim──▶ running ──record──▶ succeeded
//!   ▲                 │ ├──transient──▶ queued (retry wait queue)
//!   │                 │ ├──permanent──▶ failed
//!   │                 │ └──exhausted──▶ dead
//!   │                 └──reaper (stale heartbeat)──▶ failed
//!   └──re-drive── failed | dead (| cancelled)          queued ──cancel──▶ cancelled
//! ```

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{cas_miss, invalid_column, parsed, Cas, Store, StoreError, StoreResult};
use crate::document::{Provider, Recommendation, Service};
use crate::envelope::PurchaseMessage;
use crate::ids::{ExecutionId, LineageKey, RecIndex};
use crate::token::IdempotencyToken;

/// An item's status by token, for [`cas_miss`].
const ITEM_STATUS: &str = "SELECT status FROM purchase_items WHERE token = $1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Dead,
    Cancelled,
}

impl ItemStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Queued => "queued",
            ItemStatus::Running => "running",
            ItemStatus::Succeeded => "succeeded",
            ItemStatus::Failed => "failed",
            ItemStatus::Dead => "dead",
            ItemStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => ItemStatus::Queued,
            "running" => ItemStatus::Running,
            "succeeded" => ItemStatus::Succeeded,
            "failed" => ItemStatus::Failed,
            "dead" => ItemStatus::Dead,
            "cancelled" => ItemStatus::Cancelled,
            _ => return None,
        })
    }

    /// No worker will touch the item again without an operator.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ItemStatus::Succeeded | ItemStatus::Failed | ItemStatus::Dead | ItemStatus::Cancelled
        )
    }
}

/// One item as stored, its identifiers and recommendation parsed once when the row is read.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ItemRow {
    pub execution_id: ExecutionId,
    pub rec_index: RecIndex,
    #[serde(skip)]
    pub token: IdempotencyToken,
    pub provider: Provider,
    pub service: Service,
    pub account: String,
    pub region: Option<String>,
    /// Serialized in its stored, canonical form (see [`recommendation_json`]).
    #[serde(serialize_with = "serialize_canonical")]
    pub recommendation: Recommendation,
    pub status: ItemStatus,
    pub attempts: i32,
    pub commitment_id: Option<String>,
    pub cost_usd: Option<f64>,
    pub error: Option<String>,
    pub tag_pending: bool,
    pub provider_state: Option<Value>,
    pub published_at: Option<DateTime<Utc>>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Since when an earlier purchase call may have gone through unseen (see
    /// [`Claim::Claimed::ambiguous_at`]).
    pub ambiguous_at: Option<DateTime<Utc>>,
}

/// Columns of [`ItemRow`], in [`item_from_row`] order (prefix `i.` in joins).
pub(crate) const ITEM_COLUMNS: &str =
    "i.execution_id, i.rec_index, i.token, i.provider, i.service, \
     i.account, i.region, i.recommendation, i.status, i.attempts, i.commitment_id, \
     i.cost_usd::float8, i.error, i.tag_pending, i.provider_state, i.published_at, \
     i.heartbeat_at, i.created_at, i.updated_at, i.ambiguous_at";

/// How many columns [`ITEM_COLUMNS`] selects: a query that adds columns after them reads its
/// first extra one at this index.
pub(crate) const ITEM_COLUMN_COUNT: usize = 20;

pub(crate) fn item_from_row(row: &Row) -> StoreResult<ItemRow> {
    let status: String = row.try_get(8)?;
    Ok(ItemRow {
        execution_id: parsed(row, 0, ExecutionId::parse)?,
        rec_index: rec_index_at(row, 1)?,
        token: parsed(row, 2, IdempotencyToken::parse)?,
        provider: parsed(row, 3, |s| Provider::parse(s).ok_or("unknown provider"))?,
        service: parsed(row, 4, |s| Service::parse(s).ok_or("unknown service"))?,
        account: row.try_get(5)?,
        region: row.try_get(6)?,
        recommendation: serde_json::from_value(row.try_get(7)?)
            .map_err(|e| invalid_column(row, 7, e))?,
        status: ItemStatus::parse(&status)
            .ok_or_else(|| StoreError::Invalid(format!("unknown item status {status:?}")))?,
        attempts: row.try_get(9)?,
        commitment_id: row.try_get(10)?,
        cost_usd: row.try_get(11)?,
        error: row.try_get(12)?,
        tag_pending: row.try_get(13)?,
        provider_state: row.try_get(14)?,
        published_at: row.try_get(15)?,
        heartbeat_at: row.try_get(16)?,
        created_at: row.try_get(17)?,
        updated_at: row.try_get(18)?,
        ambiguous_at: row.try_get(19)?,
    })
}

/// A `rec_index` column (`INT`) as a [`RecIndex`].
fn rec_index_at(row: &Row, idx: usize) -> StoreResult<RecIndex> {
    let raw: i32 = row.try_get(idx)?;
    u32::try_from(raw)
        .map_err(|e| e.to_string())
        .and_then(RecIndex::new)
        .map_err(|e| invalid_column(row, idx, e))
}

/// The recommendation as [`recommendation_json`] stores it: a JSON object with sorted keys,
/// which is what `ItemRow` printed when it held the column's `jsonb` value. Only where jsonb
/// rewrote a number does the text differ: an amount of 1e16 or more (`max_upfront_usd` is the
/// only unbounded one) printed as jsonb's integer, now as serde writes it, and `-0.0` as `0.0`.
fn serialize_canonical<S: serde::Serializer>(
    rec: &Recommendation,
    s: S,
) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&recommendation_json(rec), s)
}

impl ItemRow {
    /// The token's log-safe form.
    pub fn masked_token(&self) -> String {
        self.token.mask()
    }

    /// Rebuilds the purchase message for this item (republish, re-drive, relay).
    pub fn to_message(&self, lineage_key: &LineageKey) -> StoreResult<PurchaseMessage> {
        let msg = PurchaseMessage::new(
            self.execution_id.clone(),
            lineage_key.clone(),
            self.rec_index,
            self.recommendation.clone(),
        );
        if msg.token != self.token {
            return Err(StoreError::Invalid(format!(
                "stored token {} does not derive from the execution's idempotency key",
                self.masked_token()
            )));
        }
        Ok(msg)
    }
}

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
}

/// The item a broker-dead-lettered message belongs to, for the archiver's
/// `queued|running → dead` CAS ([`Store::archive_dead_letter`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ItemDeath {
    pub execution_id: ExecutionId,
    pub rec_index: RecIndex,
    pub token: IdempotencyToken,
    /// The message's recommendation: only the item's own message may end it.
    pub recommendation: Recommendation,
    pub error: String,
}

/// `queued|running → dead` for the item of a dead-lettered message, inside the archiver's
/// transaction. Matches token, execution, index and recommendation together.
pub(crate) async fn mark_dead_in(
    tx: &tokio_postgres::Transaction<'_>,
    death: &ItemDeath,
) -> StoreResult<Cas<ExecutionId>> {
    let rows = tx
        .query(
            "UPDATE purchase_items
                SET status = 'dead', error = $5, heartbeat_at = NULL, claim_id = NULL,
                    -- A running item's owner may have died inside the purchase call.
                    ambiguous_at = CASE WHEN status = 'running' THEN now() ELSE ambiguous_at END,
                    updated_at = now()
              WHERE token = $1 AND execution_id = $2 AND rec_index = $3
                AND recommendation = $4::jsonb AND status IN ('queued', 'running')
          RETURNING execution_id",
            &[
                &death.token.as_str(),
                &death.execution_id.as_str(),
                &death.rec_index.as_i32(),
                &recommendation_json(&death.recommendation),
                &death.error,
            ],
        )
        .await?;
    if let Some(row) = rows.first() {
        return Ok(Cas::Applied(parsed(row, 0, ExecutionId::parse)?));
    }
    let row = tx
        .query_opt(
            "SELECT status FROM purchase_items
              WHERE token = $1 AND execution_id = $2 AND rec_index = $3",
            &[
                &death.token.as_str(),
                &death.execution_id.as_str(),
                &death.rec_index.as_i32(),
            ],
        )
        .await?;
    Ok(match row {
        None => Cas::NotFound,
        Some(r) => Cas::Conflict {
            actual: r.try_get(0)?,
        },
    })
}

/// A row of [`ITEM_COLUMNS`] followed by its execution's `idempotency_key`.
fn item_with_lineage_from_row(row: &Row) -> StoreResult<(ItemRow, LineageKey)> {
    Ok((
        item_from_row(row)?,
        parsed(row, ITEM_COLUMN_COUNT, LineageKey::parse)?,
    ))
}

/// Tokens as a `text[]` parameter.
fn token_strs(tokens: &[IdempotencyToken]) -> Vec<&str> {
    tokens.iter().map(IdempotencyToken::as_str).collect()
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Store {
    /// Authorises and claims in one statement: `queued → running`, or `running → running` when
    /// the owner's heartbeat is older than `stale_after` (the owner died). Requires the item to
    /// exist, its execution not cancelled, the same token and the same recommendation, and the
    /// fleet not paused. When nothing matches, a second query says why.
    #[tracing::instrument(skip_all, fields(execution.id = %msg.execution_id, item.rec_index = %msg.rec_index, token = %msg.token))]
    pub async fn claim(&self, msg: &PurchaseMessage, stale_after: Duration) -> StoreResult<Claim> {
        let client = self.conn("claim").await?;
        let claim_id = Uuid::new_v4();
        let recommendation = serde_json::to_value(&msg.recommendation)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let stmt = client
            .prepare_cached(
                "UPDATE purchase_items i
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
              RETURNING i.attempts, i.provider_state, i.ambiguous_at",
            )
            .await?;
        let rows = client
            .query(
                &stmt,
                &[
                    &msg.execution_id.as_str(),
                    &msg.rec_index.as_i32(),
                    &msg.token.as_str(),
                    &claim_id,
                    &recommendation,
                    &secs(stale_after),
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
        let row = client
            .query_opt(
                "SELECT i.status, i.token, i.recommendation = $3::jsonb, e.status,
                        i.heartbeat_at IS NOT NULL
                            AND i.heartbeat_at >= now() - make_interval(secs => $4),
                        (SELECT paused FROM fleet_control), i.commitment_id
                   FROM purchase_items i JOIN executions e USING (execution_id)
                  WHERE i.execution_id = $1 AND i.rec_index = $2",
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
        let stmt = client
            .prepare_cached(
                "UPDATE purchase_items SET heartbeat_at = now()
                  WHERE token = $1 AND status = 'running' AND claim_id = $2",
            )
            .await?;
        let n = client.execute(&stmt, &[&token.as_str(), &claim_id]).await?;
        Ok(n == 1)
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
        let stmt = client
            .prepare_cached(
                "UPDATE purchase_items SET provider_state = $3, updated_at = now()
                  WHERE token = $1 AND status = 'running' AND claim_id = $2",
            )
            .await?;
        let n = client
            .execute(&stmt, &[&token.as_str(), &claim_id, state])
            .await?;
        Ok(n == 1)
    }

    /// Records a bought (or recovered) commitment: inserts it into the `commitments` ledger
    /// (the token is the key, so a second record is a no-op) and moves the item
    /// `any status except succeeded → succeeded`, in one statement. Any status is allowed on
    /// purpose: the money is spent, so Postgres must say so even if the reaper or an operator
    /// moved the item meanwhile. Returns the execution ID when the item changed.
    #[tracing::instrument(skip_all, fields(token = %token, commitment.id = %recorded.commitment_id))]
    pub async fn record_success(
        &self,
        token: &IdempotencyToken,
        recorded: &Recorded,
    ) -> StoreResult<Cas<ExecutionId>> {
        let client = self.conn("record_success").await?;
        let stmt = client
            .prepare_cached(
                "WITH c AS (
                     INSERT INTO commitments (token, execution_id, rec_index, provider, service,
                                              account, region, commitment_id, cost_usd, how)
                     SELECT token, execution_id, rec_index, provider, service, account, region,
                            $2, $3::float8::numeric, $4
                       FROM purchase_items WHERE token = $1
                     ON CONFLICT (token) DO NOTHING
                 )
                 UPDATE purchase_items
                    SET status = 'succeeded', commitment_id = $2, cost_usd = $3::float8::numeric,
                        error = NULL, heartbeat_at = NULL, claim_id = NULL, tag_pending = $5,
                        updated_at = now()
                  WHERE token = $1 AND status <> 'succeeded'
              RETURNING execution_id",
            )
            .await?;
        let rows = client
            .query(
                &stmt,
                &[
                    &token.as_str(),
                    &recorded.commitment_id,
                    &recorded.cost_usd,
                    &recorded.how,
                    &recorded.tag_pending,
                ],
            )
            .await?;
        item_cas(&client, &rows, token).await
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
        let n = client
            .execute(
                "UPDATE purchase_items
                    SET status = 'queued', error = $3, heartbeat_at = NULL, claim_id = NULL,
                        attempts = CASE WHEN $4 THEN greatest(attempts - 1, 0) ELSE attempts END,
                        ambiguous_at = CASE WHEN $5 THEN now() ELSE ambiguous_at END,
                        updated_at = now()
                  WHERE token = $1 AND status = 'running' AND claim_id = $2",
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
        let rows = client
            .query(
                "UPDATE purchase_items
                    SET status = $3, error = $4, heartbeat_at = NULL, claim_id = NULL,
                        ambiguous_at = CASE WHEN $5 THEN now() ELSE ambiguous_at END,
                        updated_at = now()
                  WHERE token = $1 AND status = 'running' AND claim_id = $2
              RETURNING execution_id",
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

    /// Marks an item dead because its message was dead-lettered by the broker or refused by a
    /// worker before a claim: `queued|running → dead`.
    pub async fn mark_dead(
        &self,
        token: &IdempotencyToken,
        error: &str,
    ) -> StoreResult<Cas<ExecutionId>> {
        let client = self.conn("mark_dead").await?;
        let rows = client
            .query(
                "UPDATE purchase_items
                    SET status = 'dead', error = $2, heartbeat_at = NULL, claim_id = NULL,
                        ambiguous_at = CASE WHEN status = 'running' THEN now()
                                            ELSE ambiguous_at END,
                        updated_at = now()
                  WHERE token = $1 AND status IN ('queued', 'running')
              RETURNING execution_id",
                &[&token.as_str(), &error],
            )
            .await?;
        item_cas(&client, &rows, token).await
    }

    /// Number of items per status across every execution (the fleet summary).
    pub async fn item_status_counts(&self) -> StoreResult<Vec<(ItemStatus, i64)>> {
        let client = self.conn("item_status_counts").await?;
        let rows = client
            .query(
                "SELECT status, count(*) FROM purchase_items GROUP BY status ORDER BY status",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let status: String = r.try_get(0)?;
                let status = ItemStatus::parse(&status).ok_or_else(|| {
                    StoreError::Invalid(format!("unknown item status {status:?}"))
                })?;
                Ok((status, r.try_get(1)?))
            })
            .collect()
    }

    /// Marks items as published (after the broker confirmed their messages).
    pub async fn mark_published(&self, tokens: &[IdempotencyToken]) -> StoreResult<u64> {
        if tokens.is_empty() {
            return Ok(0);
        }
        let tokens = token_strs(tokens);
        let client = self.conn("mark_published").await?;
        Ok(client
            .execute(
                "UPDATE purchase_items SET published_at = now()
                  WHERE token = ANY($1) AND published_at IS NULL",
                &[&tokens],
            )
            .await?)
    }

    /// Queued items never published whose row is older than `older_than` (the producer died
    /// between commit and publish), with their lineage keys, oldest first.
    pub async fn unpublished(
        &self,
        older_than: Duration,
        limit: i64,
    ) -> StoreResult<Vec<(ItemRow, LineageKey)>> {
        let client = self.conn("unpublished").await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {ITEM_COLUMNS}, e.idempotency_key
                       FROM purchase_items i JOIN executions e USING (execution_id)
                      WHERE i.status = 'queued' AND i.published_at IS NULL
                        AND i.created_at < now() - make_interval(secs => $1)
                      ORDER BY i.created_at
                      LIMIT $2"
                ),
                &[&secs(older_than), &limit],
            )
            .await?;
        rows.iter().map(item_with_lineage_from_row).collect()
    }

    /// One item by token.
    pub async fn item_by_token(&self, token: &IdempotencyToken) -> StoreResult<Option<ItemRow>> {
        let client = self.conn("item_by_token").await?;
        let row = client
            .query_opt(
                &format!("SELECT {ITEM_COLUMNS} FROM purchase_items i WHERE i.token = $1"),
                &[&token.as_str()],
            )
            .await?;
        row.as_ref().map(item_from_row).transpose()
    }

    /// One item with its execution's lineage key.
    pub async fn item_with_lineage(
        &self,
        execution_id: &ExecutionId,
        rec_index: RecIndex,
    ) -> StoreResult<Option<(ItemRow, LineageKey)>> {
        let client = self.conn("item_with_lineage").await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT {ITEM_COLUMNS}, e.idempotency_key
                       FROM purchase_items i JOIN executions e USING (execution_id)
                      WHERE i.execution_id = $1 AND i.rec_index = $2"
                ),
                &[&execution_id.as_str(), &rec_index.as_i32()],
            )
            .await?;
        row.as_ref().map(item_with_lineage_from_row).transpose()
    }

    /// Items still `running` whose heartbeat is older than `older_than`, oldest first, after
    /// the keyset cursor `after` (heartbeat, token) of the previous batch. Uses the
    /// `purchase_items_running` partial index. Only `running` is ever selected.
    pub async fn stale_running(
        &self,
        older_than: Duration,
        limit: i64,
        after: Option<(DateTime<Utc>, IdempotencyToken)>,
    ) -> StoreResult<Vec<ItemRow>> {
        if older_than.is_zero() {
            return Err(StoreError::Invalid(
                "older_than must be positive: a zero cutoff would reap live purchases".into(),
            ));
        }
        let client = self.conn("stale_running").await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {ITEM_COLUMNS} FROM purchase_items i
                  WHERE i.status = 'running'
                    AND i.heartbeat_at < now() - make_interval(secs => $1)
                    AND ($3::timestamptz IS NULL OR (i.heartbeat_at, i.token) > ($3, $4))
                  ORDER BY i.heartbeat_at, i.token
                  LIMIT $2"
            ))
            .await?;
        let (at, token) = match &after {
            Some((at, token)) => (Some(*at), Some(token.as_str())),
            None => (None, None),
        };
        let rows = client
            .query(&stmt, &[&secs(older_than), &limit, &at, &token])
            .await?;
        rows.iter().map(item_from_row).collect()
    }

    /// The reaper's CAS: `running → failed` with `reason`, only if the heartbeat is still older
    /// than `older_than` (a worker that heartbeated since keeps its item).
    pub async fn reap_if_stale(
        &self,
        token: &IdempotencyToken,
        older_than: Duration,
        reason: &str,
    ) -> StoreResult<Cas<ExecutionId>> {
        if older_than.is_zero() {
            return Err(StoreError::Invalid("older_than must be positive".into()));
        }
        let client = self.conn("reap_if_stale").await?;
        let rows = client
            .query(
                "UPDATE purchase_items
                    SET status = 'failed', error = $3, claim_id = NULL, updated_at = now(),
                        -- The owner stopped heartbeating, maybe inside the purchase call.
                        ambiguous_at = now()
                  WHERE token = $1 AND status = 'running'
                    AND heartbeat_at < now() - make_interval(secs => $2)
              RETURNING execution_id",
                &[&token.as_str(), &secs(older_than), &reason],
            )
            .await?;
        item_cas(&client, &rows, token).await
    }

    /// The reaper's batched CAS: `running → failed` with `reason` for each of `tokens` whose
    /// heartbeat is still older than `older_than`, in one statement. Returns the tokens it moved
    /// with their execution IDs; the others lost a race (see [`Store::statuses_of`]).
    pub async fn reap_batch(
        &self,
        tokens: &[IdempotencyToken],
        older_than: Duration,
        reason: &str,
    ) -> StoreResult<Vec<(IdempotencyToken, ExecutionId)>> {
        if older_than.is_zero() {
            return Err(StoreError::Invalid("older_than must be positive".into()));
        }
        let tokens = token_strs(tokens);
        let client = self.conn("reap_batch").await?;
        let rows = client
            .query(
                "UPDATE purchase_items
                    SET status = 'failed', error = $3, claim_id = NULL, updated_at = now(),
                        -- The owner stopped heartbeating, maybe inside the purchase call.
                        ambiguous_at = now()
                  WHERE token = ANY($1) AND status = 'running'
                    AND heartbeat_at < now() - make_interval(secs => $2)
              RETURNING token, execution_id",
                &[&tokens, &secs(older_than), &reason],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    parsed(r, 0, IdempotencyToken::parse)?,
                    parsed(r, 1, ExecutionId::parse)?,
                ))
            })
            .collect()
    }

    /// Current status of each token that still exists.
    pub async fn statuses_of(
        &self,
        tokens: &[IdempotencyToken],
    ) -> StoreResult<Vec<(IdempotencyToken, String)>> {
        let tokens = token_strs(tokens);
        let client = self.conn("statuses_of").await?;
        let rows = client
            .query(
                "SELECT token, status FROM purchase_items WHERE token = ANY($1)",
                &[&tokens],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((parsed(r, 0, IdempotencyToken::parse)?, r.try_get(1)?)))
            .collect()
    }

    /// Items whose token tag is still to be written, oldest first.
    pub async fn tag_pending(&self, limit: i64) -> StoreResult<Vec<ItemRow>> {
        let client = self.conn("tag_pending").await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {ITEM_COLUMNS} FROM purchase_items i
                      WHERE i.tag_pending ORDER BY i.updated_at LIMIT $1"
                ),
                &[&limit],
            )
            .await?;
        rows.iter().map(item_from_row).collect()
    }

    /// Clears `tag_pending` after the tag was written.
    pub async fn clear_tag_pending(&self, token: &IdempotencyToken) -> StoreResult<bool> {
        let client = self.conn("clear_tag_pending").await?;
        let n = client
            .execute(
                "UPDATE purchase_items SET tag_pending = false, updated_at = now()
                  WHERE token = $1 AND tag_pending",
                &[&token.as_str()],
            )
            .await?;
        Ok(n == 1)
    }

    /// Re-drive: `failed|dead (|cancelled) → queued` for the given execution, unpublished,
    /// error kept for the record, attempts reset when `reset_attempts` (an operator re-drive)
    /// and kept otherwise (the reaper's automatic re-drive, which respects `max_attempts`).
    /// Only items with `attempts < max_attempts` move when `max_attempts` is given.
    pub async fn requeue(
        &self,
        execution_id: &ExecutionId,
        statuses: &[ItemStatus],
        only_tokens: Option<&[IdempotencyToken]>,
        reset_attempts: bool,
        max_attempts: Option<i32>,
    ) -> StoreResult<Vec<(ItemRow, LineageKey)>> {
        let client = self.conn("requeue").await?;
        let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        let only_tokens = only_tokens.map(token_strs);
        let rows = client
            .query(
                &format!(
                    "WITH moved AS (
                         UPDATE purchase_items i
                            SET status = 'queued', published_at = NULL, heartbeat_at = NULL,
                                claim_id = NULL,
                                attempts = CASE WHEN $4 THEN 0 ELSE i.attempts END,
                                updated_at = now()
                          WHERE i.execution_id = $1 AND i.status = ANY($2)
                            AND ($3::text[] IS NULL OR i.token = ANY($3))
                            AND ($5::int IS NULL OR i.attempts < $5)
                      RETURNING i.*
                     )
                     SELECT {ITEM_COLUMNS}, e.idempotency_key
                       FROM moved i JOIN executions e USING (execution_id)
                      ORDER BY i.rec_index"
                ),
                &[
                    &execution_id.as_str(),
                    &statuses,
                    &only_tokens,
                    &reset_attempts,
                    &max_attempts,
                ],
            )
            .await?;
        let moved: Vec<(ItemRow, LineageKey)> = rows
            .iter()
            .map(item_with_lineage_from_row)
            .collect::<StoreResult<_>>()?;
        if !moved.is_empty() {
            client
                .execute(
                    "UPDATE executions SET status = 'running', updated_at = now()
                      WHERE execution_id = $1 AND status <> 'cancelled'",
                    &[&execution_id.as_str()],
                )
                .await?;
        }
        Ok(moved)
    }
}

/// Builds the canonical recommendation JSON stored in `purchase_items.recommendation`.
pub fn recommendation_json(rec: &Recommendation) -> Value {
    serde_json::to_value(rec).unwrap_or(Value::Null)
}

/// The outcome of an item CAS whose statement returns the item's execution ID: applied with
/// it, or why nothing matched (asked on the same connection).
async fn item_cas(
    client: &tokio_postgres::Client,
    rows: &[tokio_postgres::Row],
    token: &IdempotencyToken,
) -> StoreResult<Cas<ExecutionId>> {
    match rows.first() {
        Some(row) => Ok(Cas::Applied(parsed(row, 0, ExecutionId::parse)?)),
        None => cas_miss(client, ITEM_STATUS, token.as_str()).await,
    }
}
