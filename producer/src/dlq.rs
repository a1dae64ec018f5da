//! Dead letters for operators: list, show, replay, purge (DESIGN §5).
//!
//! Everything here reads the `dead_letters` table, never the queue: [`drain`] first moves
//! whatever waits in the dead-letter queue into the table (insert, commit, then ack; see
//! [`buyonce_shared::amqp::dead_letters`]), so a listing never drops, duplicates or reorders
//! a message, and two listings show the same rows in the same order.
//!
//! Replay never republishes the stored message: it rebuilds the message from the approved
//! item row, so it carries the item's own token, and moves the item `dead|failed → queued`
//! first (CAS). Messages that failed to decode or to match Postgres are refused: they would
//! only die again.

use std::collections::HashMap;
use std::fmt::Write as _;

use buyonce_shared::amqp::dead_letters::{archive_pending, ArchiveReport};
use buyonce_shared::amqp::{Publisher, Topology};
use buyonce_shared::relay::publish_items;
use buyonce_shared::store::dead_letters::{DeadLetterFilter, DeadLetterOrigin, DeadLetterRow};
use buyonce_shared::store::{ExecutionStatus, ItemRow, ItemStatus, Store, StoreError};
use buyonce_shared::token::mask;
use buyonce_shared::{DeadLetterReason, PurchaseMessage};
use chrono::{DateTime, SecondsFormat, Utc};
use indicatif::ProgressBar;
use lapin::Connection;
use serde::Serialize;
use serde_json::Value;
use tracing::{info, warn};

/// Most messages one [`drain`] moves before a listing is shown (the rest are archived by the
/// next listing or by the workers' archivers).
pub const DRAIN_MAX: usize = 10_000;
/// Rows a listing shows unless told otherwise.
pub const DEFAULT_LIST_LIMIT: i64 = 100;
/// Dead letters replayed per batch: one publish pipeline and one bookkeeping statement each.
const REPLAY_BATCH: i64 = 200;

/// Moves the messages waiting in the dead-letter queue into `dead_letters` (at most
/// [`DRAIN_MAX`]), on a channel of its own.
pub async fn drain(
    store: &Store,
    connection: &Connection,
    topology: &Topology,
) -> anyhow::Result<ArchiveReport> {
    let channel = connection.create_channel().await.map_err(|e| {
        anyhow::anyhow!(
            "opening a channel: {}",
            buyonce_shared::amqp::describe_error(&e)
        )
    })?;
    let report = archive_pending(store, &channel, topology, DRAIN_MAX).await;
    let _ = channel.close(200, "drained".into()).await;
    let report = report?;
    if report.archived > 0 || report.duplicates > 0 {
        info!(
            archived = report.archived,
            duplicates = report.duplicates,
            items_dead = report.items_dead,
            "dead-letter queue drained into Postgres"
        );
    }
    Ok(report)
}

/// Which dead letters a replay or purge means.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    /// These IDs, replayed even if they were replayed before.
    Ids(Vec<i64>),
    /// Every dead letter (for a replay: every one not replayed yet).
    All,
    /// Every dead letter with this reason (replay: not replayed yet).
    Reason(DeadLetterReason),
    /// Every dead letter of this execution (replay: not replayed yet).
    Execution(String),
}

impl Selection {
    /// The store filter. Bulk replays skip rows already replayed: an item that dies again
    /// after a replay comes back as a new row, so nothing is missed.
    fn filter(&self, for_replay: bool) -> DeadLetterFilter {
        let mut f = DeadLetterFilter {
            unreplayed_only: for_replay,
            ..DeadLetterFilter::default()
        };
        match self {
            Selection::Ids(ids) => {
                f.ids = Some(ids.clone());
                f.unreplayed_only = false;
            }
            Selection::All => {}
            Selection::Reason(r) => f.reason = Some(*r),
            Selection::Execution(e) => f.execution_id = Some(e.clone()),
        }
        f
    }

    /// For messages: "--reason malformed", "3 IDs".
    pub fn describe(&self) -> String {
        match self {
            Selection::Ids(ids) if ids.len() == 1 => format!("dead letter {}", ids[0]),
            Selection::Ids(ids) => format!("{} dead letters by ID", ids.len()),
            Selection::All => "all dead letters".into(),
            Selection::Reason(r) => format!("dead letters with reason {r}"),
            Selection::Execution(e) => format!("dead letters of execution {e}"),
        }
    }
}

