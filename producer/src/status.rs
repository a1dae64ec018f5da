//! An execution and its items as the API and `status` show them: masked tokens only.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use buyonce_shared::store::{ExecutionRow, ItemRow, ItemStatus, Store, StoreResult};
use buyonce_shared::ExecutionId;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

/// One item, for people and dashboards.
#[derive(Debug, Clone, Serialize)]
pub struct ItemView {
    pub rec_index: i32,
    pub provider: String,
    pub service: String,
    pub account: String,
    pub region: Option<String>,
    pub resource_type: Option<String>,
    pub count: Option<u64>,
    pub status: ItemStatus,
    pub attempts: i32,
    /// Masked token.
    pub token: String,
    pub commitment_id: Option<String>,
    pub cost_usd: Option<f64>,
    pub error: Option<String>,
    pub published_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl From<&ItemRow> for ItemView {
    fn from(i: &ItemRow) -> Self {
        let rec = &i.recommendation;
        Self {
            rec_index: i.rec_index.as_i32(),
            provider: i.provider.as_str().to_owned(),
            service: i.service.as_str().to_owned(),
            account: i.account.clone(),
            region: i.region.clone(),
            resource_type: rec.resource_type.clone(),
            count: rec.count.map(u64::from),
            status: i.status,
            attempts: i.attempts,
            token: i.masked_token(),
            commitment_id: i.commitment_id.clone(),
            cost_usd: i.cost_usd,
            error: i.error.clone(),
            published_at: i.published_at,
            updated_at: i.updated_at,
        }
    }
}

/// An execution with every item.
#[derive(Debug, Clone, Serialize)]
pub struct ExecutionView {
    pub execution: ExecutionRow,
    /// Items per status (`{"queued": 2, "succeeded": 10}`).
    pub counts: BTreeMap<&'static str, usize>,
    pub items: Vec<ItemView>,
}

/// `status ID`: the execution with the fleet's brakes (pause, spend today).
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    #[serde(flatten)]
    pub execution: ExecutionView,
    pub fleet: crate::fleet::FleetSummary,
}

/// Reads an execution and its items; `None` when there is no such execution.
pub async fn execution_view(
    store: &Store,
    execution_id: &ExecutionId,
) -> StoreResult<Option<ExecutionView>> {
    let Some(execution) = store.execution(execution_id).await? else {
        return Ok(None);
    };
    let items = store.items_of(execution_id).await?;
    let mut counts = BTreeMap::new();
    for i in &items {
        *counts.entry(i.status.as_str()).or_insert(0) += 1;
    }
    Ok(Some(ExecutionView {
        execution,
        counts,
        items: items.iter().map(ItemView::from).collect(),
    }))
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A readable table of the execution and its items.
pub fn render_table(view: &ExecutionView) -> String {
    let e = &view.execution;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "execution {}  status {}  source {}  approved by {}",
        e.execution_id,
        e.status.as_str(),
        e.source,
        e.approved_by
    );
    let counts: Vec<String> = view
        .counts
        .iter()
        .map(|(status, n)| format!("{n} {status}"))
        .collect();
    let _ = writeln!(
        out,
        "created {}  updated {}  items {} ({})",
        time(e.created_at),
        time(e.updated_at),
        e.item_count,
        counts.join(", ")
    );
    if let Some(error) = &e.error {
        let _ = writeln!(out, "error: {error}");
    }
    let header = [
        "#",
        "SERVICE",
        "ACCOUNT",
        "REGION",
        "TYPE",
        "COUNT",
        "STATUS",
        "ATTEMPTS",
        "TOKEN",
        "COMMITMENT",
        "COST_USD",
        "ERROR",
    ];
    let dash = || "-".to_owned();
    let rows: Vec<Vec<String>> = view
        .items
        .iter()
        .map(|i| {
            vec![
                i.rec_index.to_string(),
                format!("{}/{}", i.provider, i.service),
                i.account.clone(),
                i.region.clone().unwrap_or_else(dash),
                i.resource_type.clone().unwrap_or_else(dash),
                i.count.map_or_else(dash, |c| c.to_string()),
                i.status.as_str().to_owned(),
                i.attempts.to_string(),
                i.token.clone(),
                i.commitment_id.clone().unwrap_or_else(dash),
                i.cost_usd.map_or_else(dash, |c| format!("{c:.2}")),
                i.error
                    .as_deref()
                    .map_or_else(dash, |e| e.replace('\n', " ")),
            ]
        })
        .collect();
    out.push_str(&crate::dlq::table(&header, &rows));
    out
}
