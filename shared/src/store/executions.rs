//! `executions`: one row per approved execution, written with all its items in one transaction.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::{Client, Row};

use super::items::{item_from_row, recommendation_json, ItemRow, ITEM_COLUMNS};
use super::{cas_miss, parsed, Cas, Store, StoreError, StoreResult};
use crate::document::ExecutionDocument;
use crate::ids::{ExecutionId, LineageKey};
use crate::token::IdempotencyToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    /// Recorded; messages not yet (all) published.
    Approved,
    /// Published; items being bought.
    Running,
    Completed,
    PartiallyCompleted,
    Failed,
    Cancelled,
}

impl ExecutionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Approved => "approved",
            ExecutionStatus::Running => "running",
            ExecutionStatus::Completed => "completed",
            ExecutionStatus::PartiallyCompleted => "partially_completed",
            ExecutionStatus::Failed => "failed",
            ExecutionStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "approved" => ExecutionStatus::Approved,
            "running" => ExecutionStatus::Running,
            "completed" => ExecutionStatus::Completed,
            "partially_completed" => ExecutionStatus::PartiallyCompleted,
            "failed" => ExecutionStatus::Failed,
            "cancelled" => ExecutionStatus::Cancelled,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ExecutionRow {
    pub execution_id: ExecutionId,
    #[serde(skip)]
    pub idempotency_key: LineageKey,
    pub status: ExecutionStatus,
    pub source: String,
    pub approved_by: String,
    pub item_count: i32,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip)]
    pub document: Value,
}

const EXECUTION_COLUMNS: &str = "execution_id, idempotency_key, status, source, approved_by, \
     item_count, error, created_at, updated_at, document";

fn execution_from_row(row: &Row) -> StoreResult<ExecutionRow> {
    let status: String = row.try_get(2)?;
    Ok(ExecutionRow {
        execution_id: parsed(row, 0, ExecutionId::parse)?,
        idempotency_key: parsed(row, 1, LineageKey::parse)?,
        status: ExecutionStatus::parse(&status)
            .ok_or_else(|| StoreError::Invalid(format!("unknown execution status {status:?}")))?,
        source: row.try_get(3)?,
        approved_by: row.try_get(4)?,
        item_count: row.try_get(5)?,
        error: row.try_get(6)?,
        created_at: row.try_get(7)?,
        updated_at: row.try_get(8)?,
        document: row.try_get(9)?,
    })
}

/// What recording a submitted execution did.
#[derive(Debug)]
pub enum Submitted {
    /// New execution; its items, all `queued` and unpublished.
    Created(Vec<ItemRow>),
    /// The same document was already recorded; nothing was written. Its current items.
    Identical(Vec<ItemRow>),
    /// The execution ID exists with different content (the stored document is returned).
    Conflict { stored: Box<Value> },
}

/// What cancelling an execution did.
#[derive(Debug, Clone)]
pub struct Cancellation {
    /// The execution's status before the cancel.
    pub previous: ExecutionStatus,
    /// Items moved `queued → cancelled`: they will never be bought.
    pub cancelled: Vec<ItemRow>,
    /// Items `running` when the cancel committed: a purchase in flight cannot be recalled, so
    /// they finish (and are recorded) as usual.
    pub running: Vec<ItemRow>,
}

