//! `dead_letters`: the archive of the dead-letter queue. The archiver
//! ([`crate::amqp::dead_letters`]) moves each message here in the transaction that also marks
//! its item `dead`, and acks it only after the commit; operators list, show, replay and purge
//! rows of this table, never messages in the queue.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::items::ItemDeath;
use super::{parsed_opt, Cas, Store, StoreError, StoreResult};
use crate::envelope::DeadLetterReason;
use crate::ids::ExecutionId;
use crate::token::IdempotencyToken;

/// Who put a message into the dead-letter queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterOrigin {
    /// A worker refused or gave up on it and said why in the `x-buyonce-*` headers.
    Worker,
    /// The broker dead-lettered it on its own (delivery limit, rejection, expiry); `x-death`
    /// says why.
    Broker,
}

impl DeadLetterOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterOrigin::Worker => "worker",
            DeadLetterOrigin::Broker => "broker",
        }
    }

    fn parse(s: &str) -> StoreResult<Self> {
        match s {
            "worker" => Ok(DeadLetterOrigin::Worker),
            "broker" => Ok(DeadLetterOrigin::Broker),
            other => Err(StoreError::Invalid(format!(
                "unknown dead-letter origin {other:?}"
            ))),
        }
    }
}

/// A dead letter to archive, built from one delivery of the dead-letter queue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDeadLetter {
    pub dedupe_key: String,
    pub reason: DeadLetterReason,
    pub origin: DeadLetterOrigin,
    pub error: Option<String>,
    pub execution_id: Option<String>,
    pub rec_index: Option<i32>,
    pub service: Option<String>,
    /// Full token of the decoded message (never logged; shown masked).
    pub token: Option<IdempotencyToken>,
    pub body: Vec<u8>,
    pub headers: Value,
    pub properties: Value,
    pub delivery_count: Option<i64>,
    pub death_summary: Option<String>,
    pub first_death_at: Option<DateTime<Utc>>,
    pub last_death_at: Option<DateTime<Utc>>,
}

/// What archiving one delivery did.
#[derive(Debug, Clone, PartialEq)]
pub enum Archived {
    /// A new row; `item` is the outcome of the item's `queued|running → dead` CAS when one was
    /// asked for (`Applied` carries the execution ID).
    Inserted {
        id: i64,
        item: Option<Cas<ExecutionId>>,
    },
    /// The same dead letter was archived before (a copy redelivered after a crash between
    /// commit and ack): nothing was written.
    Duplicate { id: i64 },
}

/// One archived dead letter.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetterRow {
    pub id: i64,
    #[serde(skip)]
    pub dedupe_key: String,
    pub reason: DeadLetterReason,
    pub origin: DeadLetterOrigin,
    pub error: Option<String>,
    pub execution_id: Option<String>,
    pub rec_index: Option<i32>,
    pub service: Option<String>,
    #[serde(skip)]
    pub token: Option<IdempotencyToken>,
    #[serde(skip)]
    pub body: Vec<u8>,
    #[serde(skip)]
    pub headers: Value,
    #[serde(skip)]
    pub properties: Value,
    pub delivery_count: Option<i64>,
    pub death_summary: Option<String>,
    pub first_death_at: Option<DateTime<Utc>>,
    pub last_death_at: Option<DateTime<Utc>>,
    pub archived_at: DateTime<Utc>,
    pub replay_count: i32,
    pub replayed_at: Option<DateTime<Utc>>,
}

impl DeadLetterRow {
    /// The token's log-safe form (`(none)` when the body did not decode).
    pub fn masked_token(&self) -> String {
        crate::token::mask(self.token.as_ref().map_or("", IdempotencyToken::as_str))
    }
}

/// Which dead letters a list, replay or purge means. Every set field narrows the selection;
/// rows come in archive (`id`) order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeadLetterFilter {
    pub ids: Option<Vec<i64>>,
    pub reason: Option<DeadLetterReason>,
    pub execution_id: Option<String>,
    pub service: Option<String>,
    /// Only rows never replayed (bulk replays: a replayed item that dies again comes back as
    /// a new row).
    pub unreplayed_only: bool,
    /// Keyset cursor: only rows with `id > after_id`.
    pub after_id: Option<i64>,
    pub limit: Option<i64>,
}

