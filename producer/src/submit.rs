//! Submitting an execution: record it and all its items in one transaction (the outbox), then
//! publish one message per item.
//!
//! Resubmission: the same document again writes nothing, and republishes only the items that
//! are still `queued` with `published_at` null. That heals a producer that died between the
//! commit and the publish (the caller's retry does what the relay would do later), and sends
//! nothing for items already in the queue or already bought. A resubmission racing the first
//! submission's publish may duplicate a message, which is harmless: the worker claims the item
//! in Postgres by its token.

use std::collections::HashSet;

use buyonce_shared::amqp::Publisher;
use buyonce_shared::document::DocumentError;
use buyonce_shared::relay::{publish_items, PublishFailure};
use buyonce_shared::store::executions::Submitted;
use buyonce_shared::store::{Cas, ItemRow, ItemStatus, Store, StoreError};
use buyonce_shared::{ExecutionDocument, ExecutionId, IdempotencyToken, LineageKey};
use serde::Serialize;
use serde_json::Value;
use tracing::{debug, info, warn};

/// Most differing fields named in a conflict message.
const MAX_DIFFERENCES: usize = 10;

/// Whether the execution was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Created,
    /// Already recorded with the same content; no rows written.
    Identical,
}

/// One item as the submitter sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ItemSummary {
    pub rec_index: i32,
    pub provider: String,
    pub service: String,
    pub status: ItemStatus,
    /// Masked token.
    pub token: String,
    /// Its message is in the queue (published now or earlier).
    pub published: bool,
}

/// What a submission did.
#[derive(Debug, Clone, Serialize)]
pub struct SubmitReport {
    pub execution_id: String,
    pub outcome: Outcome,
    pub items: Vec<ItemSummary>,
    /// Messages published by this call.
    pub published: usize,
    /// Items still waiting to be published (the relay will publish them).
    pub unpublished: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub publish_errors: Vec<String>,
}

/// Why a submission did not end with every item recorded and published.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The document is wrong; nothing was recorded.
    #[error("execution document is invalid: {0}")]
    Invalid(#[from] DocumentError),
    /// The execution ID is taken by a different document; nothing was recorded.
    #[error(
        "execution {execution_id} was already submitted with different content (differs at: {}); \
         an execution ID names one approved document for good: resubmit the identical document, \
         or submit the change under a new execution_id",
        .differences.join(", ")
    )]
    Conflict {
        execution_id: String,
        differences: Vec<String>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Recorded (safe in Postgres), but some messages are not in the queue yet.
    #[error(
        "execution {} recorded, {} of {} messages not yet published; the relay/reaper will \
         publish them (resubmitting the identical document also does): {}",
        .0.execution_id, .0.unpublished, .0.items.len(), .0.publish_errors.first().map(String::as_str).unwrap_or("unknown error")
    )]
    Publish(Box<SubmitReport>),
}

/// An execution recorded in Postgres, before publishing.
#[derive(Debug)]
pub struct Recorded {
    pub execution_id: ExecutionId,
    pub lineage_key: LineageKey,
    pub outcome: Outcome,
    pub items: Vec<ItemRow>,
}

impl Recorded {
    /// Items whose message is not in the queue: `queued` and never published.
    fn pending(&self) -> Vec<(ItemRow, LineageKey)> {
        self.items
            .iter()
            .filter(|i| i.status == ItemStatus::Queued && i.published_at.is_none())
            .map(|i| (i.clone(), self.lineage_key.clone()))
            .collect()
    }

    /// The report for when nothing could be published (the broker is unreachable).
    pub fn unpublished(self, error: &anyhow::Error) -> SubmitError {
        let pending = self.pending().len();
        let items = self.items.iter().map(|i| summary(i, false)).collect();
        SubmitError::Publish(Box::new(SubmitReport {
            execution_id: self.execution_id.to_string(),
            outcome: self.outcome,
            items,
            published: 0,
            unpublished: pending,
            publish_errors: vec![format!("{error:#}")],
        }))
    }
}

fn summary(item: &ItemRow, published_now: bool) -> ItemSummary {
    ItemSummary {
        rec_index: item.rec_index.as_i32(),
        provider: item.provider.as_str().to_owned(),
        service: item.service.as_str().to_owned(),
        status: item.status,
        token: item.masked_token(),
        published: published_now || item.published_at.is_some(),
    }
}