impl Store {
    /// Records an execution and all its items in one transaction (the outbox write).
    ///
    /// Idempotent: the same document again writes nothing and returns `Identical`; the same
    /// `execution_id` with different content returns `Conflict`. The lineage key is written
    /// here once and never updated by any statement.
    #[tracing::instrument(skip_all, fields(execution.id = %doc.execution_id, items = doc.recommendations.len()))]
    pub async fn submit_execution(&self, doc: &ExecutionDocument) -> StoreResult<Submitted> {
        let canonical = doc.canonical();
        let document =
            serde_json::to_value(&canonical).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let lineage = canonical.lineage_key();
        let mut client = self.conn("submit_execution").await?;
        let tx = client.transaction().await?;
        let inserted = tx
            .execute(
                "INSERT INTO executions (execution_id, idempotency_key, status, source, approved_by,
                                         document, item_count)
                 VALUES ($1, $2, 'approved', $3, $4, $5, $6)
                 ON CONFLICT (execution_id) DO NOTHING",
                &[
                    &doc.execution_id.as_str(),
                    &lineage.as_str(),
                    &doc.source,
                    &doc.approved_by,
                    &document,
                    &(doc.recommendations.len() as i32),
                ],
            )
            .await?;
        if inserted == 0 {
            tx.rollback().await?;
            // On the connection already held: taking a second one here deadlocked the pool
            // under concurrent resubmissions (every connection held, each waiting for one more).
            let existing = execution_on(&client, &doc.execution_id)
                .await?
                .ok_or_else(|| StoreError::Invalid("execution vanished after conflict".into()))?;
            // Compared decoded, not as JSON: jsonb rewrites numbers (`1e16` comes back as
            // `10000000000000000`), so the same document can differ as text.
            let same = match serde_json::from_value::<ExecutionDocument>(existing.document.clone())
            {
                Ok(stored) => stored.canonical() == canonical,
                Err(_) => existing.document == document,
            };
            return Ok(if same {
                Submitted::Identical(items_of_on(&client, &doc.execution_id).await?)
            } else {
                Submitted::Conflict {
                    stored: Box::new(existing.document),
                }
            });
        }
        let mut indexes = Vec::with_capacity(doc.recommendations.len());
        let mut tokens = Vec::with_capacity(doc.recommendations.len());
        let mut providers = Vec::new();
        let mut services = Vec::new();
        let mut accounts = Vec::new();
        let mut regions: Vec<Option<String>> = Vec::new();
        let mut recommendations = Vec::new();
        for (i, rec) in doc.recommendations.iter().enumerate() {
            indexes.push(i as i32);
            tokens.push(
                IdempotencyToken::derive(lineage.as_str(), i as u32)
                    .as_str()
                    .to_owned(),
            );
            providers.push(rec.provider.as_str());
            services.push(rec.service.as_str());
            accounts.push(rec.account.clone());
            regions.push(rec.region.clone());
            recommendations.push(recommendation_json(rec));
        }
        // One statement for all items, however many there are.
        let rows = tx
            .query(
                &format!(
                    "WITH ins AS (
                         INSERT INTO purchase_items (execution_id, rec_index, token, provider,
                                                     service, account, region, recommendation)
                         SELECT $1, * FROM UNNEST($2::int[], $3::text[], $4::text[], $5::text[],
                                                  $6::text[], $7::text[], $8::jsonb[])
                         RETURNING *
                     )
                     SELECT {ITEM_COLUMNS} FROM ins i ORDER BY i.rec_index"
                ),
                &[
                    &doc.execution_id.as_str(),
                    &indexes,
                    &tokens,
                    &providers,
                    &services,
                    &accounts,
                    &regions,
                    &recommendations,
                ],
            )
            .await?;
        let items = rows
            .iter()
            .map(item_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        tx.commit().await?;
        Ok(Submitted::Created(items))
    }

    /// One execution.
    pub async fn execution(&self, execution_id: &ExecutionId) -> StoreResult<Option<ExecutionRow>> {
        execution_on(&*self.conn("execution").await?, execution_id).await
    }

    /// Every item of an execution, by index.
    pub async fn items_of(&self, execution_id: &ExecutionId) -> StoreResult<Vec<ItemRow>> {
        items_of_on(&*self.conn("items_of").await?, execution_id).await
    }

    /// `approved → running` once its messages are published.
    pub async fn mark_execution_running(&self, execution_id: &ExecutionId) -> StoreResult<Cas<()>> {
        let client = self.conn("mark_execution_running").await?;
        let n = client
            .execute(
                "UPDATE executions SET status = 'running', updated_at = now()
                  WHERE execution_id = $1 AND status = 'approved'",
                &[&execution_id.as_str()],
            )
            .await?;
        if n == 1 {
            return Ok(Cas::Applied(()));
        }
        cas_miss(&client, EXECUTION_STATUS, execution_id.as_str()).await
    }

    /// `approved → running` once none of its items waits to be published any more (none is
    /// `queued` with `published_at` null). The outbox relay publishes an execution's items a
    /// batch at a time, so it moves the execution only after the last one went out. Returns
    /// `Conflict { actual: "approved" }` while items are still unpublished.
    pub async fn mark_execution_running_if_published(
        &self,
        execution_id: &ExecutionId,
    ) -> StoreResult<Cas<()>> {
        let client = self.conn("mark_execution_running_if_published").await?;
        let n = client
            .execute(
                "UPDATE executions e SET status = 'running', updated_at = now()
                  WHERE e.execution_id = $1 AND e.status = 'approved'
                    AND NOT EXISTS (SELECT 1 FROM purchase_items i
                                     WHERE i.execution_id = $1 AND i.status = 'queued'
                                       AND i.published_at IS NULL)",
                &[&execution_id.as_str()],
            )
            .await?;
        if n == 1 {
            return Ok(Cas::Applied(()));
        }
        cas_miss(&client, EXECUTION_STATUS, execution_id.as_str()).await
    }

    /// When no item of the execution is `queued` or `running` any more, sets its aggregate
    /// status: `approved|running → completed | partially_completed | failed`. Cancelled
    /// executions keep `cancelled`. Run after each item ends, outside the item's transaction:
    /// of two items ending at once, the later statement sees both (see DESIGN §4).
    pub async fn finish_execution_if_done(
        &self,
        execution_id: &ExecutionId,
    ) -> StoreResult<Option<ExecutionStatus>> {
        let client = self.conn("finish_execution_if_done").await?;
        // The cheap question first; the aggregate below reads every item of the execution,
        // so it must run once at the end, not after every item (that made big executions
        // quadratic).
        let live = client.prepare_cached(LIVE_ITEM_SQL).await?;
        if client
            .query_opt(&live, &[&execution_id.as_str()])
            .await?
            .is_some()
        {
            return Ok(None);
        }
        let stmt = client
            .prepare_cached(
                "UPDATE executions e
                    SET status = agg.status, updated_at = now(),
                        error = CASE WHEN agg.status = 'completed' THEN NULL
                                     ELSE agg.failed || ' of ' || agg.total || ' items did not succeed' END
                   FROM (SELECT CASE WHEN count(*) FILTER (WHERE status = 'succeeded') = count(*)
                                     THEN 'completed'
                                     WHEN count(*) FILTER (WHERE status = 'succeeded') > 0
                                     THEN 'partially_completed'
                                     ELSE 'failed' END AS status,
                                count(*) FILTER (WHERE status <> 'succeeded') AS failed,
                                count(*) FILTER (WHERE status IN ('queued', 'running')) AS live,
                                count(*) AS total
                           FROM purchase_items WHERE execution_id = $1) agg
                  WHERE e.execution_id = $1
                    AND e.status IN ('approved', 'running')
                    AND agg.live = 0
              RETURNING e.status",
            )
            .await?;
        let row = client.query_opt(&stmt, &[&execution_id.as_str()]).await?;
        row.map(|r| {
            let s: String = r.try_get(0)?;
            ExecutionStatus::parse(&s)
                .ok_or_else(|| StoreError::Invalid(format!("unknown execution status {s:?}")))
        })
        .transpose()
    }

    /// Executions still `approved|running` with no live item (the last item's worker died
    /// between its commit and the aggregate update), oldest first.
    pub async fn open_executions_without_live_items(
        &self,
        limit: i64,
    ) -> StoreResult<Vec<ExecutionId>> {
        let client = self.conn("open_executions_without_live_items").await?;
        let rows = client
            .query(
                "SELECT e.execution_id FROM executions e
                  WHERE e.status IN ('approved', 'running')
                    AND NOT EXISTS (SELECT 1 FROM purchase_items i
                                     WHERE i.execution_id = e.execution_id
                                       AND i.status IN ('queued', 'running'))
                  ORDER BY e.updated_at LIMIT $1",
                &[&limit],
            )
            .await?;
        rows.iter()
            .map(|r| parsed(r, 0, ExecutionId::parse))
            .collect()
    }

    /// Cancels an execution: `approved|running → cancelled`, and every item `queued →
    /// cancelled`, in one transaction. Workers claim only items of executions that are not
    /// cancelled, so after the commit no queued item can start; an item a worker claimed first
    /// is reported in `running`. `Conflict` when the execution already ended or was cancelled.
    #[tracing::instrument(skip_all, fields(execution.id = %execution_id))]
    pub async fn cancel_execution(
        &self,
        execution_id: &ExecutionId,
        cancelled_by: &str,
    ) -> StoreResult<Cas<Cancellation>> {
        let mut client = self.conn("cancel_execution").await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                "SELECT status FROM executions WHERE execution_id = $1 FOR UPDATE",
                &[&execution_id.as_str()],
            )
            .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(Cas::NotFound);
        };
        let status: String = row.try_get(0)?;
        let previous = ExecutionStatus::parse(&status)
            .ok_or_else(|| StoreError::Invalid(format!("unknown execution status {status:?}")))?;
        if !matches!(
            previous,
            ExecutionStatus::Approved | ExecutionStatus::Running
        ) {
            tx.rollback().await?;
            return Ok(Cas::Conflict { actual: status });
        }
        tx.execute(
            "UPDATE executions SET status = 'cancelled', error = $2, updated_at = now()
              WHERE execution_id = $1",
            &[
                &execution_id.as_str(),
                &format!("cancelled by {cancelled_by}"),
            ],
        )
        .await?;
        let cancelled = tx
            .query(
                &format!(
                    "WITH moved AS (
                         UPDATE purchase_items
                            SET status = 'cancelled', error = $2, heartbeat_at = NULL,
                                claim_id = NULL, updated_at = now()
                          WHERE execution_id = $1 AND status = 'queued'
                      RETURNING *
                     )
                     SELECT {ITEM_COLUMNS} FROM moved i ORDER BY i.rec_index"
                ),
                &[
                    &execution_id.as_str(),
                    &format!("cancelled before purchase by {cancelled_by}"),
                ],
            )
            .await?;
        // After the update: an item a worker claimed while we waited for its row lock shows
        // up here, as running.
        let running = tx
            .query(
                &format!(
                    "SELECT {ITEM_COLUMNS} FROM purchase_items i
                      WHERE i.execution_id = $1 AND i.status = 'running' ORDER BY i.rec_index"
                ),
                &[&execution_id.as_str()],
            )
            .await?;
        let cancellation = Cancellation {
            previous,
            cancelled: cancelled
                .iter()
                .map(item_from_row)
                .collect::<StoreResult<_>>()?,
            running: running
                .iter()
                .map(item_from_row)
                .collect::<StoreResult<_>>()?,
        };
        tx.commit().await?;
        Ok(Cas::Applied(cancellation))
    }

    /// Undoes a cancel for a re-drive that includes cancelled items: `cancelled → running`.
    /// Run before the items are requeued, so their messages find a claimable execution.
    pub async fn reopen_cancelled_execution(
        &self,
        execution_id: &ExecutionId,
    ) -> StoreResult<Cas<()>> {
        let client = self.conn("reopen_cancelled_execution").await?;
        let n = client
            .execute(
                "UPDATE executions SET status = 'running', error = NULL, updated_at = now()
                  WHERE execution_id = $1 AND status = 'cancelled'",
                &[&execution_id.as_str()],
            )
            .await?;
        if n == 1 {
            return Ok(Cas::Applied(()));
        }
        cas_miss(&client, EXECUTION_STATUS, execution_id.as_str()).await
    }

    /// Executions with failed or dead items (for re-driving everything that failed).
    pub async fn executions_with_failures(&self) -> StoreResult<Vec<ExecutionId>> {
        let client = self.conn("executions_with_failures").await?;
        let rows = client
            .query(
                "SELECT DISTINCT execution_id FROM purchase_items
                  WHERE status IN ('failed', 'dead') ORDER BY execution_id",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| parsed(r, 0, ExecutionId::parse))
            .collect()
    }
}