const COLUMNS: &str = "id, dedupe_key, reason, origin, error, execution_id, rec_index, service, \
     token, body, headers, properties, delivery_count, death_summary, first_death_at, \
     last_death_at, archived_at, replay_count, replayed_at";

/// The WHERE clause shared by select, count and delete (parameters $1..$6).
const WHERE: &str = "($1::bigint[] IS NULL OR id = ANY($1))
       AND ($2::text IS NULL OR reason = $2)
       AND ($3::text IS NULL OR execution_id = $3)
       AND ($4::text IS NULL OR service = $4)
       AND (NOT $5 OR replay_count = 0)
       AND ($6::bigint IS NULL OR id > $6)";

fn row_to_dead_letter(row: &Row) -> StoreResult<DeadLetterRow> {
    let reason: String = row.try_get(2)?;
    let origin: String = row.try_get(3)?;
    Ok(DeadLetterRow {
        id: row.try_get(0)?,
        dedupe_key: row.try_get(1)?,
        reason: DeadLetterReason::parse(&reason)
            .ok_or_else(|| StoreError::Invalid(format!("unknown dead-letter reason {reason:?}")))?,
        origin: DeadLetterOrigin::parse(&origin)?,
        error: row.try_get(4)?,
        execution_id: row.try_get(5)?,
        rec_index: row.try_get(6)?,
        service: row.try_get(7)?,
        token: parsed_opt(row, 8, IdempotencyToken::parse)?,
        body: row.try_get(9)?,
        headers: row.try_get(10)?,
        properties: row.try_get(11)?,
        delivery_count: row.try_get(12)?,
        death_summary: row.try_get(13)?,
        first_death_at: row.try_get(14)?,
        last_death_at: row.try_get(15)?,
        archived_at: row.try_get(16)?,
        replay_count: row.try_get(17)?,
        replayed_at: row.try_get(18)?,
    })
}

/// The filter's values as statement parameters $1..$6, owned so the borrow is easy.
struct FilterParams {
    ids: Option<Vec<i64>>,
    reason: Option<&'static str>,
    execution_id: Option<String>,
    service: Option<String>,
    unreplayed_only: bool,
    after_id: Option<i64>,
}

impl FilterParams {
    fn new(f: &DeadLetterFilter) -> Self {
        Self {
            ids: f.ids.clone(),
            reason: f.reason.map(DeadLetterReason::as_str),
            execution_id: f.execution_id.clone(),
            service: f.service.clone(),
            unreplayed_only: f.unreplayed_only,
            after_id: f.after_id,
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 6] {
        [
            &self.ids,
            &self.reason,
            &self.execution_id,
            &self.service,
            &self.unreplayed_only,
            &self.after_id,
        ]
    }
}

impl Store {
    /// Archives one dead letter: inserts it unless its `dedupe_key` is already there and, for a
    /// new row with `mark_item`, moves the item `queued|running → dead` — in one transaction,
    /// so an acked message always has both its row and its item's status. The CAS matches the
    /// item by token, execution, index and approved recommendation: a message that is not the
    /// item's own cannot end it.
    #[tracing::instrument(skip_all, fields(dead_letter.reason = %dl.reason, execution.id = ?dl.execution_id, item.rec_index = ?dl.rec_index))]
    pub async fn archive_dead_letter(
        &self,
        dl: &NewDeadLetter,
        mark_item: Option<&ItemDeath>,
    ) -> StoreResult<Archived> {
        let mut client = self.conn("archive_dead_letter").await?;
        let tx = client.transaction().await?;
        let inserted = tx
            .query_opt(
                "INSERT INTO dead_letters (dedupe_key, reason, origin, error, execution_id,
                                           rec_index, service, token, body, headers, properties,
                                           delivery_count, death_summary, first_death_at,
                                           last_death_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
                 ON CONFLICT (dedupe_key) DO NOTHING
                 RETURNING id",
                &[
                    &dl.dedupe_key,
                    &dl.reason.as_str(),
                    &dl.origin.as_str(),
                    &dl.error,
                    &dl.execution_id,
                    &dl.rec_index,
                    &dl.service,
                    &dl.token.as_ref().map(IdempotencyToken::as_str),
                    &dl.body,
                    &dl.headers,
                    &dl.properties,
                    &dl.delivery_count,
                    &dl.death_summary,
                    &dl.first_death_at,
                    &dl.last_death_at,
                ],
            )
            .await?;
        let Some(row) = inserted else {
            let existing = tx
                .query_one(
                    "SELECT id FROM dead_letters WHERE dedupe_key = $1",
                    &[&dl.dedupe_key],
                )
                .await?;
            tx.rollback().await?;
            return Ok(Archived::Duplicate {
                id: existing.try_get(0)?,
            });
        };
        let id: i64 = row.try_get(0)?;
        let item = match mark_item {
            Some(death) => Some(super::items::mark_dead_in(&tx, death).await?),
            None => None,
        };
        tx.commit().await?;
        Ok(Archived::Inserted { id, item })
    }

