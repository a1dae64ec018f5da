//! `dlq replay`: each selected dead letter is decided from Postgres alone ([`decide`]), then
//! its item moves `dead|failed → queued` (CAS) and the message rebuilt from the item row (same
//! token) is published; the [`ReplayReport`] says what happened to each one.

use std::collections::HashMap;

use buyonce_shared::amqp::Publisher;
use buyonce_shared::relay::publish_items;
use buyonce_shared::store::dead_letters::DeadLetterRow;
use buyonce_shared::store::{ExecutionStatus, ItemRow, ItemStatus, Store, StoreError};
use buyonce_shared::token::mask;
use buyonce_shared::{DeadLetterReason, ExecutionId, IdempotencyToken, LineageKey, RecIndex};
use indicatif::ProgressBar;
use serde::Serialize;
use tracing::{info, warn};

use super::Selection;

/// Dead letters replayed per batch: one publish pipeline and one bookkeeping statement each.
const REPLAY_BATCH: i64 = 200;
/// Most dead-letter IDs one replay names.
pub const MAX_REPLAY_IDS: usize = 1000;

/// What happened to one selected dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplayOutcome {
    /// Item requeued and its message (same token) confirmed in the work queue.
    Replayed,
    /// Dry run: would have been replayed.
    WouldReplay,
    /// Item requeued, but the message is not in the queue yet: the outbox relay (serve, the
    /// reaper) publishes it.
    Unpublished,
    /// Nothing to do now (the item is queued, running or bought already).
    Skipped,
    /// Cannot be replayed (not replayable by reason, no matching item, cancelled).
    Refused,
}

/// One line of a replay report.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayResult {
    pub id: i64,
    pub reason: DeadLetterReason,
    pub execution_id: Option<String>,
    pub rec_index: Option<i32>,
    pub service: Option<String>,
    /// Masked token.
    pub token: String,
    pub outcome: ReplayOutcome,
    pub detail: String,
}

/// What a replay did, per dead letter.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ReplayReport {
    pub dry_run: bool,
    pub selected: usize,
    pub replayed: usize,
    pub unpublished: usize,
    pub skipped: usize,
    pub refused: usize,
    pub results: Vec<ReplayResult>,
}

impl ReplayReport {
    fn push(
        &mut self,
        row: Option<&DeadLetterRow>,
        id: i64,
        outcome: ReplayOutcome,
        detail: String,
    ) {
        match outcome {
            ReplayOutcome::Replayed | ReplayOutcome::WouldReplay => self.replayed += 1,
            ReplayOutcome::Unpublished => self.unpublished += 1,
            ReplayOutcome::Skipped => self.skipped += 1,
            ReplayOutcome::Refused => self.refused += 1,
        }
        self.results.push(ReplayResult {
            id,
            reason: row.map_or(DeadLetterReason::Broker, |r| r.reason),
            execution_id: row.and_then(|r| r.execution_id.clone()),
            rec_index: row.and_then(|r| r.rec_index),
            service: row.and_then(|r| r.service.clone()),
            token: row.map_or_else(|| mask(""), DeadLetterRow::masked_token),
            outcome,
            detail,
        });
    }
}

/// A replay: which dead letters, and whether only to say what would happen.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayRequest {
    pub selection: Selection,
    pub dry_run: bool,
}

/// What to do with one dead letter, decided from Postgres alone.
#[derive(Debug)]
enum Decision {
    Replay(Box<ItemRow>),
    Skip(String),
    Refuse(String),
}