/// Validates the document and records it with all its items in one transaction (or finds it
/// already recorded). Publishes nothing.
#[tracing::instrument(skip_all, fields(execution.id = %doc.execution_id))]
pub async fn record(store: &Store, doc: &ExecutionDocument) -> Result<Recorded, SubmitError> {
    // Documents can be built in code too; never record one that would not decode.
    doc.validate()?;
    let (outcome, items) = match store.submit_execution(doc).await? {
        Submitted::Created(items) => (Outcome::Created, items),
        Submitted::Identical(items) => (Outcome::Identical, items),
        Submitted::Conflict { stored } => {
            let submitted = serde_json::to_value(doc.canonical())
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            let mut differences = Vec::new();
            differing_paths(&stored, &submitted, "", &mut differences);
            warn!(differences = %differences.join(", "), "execution resubmitted with different content");
            return Err(SubmitError::Conflict {
                execution_id: doc.execution_id.to_string(),
                differences,
            });
        }
    };
    info!(outcome = ?outcome, items = items.len(), "execution recorded");
    Ok(Recorded {
        execution_id: doc.execution_id.clone(),
        lineage_key: doc.lineage_key(),
        outcome,
        items,
    })
}

/// Publishes the recorded execution's pending items (all of them when it was just created;
/// for an identical resubmission only those still `queued` and unpublished), marks them
/// published, and moves the execution `approved → running` when none is left.
#[tracing::instrument(skip_all, fields(execution.id = %recorded.execution_id))]
pub async fn publish(
    store: &Store,
    publisher: &Publisher,
    recorded: Recorded,
) -> Result<SubmitReport, SubmitError> {
    let pending = recorded.pending();
    let outcome = publish_items(store, publisher, &pending).await?;
    for f in &outcome.failed {
        warn!(item.rec_index = f.rec_index.get(), token = %f.token, error = %f.error, "message not published");
    }
    // A set: a 10,000-item execution made `Vec::contains` 10⁸ comparisons.
    let published: HashSet<&IdempotencyToken> = outcome.published.iter().collect();
    let items: Vec<ItemSummary> = recorded
        .items
        .iter()
        .map(|i| summary(i, published.contains(&i.token)))
        .collect();
    let report = SubmitReport {
        execution_id: recorded.execution_id.to_string(),
        outcome: recorded.outcome,
        published: outcome.published.len(),
        unpublished: outcome.failed.len(),
        publish_errors: outcome.failed.iter().map(describe).collect(),
        items,
    };
    if !outcome.failed.is_empty() {
        return Err(SubmitError::Publish(Box::new(report)));
    }
    match store.mark_execution_running(&recorded.execution_id).await? {
        Cas::Applied(()) => debug!("execution approved → running"),
        // Already running (an earlier submission), or its items already ended.
        other => debug!(cas = %other, "execution not moved to running"),
    }
    info!(
        published = report.published,
        "execution submitted; messages published"
    );
    Ok(report)
}

/// [`record`], then [`publish`].
pub async fn submit(
    store: &Store,
    publisher: &Publisher,
    doc: &ExecutionDocument,
) -> Result<SubmitReport, SubmitError> {
    let recorded = record(store, doc).await?;
    publish(store, publisher, recorded).await
}

pub(crate) fn describe(f: &PublishFailure) -> String {
    format!("item {} ({}): {}", f.rec_index, f.token, f.error)
}

/// Collects the JSON paths where `a` and `b` differ, in the document's path notation
/// (`recommendations[2].count`), up to [`MAX_DIFFERENCES`].
fn differing_paths(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    if out.len() >= MAX_DIFFERENCES || a == b {
        return;
    }
    // jsonb may have rewritten a number (`1e16` as `10000000000000000`): equal as numbers.
    if let (Value::Number(x), Value::Number(y)) = (a, b) {
        if x.as_f64() == y.as_f64() {
            return;
        }
    }
    let field = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                match (x.get(key), y.get(key)) {
                    (Some(va), Some(vb)) => differing_paths(va, vb, &field(key), out),
                    _ if out.len() < MAX_DIFFERENCES => out.push(field(key)),
                    _ => return,
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                differing_paths(va, vb, &format!("{path}[{i}]"), out);
            }
        }
        (Value::Array(x), Value::Array(y)) => out.push(format!(
            "{} ({} recommendations recorded, {} submitted)",
            if path.is_empty() { "." } else { path },
            x.len(),
            y.len()
        )),
        _ => out.push(if path.is_empty() {
            ".".into()
        } else {
            path.to_owned()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn diff(a: Value, b: Value) -> Vec<String> {
        let mut out = Vec::new();
        differing_paths(&a, &b, "", &mut out);
        out
    }

    #[test]
    fn differences_are_named_by_path() {
        let a = json!({"approved_by": "a", "recommendations": [{"count": 1}, {"count": 2, "region": "x"}]});
        let b = json!({"approved_by": "b", "recommendations": [{"count": 1}, {"count": 3}]});
        assert_eq!(
            diff(a.clone(), b),
            vec![
                "approved_by",
                "recommendations[1].count",
                "recommendations[1].region"
            ]
        );
        let c = json!({"approved_by": "a", "recommendations": [{"count": 1}]});
        assert_eq!(
            diff(a.clone(), c),
            vec!["recommendations (2 recommendations recorded, 1 submitted)"]
        );
        assert!(diff(a.clone(), a).is_empty());
    }
}