    /// Dead letters matching `filter`, in archive order.
    pub async fn dead_letters(&self, filter: &DeadLetterFilter) -> StoreResult<Vec<DeadLetterRow>> {
        let client = self.conn("dead_letters").await?;
        let p = FilterParams::new(filter);
        let mut params: Vec<&(dyn ToSql + Sync)> = p.params().to_vec();
        params.push(&filter.limit);
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM dead_letters WHERE {WHERE} ORDER BY id LIMIT $7::bigint"
                ),
                &params,
            )
            .await?;
        rows.iter().map(row_to_dead_letter).collect()
    }

    /// How many dead letters match `filter` (its `limit` is ignored).
    pub async fn count_dead_letters(&self, filter: &DeadLetterFilter) -> StoreResult<i64> {
        let client = self.conn("count_dead_letters").await?;
        let p = FilterParams::new(filter);
        let row = client
            .query_one(
                &format!("SELECT count(*) FROM dead_letters WHERE {WHERE}"),
                &p.params(),
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    /// One dead letter.
    pub async fn dead_letter(&self, id: i64) -> StoreResult<Option<DeadLetterRow>> {
        let client = self.conn("dead_letter").await?;
        let row = client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM dead_letters WHERE id = $1"),
                &[&id],
            )
            .await?;
        row.as_ref().map(row_to_dead_letter).transpose()
    }

    /// Records that these dead letters were replayed (their items went back to work):
    /// `replay_count + 1`, `replayed_at = now()`. Returns how many rows changed.
    pub async fn mark_dead_letters_replayed(&self, ids: &[i64]) -> StoreResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let client = self.conn("mark_dead_letters_replayed").await?;
        Ok(client
            .execute(
                "UPDATE dead_letters SET replay_count = replay_count + 1, replayed_at = now()
                  WHERE id = ANY($1)",
                &[&ids],
            )
            .await?)
    }

    /// Deletes the dead letters matching `filter` (its `limit` is ignored) and returns how many
    /// went, per reason. Items are not touched: a `dead` item stays `dead` (re-drive still
    /// finds it).
    pub async fn delete_dead_letters(
        &self,
        filter: &DeadLetterFilter,
    ) -> StoreResult<Vec<(DeadLetterReason, i64)>> {
        let client = self.conn("delete_dead_letters").await?;
        let p = FilterParams::new(filter);
        let rows = client
            .query(
                &format!(
                    "WITH gone AS (DELETE FROM dead_letters WHERE {WHERE} RETURNING reason)
                     SELECT reason, count(*) FROM gone GROUP BY reason ORDER BY reason"
                ),
                &p.params(),
            )
            .await?;
        rows.iter()
            .map(|r| {
                let reason: String = r.try_get(0)?;
                Ok((
                    DeadLetterReason::parse(&reason).ok_or_else(|| {
                        StoreError::Invalid(format!("unknown dead-letter reason {reason:?}"))
                    })?,
                    r.try_get(1)?,
                ))
            })
            .collect()
    }

    /// Archived dead letters per reason, and how many of them were never replayed.
    pub async fn dead_letter_counts(&self) -> StoreResult<Vec<(DeadLetterReason, i64, i64)>> {
        let client = self.conn("dead_letter_counts").await?;
        let rows = client
            .query(
                "SELECT reason, count(*), count(*) FILTER (WHERE replay_count = 0)
                   FROM dead_letters GROUP BY reason ORDER BY reason",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let reason: String = r.try_get(0)?;
                Ok((
                    DeadLetterReason::parse(&reason).ok_or_else(|| {
                        StoreError::Invalid(format!("unknown dead-letter reason {reason:?}"))
                    })?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                ))
            })
            .collect()
    }
}
