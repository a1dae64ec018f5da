//! The read side: [`list`] and [`show`], and what they return — a [`DeadLetterView`] per row
//! (masked token, no body) or a [`DeadLetterDetail`] with every header and the decoded or
//! escaped body, all passed through [`redact_tokens`](super::redact_tokens).

use buyonce_shared::amqp::dead_letters::ArchiveReport;
use buyonce_shared::store::dead_letters::{DeadLetterFilter, DeadLetterOrigin, DeadLetterRow};
use buyonce_shared::store::{Store, StoreError};
use buyonce_shared::{DeadLetterReason, PurchaseMessage};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::redact::{redact_json, redact_tokens};

/// Rows a listing shows unless told otherwise.
pub const DEFAULT_LIST_LIMIT: i64 = 100;

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
