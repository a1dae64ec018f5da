//! The dead-letter routes: list (after draining the queue into Postgres), show one, replay a
//! selection; the request parsing here, the operations in [`crate::dlq`].

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use buyonce_shared::amqp::dead_letters::archive_pending;
use buyonce_shared::ExecutionId;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::warn;

use super::error::{bad_query, error_body, json_body, server_error, store_error, Refusal};
use super::App;
use crate::dlq::{self, ListFilter, ReplayRequest, Selection};

/// Moves what waits in the dead-letter queue into Postgres; `Err` is a warning for the
/// response (the archived rows are still worth showing).
async fn drain_dead_letters(app: &App) -> Result<(), String> {
    let channel = app.broker.channel().await.map_err(|e| format!("{e:#}"))?;
    let result = archive_pending(&app.store, &channel, app.broker.topology(), dlq::DRAIN_MAX).await;
    let _ = channel.close(200, "drained".into()).await;
    match result {
        Ok(report) if report.remaining > 0 => Err(format!(
            "{} more dead letters are still queued; list again to archive them",
            report.remaining
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("{e:#}")),
    }
}

fn bad_reason(message: String) -> Response {
    error_body(
        StatusCode::BAD_REQUEST,
        message,
        json!({ "errors": [{ "path": "reason", "message": "unknown dead-letter reason" }] }),
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeadLetterQuery {
    reason: Option<String>,
    execution: Option<String>,
    service: Option<String>,
    limit: Option<i64>,
}

pub(super) async fn list_dead_letters(
    State(app): State<App>,
    query: Result<Query<DeadLetterQuery>, QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(rejection) => return bad_query(&rejection),
    };
    let reason = match q.reason.as_deref().map(dlq::parse_reason).transpose() {
        Ok(r) => r,
        Err(message) => return bad_reason(message),
    };
    let filter = ListFilter {
        reason,
        execution_id: q.execution,
        service: q.service,
        limit: q.limit,
    };
    if let Err(problem) = filter.check() {
        return error_body(StatusCode::BAD_REQUEST, problem, Value::Null);
    }
    let warning = drain_dead_letters(&app).await.err();
    if let Some(w) = &warning {
        warn!(warning = %w, "listing dead letters without draining the queue");
    }
    match dlq::list(&app.store, &filter).await {
        Ok(mut listing) => {
            listing.warning = warning;
            Json(listing).into_response()
        }
        Err(e) => store_error(&e),
    }
}

pub(super) async fn get_dead_letter(State(app): State<App>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return error_body(
            StatusCode::BAD_REQUEST,
            format!("dead-letter ID must be a number, got {id:?}"),
            Value::Null,
        );
    };
    match dlq::show(&app.store, id).await {
        Ok(Some(detail)) => Json(detail).into_response(),
        Ok(None) => error_body(
            StatusCode::NOT_FOUND,
            format!("no dead letter {id}"),
            Value::Null,
        ),
        Err(e) => store_error(&e),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    #[serde(default)]
    ids: Vec<i64>,
    #[serde(default)]
    all: bool,
    reason: Option<String>,
    execution: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

impl ReplayBody {
    /// Exactly one selector, like the CLI.
    fn selection(self) -> Result<Selection, Refusal> {
        let given = usize::from(!self.ids.is_empty())
            + usize::from(self.all)
            + usize::from(self.reason.is_some())
            + usize::from(self.execution.is_some());
        if given != 1 {
            return Err(Refusal(
                StatusCode::UNPROCESSABLE_ENTITY,
                "choose exactly one of \"ids\", \"all\", \"reason\" or \"execution\"".into(),
            ));
        }
        Ok(if self.all {
            Selection::All
        } else if let Some(r) = self.reason {
            Selection::Reason(
                dlq::parse_reason(&r).map_err(|m| Refusal(StatusCode::UNPROCESSABLE_ENTITY, m))?,
            )
        } else if let Some(e) = self.execution {
            let id = ExecutionId::parse(&e).map_err(|e| {
                Refusal(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("invalid execution ID: {e}"),
                )
            })?;
            Selection::Execution(id.as_str().to_owned())
        } else if self.ids.len() > dlq::MAX_REPLAY_IDS {
            return Err(Refusal(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "at most {} ids per replay, got {}",
                    dlq::MAX_REPLAY_IDS,
                    self.ids.len()
                ),
            ));
        } else {
            Selection::Ids(self.ids)
        })
    }
}

pub(super) async fn replay_dead_letters(State(app): State<App>, body: Bytes) -> Response {
    let body: ReplayBody = match json_body(&body) {
        Ok(b) => b,
        Err(refusal) => return refusal.into_response(),
    };
    let dry_run = body.dry_run;
    let selection = match body.selection() {
        Ok(s) => s,
        Err(refusal) => return refusal.into_response(),
    };
    let publisher = match app.broker.publisher().await {
        Ok(p) => p,
        Err(e) => {
            return server_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "broker unavailable, retry later",
                &format!("{e:#}"),
            )
        }
    };
    if let Err(w) = drain_dead_letters(&app).await {
        warn!(warning = %w, "replaying without draining the dead-letter queue first");
    }
    let request = ReplayRequest { selection, dry_run };
    match dlq::replay(&app.store, &publisher, &request).await {
        Ok(report) => {
            let published = report
                .results
                .iter()
                .filter(|r| r.outcome == dlq::ReplayOutcome::Replayed)
                .count();
            app.metrics.publishes(published, report.unpublished);
            let status = if report.unpublished > 0 {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            };
            (status, Json(report)).into_response()
        }
        Err(e) => store_error(&e),
    }
}