/// Decide: can this dead letter's item go back to work? `item` is its stored item with the
/// lineage key, `execution` its execution's status.
fn decide(
    dl: &DeadLetterRow,
    item: Option<(ItemRow, LineageKey)>,
    execution: Option<ExecutionStatus>,
) -> Decision {
    if !dl.reason.replayable() {
        return Decision::Refuse(format!(
            "{} messages cannot be replayed: the same message would only be refused again. \
             Find out why it was sent, then submit a corrected execution or purge it",
            dl.reason
        ));
    }
    let Some(token) = &dl.token else {
        return Decision::Refuse(
            "the message body is not a purchase message, so it names no item to replay; \
             see `dlq show`, then purge it"
                .into(),
        );
    };
    let Some((item, _lineage)) = item else {
        return Decision::Refuse(
            "no approved item matches this message (unknown execution or index): \
             submit the execution first, then replay"
                .into(),
        );
    };
    if item.token != *token {
        return Decision::Refuse(format!(
            "the message's token {} differs from the stored item's {}: not the item's own \
             message, so it is not replayed",
            token.mask(),
            item.masked_token()
        ));
    }
    if execution == Some(ExecutionStatus::Cancelled) {
        return Decision::Refuse(
            "the execution is cancelled: run `redrive --include-cancelled` on it to buy its \
             items after all"
                .into(),
        );
    }
    match item.status {
        ItemStatus::Dead | ItemStatus::Failed => Decision::Replay(Box::new(item)),
        ItemStatus::Succeeded => Decision::Skip(format!(
            "already bought (commitment {}): replaying would buy nothing",
            item.commitment_id.as_deref().unwrap_or("unknown")
        )),
        ItemStatus::Queued => Decision::Skip(
            "the item is queued already (replayed or re-driven earlier): its message is on its way"
                .into(),
        ),
        ItemStatus::Running => {
            Decision::Skip("a worker is buying the item right now: nothing to replay".into())
        }
        ItemStatus::Cancelled => Decision::Refuse(
            "the item is cancelled: run `redrive --include-cancelled` on its execution".into(),
        ),
    }
}

/// The item a dead letter names. Its execution ID and index come from the message body or,
/// when that did not decode, from the worker's headers, so they are checked here: values no
/// item can have name no item.
fn item_key(dl: &DeadLetterRow) -> Option<(ExecutionId, RecIndex)> {
    let execution_id = ExecutionId::parse(dl.execution_id.as_deref()?).ok()?;
    let rec_index = RecIndex::new(u32::try_from(dl.rec_index?).ok()?).ok()?;
    Some((execution_id, rec_index))
}

/// Replays the selected dead letters; see [`replay_with_progress`].
pub async fn replay(
    store: &Store,
    publisher: &Publisher,
    request: &ReplayRequest,
) -> Result<ReplayReport, StoreError> {
    replay_with_progress(store, publisher, request, &ProgressBar::hidden()).await
}

