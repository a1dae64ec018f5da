//! Moves made by others than the item's owner: the archiver's and a refusing worker's
//! `queued|running → dead`, the reaper's `running → failed` for stale heartbeats and its
//! clearing of `tag_pending`, and the re-drive `failed|dead (|cancelled) → queued`.

use std::time::Duration;

use super::{
    item_cas, item_with_lineage_from_row, recommendation_json, secs, token_strs, ItemRow,
    ItemStatus, ITEM_COLUMNS,
};
use crate::document::Recommendation;
use crate::ids::{ExecutionId, LineageKey, RecIndex};
use crate::store::{parsed, Cas, Store, StoreError, StoreResult};
use crate::token::IdempotencyToken;

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

impl Store {
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
