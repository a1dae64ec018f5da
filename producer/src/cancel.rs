//! Operator cancel (DESIGN §9): every `queued` item of an execution becomes `cancelled` and
//! the execution `cancelled`, in one transaction. Workers claim only items of executions that
//! are not cancelled, so a message still in the queue for a cancelled item is acked without a
//! provider call. Items already `running` finish: a purchase in flight cannot be recalled, and
//! the report names them.

use std::fmt::Write as _;

use buyonce_shared::store::{Cas, ExecutionStatus, ItemRow, Store, StoreError};
use buyonce_shared::ExecutionId;
use serde::Serialize;
use tracing::info;

/// One item named in a cancel report.
#[derive(Debug, Clone, Serialize)]
pub struct ItemRef {
    pub rec_index: i32,
    pub service: String,
    /// Masked token.
    pub token: String,
}

impl From<&ItemRow> for ItemRef {
    fn from(i: &ItemRow) -> Self {
        Self {
            rec_index: i.rec_index.as_i32(),
            service: i.service.as_str().to_owned(),
            token: i.masked_token(),
        }
    }
}

/// What a cancel did.
#[derive(Debug, Clone, Serialize)]
pub struct CancelReport {
    pub execution_id: String,
    /// The execution was cancelled before (nothing changed now).
    pub already_cancelled: bool,
    /// Items moved `queued → cancelled`: they will never be bought.
    pub cancelled: Vec<ItemRef>,
    /// Items being bought right now: not cancelled, they finish and are recorded.
    pub still_running: Vec<ItemRef>,
}

#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("no execution {0}")]
    NotFound(String),
    #[error(
        "execution {execution_id} already ended ({}): nothing is left to cancel",
        .status.as_str()
    )]
    Ended {
        execution_id: String,
        status: ExecutionStatus,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Cancels the execution's queued items and the execution. Cancelling a cancelled execution
/// again changes nothing and says so; an execution that already ended is refused.
#[tracing::instrument(skip_all, fields(execution.id = %execution_id))]
pub async fn cancel(
    store: &Store,
    execution_id: &ExecutionId,
    cancelled_by: &str,
) -> Result<CancelReport, CancelError> {
    match store.cancel_execution(execution_id, cancelled_by).await? {
        Cas::Applied(c) => {
            info!(
                cancelled = c.cancelled.len(),
                still_running = c.running.len(),
                previous = c.previous.as_str(),
                by = cancelled_by,
                "execution cancelled"
            );
            Ok(CancelReport {
                execution_id: execution_id.to_string(),
                already_cancelled: false,
                cancelled: c.cancelled.iter().map(ItemRef::from).collect(),
                still_running: c.running.iter().map(ItemRef::from).collect(),
            })
        }
        Cas::NotFound => Err(CancelError::NotFound(execution_id.to_string())),
        Cas::Conflict { actual } if actual == ExecutionStatus::Cancelled.as_str() => {
            let running = store
                .items_of(execution_id)
                .await?
                .iter()
                .filter(|i| i.status == buyonce_shared::store::ItemStatus::Running)
                .map(ItemRef::from)
                .collect();
            Ok(CancelReport {
                execution_id: execution_id.to_string(),
                already_cancelled: true,
                cancelled: Vec::new(),
                still_running: running,
            })
        }
        Cas::Conflict { actual } => Err(CancelError::Ended {
            execution_id: execution_id.to_string(),
            status: ExecutionStatus::parse(&actual).unwrap_or(ExecutionStatus::Failed),
        }),
    }
}

/// `cancel` for people.
pub fn render(report: &CancelReport) -> String {
    let mut out = String::new();
    if report.already_cancelled {
        let _ = writeln!(
            out,
            "execution {} was already cancelled; nothing changed",
            report.execution_id
        );
    } else {
        let _ = writeln!(
            out,
            "execution {} cancelled: {} queued items will never be bought",
            report.execution_id,
            report.cancelled.len()
        );
        for i in &report.cancelled {
            let _ = writeln!(
                out,
                "  #{:<4} {:<14} cancelled  {}",
                i.rec_index, i.service, i.token
            );
        }
    }
    if !report.still_running.is_empty() {
        let _ = writeln!(
            out,
            "NOT cancelled: {} items are being bought right now (a purchase in flight cannot be \
             recalled); they finish and are recorded:",
            report.still_running.len()
        );
        for i in &report.still_running {
            let _ = writeln!(
                out,
                "  #{:<4} {:<14} running    {}",
                i.rec_index, i.service, i.token
            );
        }
    }
    out
}