/// Parses a reason name, naming the valid ones when it is not one.
pub fn parse_reason(raw: &str) -> Result<DeadLetterReason, String> {
    DeadLetterReason::parse(raw).ok_or_else(|| {
        let names: Vec<&str> = DeadLetterReason::ALL.iter().map(|r| r.as_str()).collect();
        format!(
            "unknown dead-letter reason {raw:?}; expected one of: {}",
            names.join(", ")
        )
    })
}

/// One dead letter for people and dashboards: masked token, no body.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterView {
    pub id: i64,
    pub reason: DeadLetterReason,
    /// Whether `dlq replay` can ever replay it (see [`DeadLetterReason::replayable`]).
    pub replayable: bool,
    pub origin: DeadLetterOrigin,
    pub error: Option<String>,
    pub execution_id: Option<String>,
    pub rec_index: Option<i32>,
    pub service: Option<String>,
    /// Masked token of the decoded message (`(none)` when it did not decode).
    pub token: String,
    /// `x-delivery-count` when the broker set it.
    pub delivery_count: Option<i64>,
    /// The `x-death` entries, newest first: `delivery_limit x1 in buyonce.purchases`.
    pub deaths: Option<String>,
    pub first_death_at: Option<DateTime<Utc>>,
    pub last_death_at: Option<DateTime<Utc>>,
    pub archived_at: DateTime<Utc>,
    pub replay_count: i32,
    pub replayed_at: Option<DateTime<Utc>>,
}

impl From<&DeadLetterRow> for DeadLetterView {
    fn from(d: &DeadLetterRow) -> Self {
        Self {
            id: d.id,
            reason: d.reason,
            replayable: d.reason.replayable(),
            origin: d.origin,
            error: d.error.as_deref().map(redact_tokens),
            execution_id: d.execution_id.clone(),
            rec_index: d.rec_index,
            service: d.service.clone(),
            token: d.masked_token(),
            delivery_count: d.delivery_count,
            deaths: d.death_summary.clone(),
            first_death_at: d.first_death_at,
            last_death_at: d.last_death_at,
            archived_at: d.archived_at,
            replay_count: d.replay_count,
            replayed_at: d.replayed_at,
        }
    }
}

/// Filters of `dlq list` and `GET /v1/dead-letters`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListFilter {
    pub reason: Option<DeadLetterReason>,
    pub execution_id: Option<String>,
    pub service: Option<String>,
    pub limit: Option<i64>,
}

/// Most rows one listing shows.
pub const MAX_LIST_LIMIT: i64 = 1000;
/// Most dead-letter IDs one replay names.
pub const MAX_REPLAY_IDS: usize = 1000;

impl ListFilter {
    /// Refuses what the listing cannot mean: a limit outside 1..=[`MAX_LIST_LIMIT`], an
    /// execution filter that is no execution ID, a service filter that is not short plain text.
    pub fn check(&self) -> Result<(), String> {
        if let Some(limit) = self.limit {
            if !(1..=MAX_LIST_LIMIT).contains(&limit) {
                return Err(format!(
                    "limit must be between 1 and {MAX_LIST_LIMIT}, got {limit}"
                ));
            }
        }
        if let Some(e) = &self.execution_id {
            buyonce_shared::ExecutionId::parse(e)
                .map_err(|why| format!("execution filter: invalid execution ID: {why}"))?;
        }
        if let Some(s) = &self.service {
            if let Some(problem) = buyonce_shared::text::text_problem(s, 64) {
                return Err(format!("service filter {problem}"));
            }
        }
        Ok(())
    }
}

/// A listing: the rows in archive order, how many match in all, and what the drain before it
/// did.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    pub dead_letters: Vec<DeadLetterView>,
    /// Rows matching the filters (the listing shows at most `limit` of them).
    pub total: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drained: Option<ArchiveReport>,
    /// Set when the queue could not be drained first: messages still in it are not listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// Reads the archived dead letters matching `filter`, oldest first.
