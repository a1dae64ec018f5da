//! `dlq purge`: deletes the selected dead letters and says how many went, per reason; the
//! items they name are left as they are.

use buyonce_shared::store::{Store, StoreError};
use buyonce_shared::DeadLetterReason;
use serde::Serialize;
use tracing::info;

use super::Selection;

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
