//! Operator re-drive: `failed | dead → queued` (attempts reset), then republish with the same
//! tokens. A cancelled execution is refused unless the operator includes cancelled items
//! (`--include-cancelled`): then `cancelled → queued` too and the execution goes back to
//! `running`. Succeeded items are never touched: the CAS only moves failed and dead rows, and the
//! tokens derive from the execution's lineage key, which nothing ever changes, so a re-driven
//! item that was in fact bought is found by the worker's provider-side guard, not bought again.

use buyonce_shared::amqp::Publisher;
use buyonce_shared::relay::publish_items;
use buyonce_shared::store::{Cas, ExecutionStatus, ItemRow, ItemStatus, Store, StoreError};
use buyonce_shared::{ExecutionId, IdempotencyToken, LineageKey, RecIndex};
use serde::Serialize;
use tracing::{info, warn};

use crate::submit::describe;

/// The statuses an operator re-drive moves back to `queued`.
pub const REDRIVABLE: [ItemStatus; 2] = [ItemStatus::Failed, ItemStatus::Dead];

/// How far a re-drive reaches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedriveOptions {
    /// Also requeue `cancelled` items (and reopen a cancelled execution): undoes a cancel.
    pub include_cancelled: bool,
}

/// One re-driven item.
#[derive(Debug, Clone, Serialize)]
pub struct RedrivenItem {
    pub rec_index: i32,
    pub service: String,
    pub old_status: ItemStatus,
    /// Masked token (the same token as before the re-drive).
    pub token: String,
    pub published: bool,
}

/// What a re-drive did.
#[derive(Debug, Clone, Serialize)]
pub struct RedriveReport {
    pub execution_id: String,
    pub items: Vec<RedrivenItem>,
    pub published: usize,
    pub unpublished: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub publish_errors: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    #[error("no execution {0}")]
    NotFound(String),
    #[error(
        "execution {0} is cancelled, so it is not re-driven; to buy its failed, dead and cancelled \
         items after all, re-drive with --include-cancelled (HTTP: ?include_cancelled=true)"
    )]
    Cancelled(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Requeued, but some messages are not in the queue yet.
    #[error(
        "execution {}: {} items requeued, {} messages not yet published; the relay/reaper will \
         publish them: {}",
        .0.execution_id, .0.items.len(), .0.unpublished, .0.publish_errors.first().map(String::as_str).unwrap_or("unknown error")
    )]
    Publish(Box<RedriveReport>),
}

/// Items moved back to `queued`, not yet published.
#[derive(Debug)]
pub struct Requeued {
    pub execution_id: ExecutionId,
    /// Each moved row (now `queued`, unpublished) with its lineage key and status before.
    pub items: Vec<(ItemRow, LineageKey, ItemStatus)>,
}

impl Requeued {
    fn report(&self, published: &[IdempotencyToken], errors: Vec<String>) -> RedriveReport {
        RedriveReport {
            execution_id: self.execution_id.to_string(),
            items: self
                .items
                .iter()
                .map(|(item, _, old)| RedrivenItem {
                    rec_index: item.rec_index.as_i32(),
                    service: item.service.as_str().to_owned(),
                    old_status: *old,
                    token: item.masked_token(),
                    published: published.contains(&item.token),
                })
                .collect(),
            published: published.len(),
            unpublished: self.items.len() - published.len(),
            publish_errors: errors,
        }
    }

    /// The report for when nothing could be published (the broker is unreachable).
    pub fn unpublished(self, error: &anyhow::Error) -> RedriveError {
        RedriveError::Publish(Box::new(self.report(&[], vec![format!("{error:#}")])))
    }
}

/// Moves the execution's failed and dead items back to `queued` (CAS, attempts reset).
pub async fn requeue_failed(
    store: &Store,
    execution_id: &ExecutionId,
) -> Result<Requeued, RedriveError> {
    requeue_with(store, execution_id, RedriveOptions::default()).await
}

