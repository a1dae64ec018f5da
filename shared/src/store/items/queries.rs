//! Reads of `purchase_items`: items by token or execution, stale `running` items and pending
//! tags for the reaper, statuses and counts, and the outbox (unpublished items and the mark
//! set once the broker confirmed them, the one write here: it changes no status).

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{
    item_from_row, item_with_lineage_from_row, secs, token_strs, ItemRow, ItemStatus, ITEM_COLUMNS,
};
use crate::ids::{ExecutionId, LineageKey, RecIndex};
use crate::store::{parsed, Store, StoreError, StoreResult};
use crate::token::IdempotencyToken;

impl Store {
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
        let stmt = client.prepare_cached(MARK_PUBLISHED_SQL).await?;
        Ok(client.execute(&stmt, &[&tokens]).await?)
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
}

/// Marks a published batch ([`Store::mark_published`]).
pub(crate) const MARK_PUBLISHED_SQL: &str = "UPDATE purchase_items SET published_at = now()
      WHERE token = ANY($1) AND published_at IS NULL";
