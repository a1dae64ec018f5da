//! The outbox relay: publishes items that were committed to Postgres but never published (the
//! producer died, or the broker refused, between the commit and the publish).
//!
//! Shared by the producer (`serve` runs it on a timer) and the reaper. Running it twice at once,
//! or next to a producer that is still publishing, only duplicates messages, which is harmless
//! by design: the message carries the item's token and the worker claims the item in Postgres.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context;
use tracing::{info, warn};

use crate::amqp::Publisher;
use crate::ids::{ExecutionId, LineageKey, RecIndex};
use crate::store::{Cas, ItemRow, Store, StoreResult};
use crate::token::IdempotencyToken;

/// Most batches one relay pass publishes before returning, so one pass stays bounded even with
/// a large backlog (the next pass continues).
const MAX_BATCHES_PER_PASS: usize = 50;

/// One item whose message was not published.
#[derive(Debug, Clone)]
pub struct PublishFailure {
    pub execution_id: ExecutionId,
    pub rec_index: RecIndex,
    /// Masked token (log-safe).
    pub token: String,
    pub error: String,
}

/// What [`publish_items`] did.
#[derive(Debug, Default)]
pub struct PublishOutcome {
    /// Tokens of the items whose messages the broker confirmed (and that are now marked
    /// published).
    pub published: Vec<IdempotencyToken>,
    pub failed: Vec<PublishFailure>,
}

/// Publishes the message of each stored item (rebuilt from the row, so with its stored token)
/// and marks the confirmed ones `published_at`. A row whose message cannot be rebuilt or whose
/// publish fails is reported in `failed` and stays unpublished for the next relay pass.
///
/// `items` pairs each row with its execution's lineage key. `Err` only when marking the
/// published rows fails; those messages are in the queue anyway, and the relay will publish
/// them once more, which is harmless.
pub async fn publish_items(
    store: &Store,
    publisher: &Publisher,
    items: &[(ItemRow, LineageKey)],
) -> StoreResult<PublishOutcome> {
    let mut outcome = PublishOutcome::default();
    let mut sendable = Vec::with_capacity(items.len());
    let mut messages = Vec::with_capacity(items.len());
    for (item, lineage) in items {
        match item.to_message(lineage) {
            Ok(msg) => {
                sendable.push(item);
                messages.push(msg);
            }
            Err(e) => outcome.failed.push(failure(item, e.to_string())),
        }
    }
    let results = publisher.publish_purchases(&messages).await;
    for (item, result) in sendable.into_iter().zip(results) {
        match result {
            Ok(()) => outcome.published.push(item.token.clone()),
            Err(e) => outcome.failed.push(failure(item, e.to_string())),
        }
    }
    // Only after the broker confirmed: a row marked published must have its message queued.
    store.mark_published(&outcome.published).await?;
    Ok(outcome)
}

fn failure(item: &ItemRow, error: String) -> PublishFailure {
    PublishFailure {
        execution_id: item.execution_id.clone(),
        rec_index: item.rec_index,
        token: item.masked_token(),
        error,
    }
}

/// Counters of one relay pass.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RelayReport {
    /// Unpublished `queued` items older than the grace period.
    pub found: usize,
    /// Messages the broker confirmed.
    pub published: usize,
    /// Messages not published (broker refused or unreachable, or a corrupt row).
    pub failed: usize,
    /// Executions moved `approved → running` because their last unpublished item went out.
    pub executions_running: usize,
}

/// Republishes `queued` items whose `published_at` is still null and whose row is older than
/// `grace` (younger ones may still be in their producer's hands), `batch` rows at a time.
///
/// Keeps going while full batches publish cleanly, up to a bounded number of batches; stops at
/// the first batch with a failure (the broker is likely down; the next pass retries). One bad
/// row never stops the pass. Errors only when Postgres fails.
#[tracing::instrument(skip_all, fields(grace_s = grace.as_secs_f64(), batch = batch))]
pub async fn relay_unpublished(
    store: &Store,
    publisher: &Publisher,
    grace: Duration,
    batch: i64,
) -> anyhow::Result<RelayReport> {
    anyhow::ensure!(batch > 0, "relay batch size must be positive, got {batch}");
    let mut report = RelayReport::default();
    for _ in 0..MAX_BATCHES_PER_PASS {
        let items = store
            .unpublished(grace, batch)
            .await
            .context("listing unpublished items")?;
        if items.is_empty() {
            break;
        }
        report.found += items.len();
        let outcome = publish_items(store, publisher, &items)
            .await
            .context("marking relayed items published")?;
        report.published += outcome.published.len();
        report.failed += outcome.failed.len();
        for f in &outcome.failed {
            warn!(execution.id = %f.execution_id, item.rec_index = f.rec_index.get(), token = %f.token,
                  error = %f.error, "relay could not publish item; will retry next pass");
        }
        let executions: BTreeSet<&ExecutionId> = items
            .iter()
            .filter(|(item, _)| outcome.published.contains(&item.token))
            .map(|(item, _)| &item.execution_id)
            .collect();
        for execution_id in executions {
            let cas = store
                .mark_execution_running_if_published(execution_id)
                .await
                .context("marking execution running")?;
            if let Cas::Applied(()) = cas {
                report.executions_running += 1;
            }
        }
        if !outcome.failed.is_empty() || (items.len() as i64) < batch {
            break;
        }
    }
    if report.found > 0 {
        info!(
            found = report.found,
            published = report.published,
            failed = report.failed,
            "outbox relay pass"
        );
    }
    Ok(report)
}