/// Moves the execution's failed and dead (and, with `include_cancelled`, cancelled) items back
/// to `queued` (CAS, attempts reset). With `include_cancelled` a cancelled execution is first
/// reopened (`cancelled → running`), so the republished messages find a claimable execution;
/// if the requeue fails after that, running the re-drive again finishes it.
#[tracing::instrument(skip_all, fields(execution.id = %execution_id, include_cancelled = options.include_cancelled))]
pub async fn requeue_with(
    store: &Store,
    execution_id: &ExecutionId,
    options: RedriveOptions,
) -> Result<Requeued, RedriveError> {
    let execution = store
        .execution(execution_id)
        .await?
        .ok_or_else(|| RedriveError::NotFound(execution_id.to_string()))?;
    let mut statuses = REDRIVABLE.to_vec();
    if options.include_cancelled {
        statuses.push(ItemStatus::Cancelled);
    }
    if execution.status == ExecutionStatus::Cancelled {
        if !options.include_cancelled {
            return Err(RedriveError::Cancelled(execution_id.to_string()));
        }
        match store.reopen_cancelled_execution(execution_id).await? {
            Cas::Applied(()) => info!("cancelled execution reopened for the re-drive"),
            // Another re-drive reopened it meanwhile: carry on.
            Cas::Conflict { .. } => {}
            Cas::NotFound => return Err(RedriveError::NotFound(execution_id.to_string())),
        }
    }
    // Statuses before the move, for the report. Only a failed or dead row can move, and such a
    // row changes meanwhile only by another re-drive or by a late success (which the CAS skips).
    let before: Vec<(RecIndex, ItemStatus)> = store
        .items_of(execution_id)
        .await?
        .iter()
        .map(|i| (i.rec_index, i.status))
        .collect();
    let moved = store
        .requeue(execution_id, &statuses, None, true, None)
        .await?;
    let items = moved
        .into_iter()
        .map(|(item, lineage)| {
            let old = before
                .iter()
                .find(|(i, _)| *i == item.rec_index)
                .map_or(ItemStatus::Failed, |(_, s)| *s);
            info!(item.rec_index = item.rec_index.get(), token = %item.masked_token(), old_status = old.as_str(), "item requeued");
            (item, lineage, old)
        })
        .collect();
    Ok(Requeued {
        execution_id: execution_id.clone(),
        items,
    })
}

/// Publishes the requeued items with their unchanged tokens.
#[tracing::instrument(skip_all, fields(execution.id = %requeued.execution_id))]
pub async fn publish_requeued(
    store: &Store,
    publisher: &Publisher,
    requeued: Requeued,
) -> Result<RedriveReport, RedriveError> {
    let pending: Vec<(ItemRow, LineageKey)> = requeued
        .items
        .iter()
        .map(|(item, lineage, _)| (item.clone(), lineage.clone()))
        .collect();
    let outcome = publish_items(store, publisher, &pending).await?;
    for f in &outcome.failed {
        warn!(item.rec_index = f.rec_index.get(), token = %f.token, error = %f.error, "message not published");
    }
    let report = requeued.report(
        &outcome.published,
        outcome.failed.iter().map(describe).collect(),
    );
    if report.unpublished > 0 {
        return Err(RedriveError::Publish(Box::new(report)));
    }
    info!(items = report.items.len(), "execution re-driven");
    Ok(report)
}

/// [`requeue_failed`], then [`publish_requeued`].
pub async fn redrive(
    store: &Store,
    publisher: &Publisher,
    execution_id: &ExecutionId,
) -> Result<RedriveReport, RedriveError> {
    redrive_with(store, publisher, execution_id, RedriveOptions::default()).await
}

/// [`requeue_with`], then [`publish_requeued`].
pub async fn redrive_with(
    store: &Store,
    publisher: &Publisher,
    execution_id: &ExecutionId,
    options: RedriveOptions,
) -> Result<RedriveReport, RedriveError> {
    let requeued = requeue_with(store, execution_id, options).await?;
    publish_requeued(store, publisher, requeued).await
}