pub async fn list(store: &Store, filter: &ListFilter) -> Result<Listing, StoreError> {
    let f = DeadLetterFilter {
        reason: filter.reason,
        execution_id: filter.execution_id.clone(),
        service: filter.service.clone(),
        limit: Some(filter.limit.unwrap_or(DEFAULT_LIST_LIMIT).max(0)),
        ..DeadLetterFilter::default()
    };
    let rows = store.dead_letters(&f).await?;
    let total = store.count_dead_letters(&f).await?;
    Ok(Listing {
        dead_letters: rows.iter().map(DeadLetterView::from).collect(),
        total,
        drained: None,
        warning: None,
    })
}

/// One dead letter in full: every header, the AMQP properties and the decoded envelope (token
/// masked), or the raw body escaped when it does not decode.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterDetail {
    #[serde(flatten)]
    pub summary: DeadLetterView,
    pub headers: Value,
    pub properties: Value,
    /// The decoded purchase message, its token masked.
    pub envelope: Option<Value>,
    /// Why the body is not a purchase message.
    pub decode_error: Option<String>,
    /// The raw body, escaped (`\xNN` for bytes that are not printable ASCII), when it does
    /// not decode.
    pub body: Option<String>,
    pub body_bytes: usize,
}

/// [`DeadLetterDetail`] of one row.
pub fn detail(row: &DeadLetterRow) -> DeadLetterDetail {
    let (envelope, decode_error, body) = match PurchaseMessage::decode(&row.body) {
        Ok(msg) => {
            let mut v = serde_json::to_value(&msg).unwrap_or(Value::Null);
            v["token"] = Value::String(msg.token.mask());
            (Some(v), None, None)
        }
        Err(e) => (
            None,
            Some(redact_tokens(&e.to_string())),
            Some(redact_tokens(&row.body.escape_ascii().to_string())),
        ),
    };
    DeadLetterDetail {
        summary: DeadLetterView::from(row),
        headers: redact_json(&row.headers),
        properties: redact_json(&row.properties),
        envelope,
        decode_error,
        body,
        body_bytes: row.body.len(),
    }
}

/// One dead letter by ID.
pub async fn show(store: &Store, id: i64) -> Result<Option<DeadLetterDetail>, StoreError> {
    Ok(store.dead_letter(id).await?.as_ref().map(detail))
}

