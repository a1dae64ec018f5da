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
//!
//! Each operation has its file (`view.rs` for list and show, `replay.rs`, `purge.rs`), with the
//! token redaction they share in `redact.rs`; `render.rs` turns their results into terminal
//! text. Everything is re-exported here: callers name `dlq::…` only.

mod purge;
mod redact;
mod render;
mod replay;
mod view;

use buyonce_shared::amqp::dead_letters::{archive_pending, ArchiveReport};
use buyonce_shared::amqp::Topology;
use buyonce_shared::store::dead_letters::DeadLetterFilter;
use buyonce_shared::store::{Store, StoreError};
use buyonce_shared::DeadLetterReason;
use lapin::Connection;
use tracing::info;

pub use purge::{purge, PurgeReport};
pub use redact::redact_tokens;
pub(crate) use render::table;
pub use render::{render_detail, render_listing, render_purge, render_replay};
pub use replay::{
    replay, replay_with_progress, ReplayOutcome, ReplayReport, ReplayRequest, ReplayResult,
    MAX_REPLAY_IDS,
};
pub use view::{
    detail, list, show, DeadLetterDetail, DeadLetterView, ListFilter, Listing, DEFAULT_LIST_LIMIT,
    MAX_LIST_LIMIT,
};

/// Most messages one [`drain`] moves before a listing is shown (the rest are archived by the
/// next listing or by the workers' archivers).
pub const DRAIN_MAX: usize = 10_000;

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

#[cfg(test)]
mod tests {
    use super::*;

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