/// Replays the selected dead letters, in archive order, a batch at a time: for each, decide
/// from Postgres ([`decide`]), move its item `dead|failed → queued` (CAS, attempts reset),
/// publish the message rebuilt from the item row (same token) and record the replay on the
/// dead letter. Several dead letters of one item replay it once. `progress` advances per dead
/// letter.
///
/// `Err` only when Postgres fails; the report says what happened to each dead letter, and a
/// re-run is safe (the CAS moves an item once; duplicates of a message are harmless).
#[tracing::instrument(skip_all, fields(selection = %request.selection.describe(), dry_run = request.dry_run))]
pub async fn replay_with_progress(
    store: &Store,
    publisher: &Publisher,
    request: &ReplayRequest,
    progress: &ProgressBar,
) -> Result<ReplayReport, StoreError> {
    let mut report = ReplayReport {
        dry_run: request.dry_run,
        ..ReplayReport::default()
    };
    let mut filter = request.selection.filter(true);
    filter.limit = Some(REPLAY_BATCH);
    // Token → the dead letter that replayed (or would replay) that item in this run.
    let mut items_seen: HashMap<IdempotencyToken, i64> = HashMap::new();
    let mut executions: HashMap<ExecutionId, Option<ExecutionStatus>> = HashMap::new();
    let mut found_ids = Vec::new();
    loop {
        let rows = store.dead_letters(&filter).await?;
        let Some(last) = rows.last() else { break };
        filter.after_id = Some(last.id);
        let mut to_publish: Vec<(ItemRow, LineageKey)> = Vec::new();
        // The dead letter behind each requeued item, and the item's status before.
        let mut publishing: Vec<(&DeadLetterRow, ItemStatus)> = Vec::new();
        let mut mark: Vec<i64> = Vec::new();
        for dl in &rows {
            found_ids.push(dl.id);
            report.selected += 1;
            if let Some(first) = dl.token.as_ref().and_then(|t| items_seen.get(t)) {
                let detail = format!("same item as dead letter {first}: replayed once");
                if !request.dry_run {
                    mark.push(dl.id);
                }
                report.push(Some(dl), dl.id, ReplayOutcome::Skipped, detail);
                continue;
            }
            let (item, execution) = match item_key(dl) {
                Some((execution_id, rec_index)) => {
                    let item = store.item_with_lineage(&execution_id, rec_index).await?;
                    if !executions.contains_key(&execution_id) {
                        let status = store.execution(&execution_id).await?.map(|e| e.status);
                        executions.insert(execution_id.clone(), status);
                    }
                    (item, executions[&execution_id])
                }
                None => (None, None),
            };
            match decide(dl, item, execution) {
                Decision::Refuse(why) => report.push(Some(dl), dl.id, ReplayOutcome::Refused, why),
                Decision::Skip(why) => report.push(Some(dl), dl.id, ReplayOutcome::Skipped, why),
                Decision::Replay(item) if request.dry_run => {
                    items_seen.insert(item.token.clone(), dl.id);
                    let detail = format!(
                        "would move the item {} → queued and republish it with the same token",
                        item.status.as_str()
                    );
                    report.push(Some(dl), dl.id, ReplayOutcome::WouldReplay, detail);
                }
                Decision::Replay(item) => {
                    let moved = store
                        .requeue(
                            &item.execution_id,
                            &[ItemStatus::Dead, ItemStatus::Failed],
                            Some(std::slice::from_ref(&item.token)),
                            true,
                            None,
                        )
                        .await?;
                    match moved.into_iter().next() {
                        Some(requeued) => {
                            items_seen.insert(item.token.clone(), dl.id);
                            to_publish.push(requeued);
                            publishing.push((dl, item.status));
                        }
                        None => {
                            // Someone else moved it between the read and the CAS.
                            let now = store
                                .item_by_token(&item.token)
                                .await?
                                .map_or("gone", |i| i.status.as_str());
                            let detail =
                                format!("the item moved on meanwhile (now {now}); not replayed");
                            report.push(Some(dl), dl.id, ReplayOutcome::Skipped, detail);
                        }
                    }
                }
            }
        }
        if !to_publish.is_empty() {
            let outcome = publish_items(store, publisher, &to_publish).await?;
            for ((dl, old), (item, _)) in publishing.iter().zip(&to_publish) {
                mark.push(dl.id);
                let old = old.as_str();
                if outcome.published.contains(&item.token) {
                    info!(dead_letter.id = dl.id, execution.id = %item.execution_id, item.rec_index = item.rec_index.get(), token = %item.masked_token(), "dead letter replayed");
                    let detail = format!(
                        "item {old} → queued; republished with the same token {}",
                        item.masked_token()
                    );
                    report.push(Some(dl), dl.id, ReplayOutcome::Replayed, detail);
                } else {
                    let error = outcome
                        .failed
                        .iter()
                        .find(|f| {
                            f.execution_id == item.execution_id && f.rec_index == item.rec_index
                        })
                        .map_or("unknown error".to_owned(), |f| f.error.clone());
                    warn!(dead_letter.id = dl.id, token = %item.masked_token(), %error, "replayed item not published yet");
                    let detail = format!(
                        "item requeued, message not published yet ({error}); the outbox relay \
                         (serve or the reaper) publishes it"
                    );
                    report.push(Some(dl), dl.id, ReplayOutcome::Unpublished, detail);
                }
            }
        }
        store.mark_dead_letters_replayed(&mark).await?;
        progress.inc(rows.len() as u64);
        if (rows.len() as i64) < REPLAY_BATCH {
            break;
        }
    }
    if let Selection::Ids(ids) = &request.selection {
        for id in ids {
            if !found_ids.contains(id) {
                report.push(
                    None,
                    *id,
                    ReplayOutcome::Refused,
                    format!("no dead letter {id}"),
                );
            }
        }
    }
    progress.finish_and_clear();
    Ok(report)
}