// Reads on a connection the caller holds (see `cas_miss` for the rule they serve).

/// An execution's status, for [`cas_miss`].
const EXECUTION_STATUS: &str = "SELECT status FROM executions WHERE execution_id = $1";

/// One live (`queued|running`) item of the execution, if any: the first entry of the
/// execution in `purchase_items_live`, whose key is `(execution_id, rec_index)`. The
/// `ORDER BY … LIMIT 1` on the index's key keeps the plan an index probe with or without
/// statistics; an `EXISTS` over the execution's rows became a sequential scan once the
/// table had them (`shared/tests/plans.rs`).
pub(crate) const LIVE_ITEM_SQL: &str = "SELECT rec_index FROM purchase_items
      WHERE execution_id = $1 AND status IN ('queued', 'running')
      ORDER BY execution_id, rec_index LIMIT 1";

async fn execution_on(
    client: &Client,
    execution_id: &ExecutionId,
) -> StoreResult<Option<ExecutionRow>> {
    let row = client
        .query_opt(
            &format!("SELECT {EXECUTION_COLUMNS} FROM executions WHERE execution_id = $1"),
            &[&execution_id.as_str()],
        )
        .await?;
    row.as_ref().map(execution_from_row).transpose()
}

async fn items_of_on(client: &Client, execution_id: &ExecutionId) -> StoreResult<Vec<ItemRow>> {
    let rows = client
        .query(
            &format!(
                "SELECT {ITEM_COLUMNS} FROM purchase_items i
                  WHERE i.execution_id = $1 ORDER BY i.rec_index"
            ),
            &[&execution_id.as_str()],
        )
        .await?;
    rows.iter().map(item_from_row).collect()
}
