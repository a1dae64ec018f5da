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
//!
//! This module holds the row type and its mapping; the SQL is split by who runs it:
//! `claim.rs` the worker's lifecycle CASes, `transitions.rs` the reaper's and the operator's
//! moves, `queries.rs` the reads (and the outbox's published mark).

pub(crate) mod claim;
pub(crate) mod queries;
mod transitions;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::Row;

use super::{cas_miss, invalid_column, parsed, Cas, StoreError, StoreResult};
use crate::document::{Provider, Recommendation, Service};
use crate::envelope::PurchaseMessage;
use crate::ids::{ExecutionId, LineageKey, RecIndex};
use crate::token::IdempotencyToken;

pub use claim::{BuyCheck, Claim, Recorded, Recording};
pub(crate) use transitions::mark_dead_in;
pub use transitions::ItemDeath;

/// An item's status by token, for [`cas_miss`].
pub(crate) const ITEM_STATUS: &str = "SELECT status FROM purchase_items WHERE token = $1";

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

/// Builds the canonical recommendation JSON stored in `purchase_items.recommendation`.
pub fn recommendation_json(rec: &Recommendation) -> Value {
    serde_json::to_value(rec).unwrap_or(Value::Null)
}

/// The outcome of an item CAS whose statement returns the item's execution ID: applied with
/// it, or why nothing matched (asked on the same connection).
async fn item_cas(
    client: &deadpool_postgres::ClientWrapper,
    rows: &[tokio_postgres::Row],
    token: &IdempotencyToken,
) -> StoreResult<Cas<ExecutionId>> {
    match rows.first() {
        Some(row) => Ok(Cas::Applied(parsed(row, 0, ExecutionId::parse)?)),
        None => cas_miss(client, ITEM_STATUS, token.as_str()).await,
    }
}