/// Masks every run of 64 or more hex digits (a token, wherever a foreign or malformed message
/// put it): only masked tokens leave buyonce.
pub fn redact_tokens(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= buyonce_shared::token::TOKEN_LEN {
            out.push_str(&mask(run));
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_hexdigit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

fn redact_json(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(redact_tokens(s)),
        Value::Array(a) => Value::Array(a.iter().map(redact_json).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), redact_json(v))).collect())
        }
        other => other.clone(),
    }
}

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
    item: Option<(ItemRow, String)>,
    execution: Option<ExecutionStatus>,
) -> Decision {
    if !dl.reason.replayable() {
        return Decision::Refuse(format!(
            "{} messages cannot be replayed: the same message would only be refused again. \
             Find out why it was sent, then submit a corrected execution or purge it",
            dl.reason
        ));
    }
    let Some(token) = dl.token.as_deref() else {
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
    if item.token != token {
        return Decision::Refuse(format!(
            "the message's token {} differs from the stored item's {}: not the item's own \
             message, so it is not replayed",
            mask(token),
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

/// How many dead letters a replay or purge selects (for the progress bar and confirmations).
pub async fn count(
    store: &Store,
    selection: &Selection,
    for_replay: bool,
) -> Result<i64, StoreError> {
    store
        .count_dead_letters(&selection.filter(for_replay))
        .await
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
    let mut items_seen: HashMap<String, i64> = HashMap::new();
    let mut executions: HashMap<String, Option<ExecutionStatus>> = HashMap::new();
    let mut found_ids = Vec::new();
    loop {
        let rows = store.dead_letters(&filter).await?;
        let Some(last) = rows.last() else { break };
        filter.after_id = Some(last.id);
        let mut to_publish: Vec<(ItemRow, String)> = Vec::new();
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
            let (item, execution) = match (&dl.execution_id, dl.rec_index) {
                (Some(execution_id), Some(rec_index)) => {
                    let item = store.item_with_lineage(execution_id, rec_index).await?;
                    if !executions.contains_key(execution_id) {
                        let status = store.execution(execution_id).await?.map(|e| e.status);
                        executions.insert(execution_id.clone(), status);
                    }
                    (item, executions[execution_id])
                }
                _ => (None, None),
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
                    info!(dead_letter.id = dl.id, execution.id = %item.execution_id, item.rec_index = item.rec_index, token = %item.masked_token(), "dead letter replayed");
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

/// What a purge removed.
#[derive(Debug, Clone, Serialize)]
pub struct PurgeReport {
    pub deleted: i64,
    /// Deleted per reason.
    pub by_reason: Vec<(DeadLetterReason, i64)>,
    /// Requested IDs that did not exist.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_found: Vec<i64>,
}

/// Deletes the selected dead letters (replayed or not). Items are not touched.
#[tracing::instrument(skip_all, fields(selection = %selection.describe()))]
pub async fn purge(store: &Store, selection: &Selection) -> Result<PurgeReport, StoreError> {
    let filter = selection.filter(false);
    let not_found = match selection {
        Selection::Ids(ids) => {
            let existing: Vec<i64> = store
                .dead_letters(&filter)
                .await?
                .iter()
                .map(|d| d.id)
                .collect();
            ids.iter()
                .copied()
                .filter(|id| !existing.contains(id))
                .collect()
        }
        _ => Vec::new(),
    };
    let by_reason = store.delete_dead_letters(&filter).await?;
    let deleted = by_reason.iter().map(|(_, n)| n).sum();
    info!(deleted, "dead letters purged");
    Ok(PurgeReport {
        deleted,
        by_reason,
        not_found,
    })
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "-".to_owned(),
        |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

fn one_line(s: &str, max: usize) -> String {
    let flat = s.replace(['\n', '\r', '\t'], " ");
    if flat.chars().count() <= max {
        flat
    } else {
        let mut cut: String = flat.chars().take(max.saturating_sub(3)).collect();
        cut.push_str("...");
        cut
    }
}

/// Renders rows as an aligned table; the last column is not padded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let last = cells.len() - 1;
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<w$}  ");
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(&header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>());
    for row in rows {
        line(row);
    }
    out
}

/// `dlq list` as a table.
pub fn render_listing(listing: &Listing) -> String {
    let mut out = String::new();
    if let Some(w) = &listing.warning {
        let _ = writeln!(out, "warning: {w}");
    }
    if listing.dead_letters.is_empty() {
        let _ = writeln!(out, "no dead letters");
        return out;
    }
    let dash = || "-".to_owned();
    let rows: Vec<Vec<String>> = listing
        .dead_letters
        .iter()
        .map(|d| {
            vec![
                d.id.to_string(),
                d.execution_id.clone().unwrap_or_else(dash),
                d.rec_index.map_or_else(dash, |i| i.to_string()),
                d.service.clone().unwrap_or_else(dash),
                format!("{}{}", d.reason, if d.replayable { "" } else { " (!)" }),
                d.token.clone(),
                d.delivery_count.map_or_else(dash, |n| n.to_string()),
                d.deaths.as_deref().map_or_else(dash, |s| one_line(s, 48)),
                time(d.first_death_at),
                time(d.last_death_at),
                if d.replay_count == 0 {
                    "-".to_owned()
                } else {
                    format!("{}x {}", d.replay_count, time(d.replayed_at))
                },
                d.error.as_deref().map_or_else(dash, |e| one_line(e, 100)),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "ID",
            "EXECUTION",
            "#",
            "SERVICE",
            "REASON",
            "TOKEN",
            "DELIVERIES",
            "X-DEATH",
            "FIRST_DEATH",
            "LAST_DEATH",
            "REPLAYED",
            "ERROR",
        ],
        &rows,
    ));
    let shown = listing.dead_letters.len() as i64;
    if listing.total > shown {
        let _ = writeln!(
            out,
            "showing {shown} of {} (oldest first; raise --limit or narrow with --reason/--execution/--service)",
            listing.total
        );
    }
    if listing.dead_letters.iter().any(|d| !d.replayable) {
        let _ = writeln!(out, "(!) not replayable: the message would only die again");
    }
    out
}

/// `dlq show` for people.
pub fn render_detail(d: &DeadLetterDetail) -> String {
    let s = &d.summary;
    let dash = || "-".to_owned();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "dead letter {}  reason {}{}  from {}",
        s.id,
        s.reason,
        if s.replayable {
            ""
        } else {
            " (not replayable)"
        },
        s.origin.as_str()
    );
    let _ = writeln!(
        out,
        "execution {}  item #{}  service {}  token {}",
        s.execution_id.clone().unwrap_or_else(dash),
        s.rec_index.map_or_else(dash, |i| i.to_string()),
        s.service.clone().unwrap_or_else(dash),
        s.token
    );
    let _ = writeln!(out, "error: {}", s.error.clone().unwrap_or_else(dash));
    let _ = writeln!(
        out,
        "deliveries {}  x-death {}",
        s.delivery_count.map_or_else(dash, |n| n.to_string()),
        s.deaths.clone().unwrap_or_else(dash)
    );
    let _ = writeln!(
        out,
        "first death {}  last death {}  archived {}  replayed {}x{}",
        time(s.first_death_at),
        time(s.last_death_at),
        time(Some(s.archived_at)),
        s.replay_count,
        s.replayed_at
            .map(|t| format!(" (last {})", time(Some(t))))
            .unwrap_or_default()
    );
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    let _ = writeln!(out, "properties: {}", pretty(&d.properties));
    let _ = writeln!(out, "headers: {}", pretty(&d.headers));
    match (&d.envelope, &d.body) {
        (Some(env), _) => {
            let _ = writeln!(out, "envelope (token masked): {}", pretty(env));
        }
        (None, Some(body)) => {
            let _ = writeln!(
                out,
                "body is not a purchase message: {}",
                d.decode_error.clone().unwrap_or_else(dash)
            );
            let _ = writeln!(out, "raw body ({} bytes, escaped): {body}", d.body_bytes);
        }
        (None, None) => {}
    }
    out
}

/// `dlq replay` for people.
pub fn render_replay(report: &ReplayReport) -> String {
    let mut out = String::new();
    if report.selected == 0 && report.results.is_empty() {
        let _ = writeln!(out, "no dead letters to replay");
        return out;
    }
    let dash = || "-".to_owned();
    let rows: Vec<Vec<String>> = report
        .results
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.execution_id.clone().unwrap_or_else(dash),
                r.rec_index.map_or_else(dash, |i| i.to_string()),
                r.service.clone().unwrap_or_else(dash),
                r.reason.to_string(),
                r.token.clone(),
                serde_json::to_value(r.outcome)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                r.detail.clone(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "ID",
            "EXECUTION",
            "#",
            "SERVICE",
            "REASON",
            "TOKEN",
            "OUTCOME",
            "DETAIL",
        ],
        &rows,
    ));
    let verb = if report.dry_run {
        "would replay"
    } else {
        "replayed"
    };
    let _ = writeln!(
        out,
        "{}: {verb} {}, not yet published {}, skipped {}, refused {}",
        if report.dry_run { "dry run" } else { "done" },
        report.replayed,
        report.unpublished,
        report.skipped,
        report.refused
    );
    out
}

/// `dlq purge` for people.
pub fn render_purge(report: &PurgeReport) -> String {
    let mut out = format!("purged {} dead letters", report.deleted);
    if !report.by_reason.is_empty() {
        let parts: Vec<String> = report
            .by_reason
            .iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        let _ = write!(out, " ({})", parts.join(", "));
    }
    out.push('\n');
    if !report.not_found.is_empty() {
        let ids: Vec<String> = report.not_found.iter().map(i64::to_string).collect();
        let _ = writeln!(out, "not found: {}", ids.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_masked_wherever_they_appear() {
        let token = "4a667998cddd36583ee6f92b4e1f9fe36aeef04b9676a2007da7c5eefc9e96c0";
        let text = format!("{{\"token\":\"{token}\",\"short\":\"abc123\"}}");
        let red = redact_tokens(&text);
        assert!(!red.contains(token), "{red}");
        assert!(red.contains("4a667998..."), "{red}");
        assert!(red.contains("abc123"), "{red}");
    }

    #[test]
    fn reasons_are_parsed_or_listed() {
        assert_eq!(parse_reason("spend-cap"), Ok(DeadLetterReason::SpendCap));
        let e = parse_reason("nope").unwrap_err();
        assert!(
            e.contains("malformed") && e.contains("delivery-limit"),
            "{e}"
        );
    }
}
