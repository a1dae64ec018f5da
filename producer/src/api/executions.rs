//! The execution routes: submit a document (record, then publish), show an execution and its
//! items, re-drive it, cancel it; each outcome mapped to its status and counted in the metrics.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use buyonce_shared::document::MAX_DOCUMENT_BYTES;
use buyonce_shared::{ExecutionDocument, ExecutionId};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::warn;

use super::error::{bad_execution_id, bad_query, document_error, error_body, store_error};
use super::App;
use crate::cancel::{self, CancelError};
use crate::redrive::{self, RedriveError, RedriveOptions};
use crate::status;
use crate::submit::{self, Outcome, SubmitError};

pub(super) async fn create_execution(
    State(app): State<App>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            app.metrics.submission("invalid");
            return error_body(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "execution document is larger than the limit of {MAX_DOCUMENT_BYTES} bytes"
                ),
                Value::Null,
            );
        }
        Err(rejection) => {
            return error_body(rejection.status(), rejection.body_text(), Value::Null)
        }
    };
    let doc = match ExecutionDocument::from_json(&body) {
        Ok(doc) => doc,
        Err(e) => {
            app.metrics.submission("invalid");
            return document_error(&e);
        }
    };
    let result = match submit::record(&app.store, &doc).await {
        Ok(recorded) => match app.broker.publisher().await {
            Ok(publisher) => submit::publish(&app.store, &publisher, recorded).await,
            // Recorded is what matters: the relay publishes once the broker is back.
            Err(e) => Err(recorded.unpublished(&e)),
        },
        Err(e) => Err(e),
    };
    match result {
        Ok(report) => {
            app.metrics.publishes(report.published, 0);
            let (status, outcome) = match report.outcome {
                Outcome::Created => (StatusCode::CREATED, "created"),
                Outcome::Identical => (StatusCode::OK, "identical"),
            };
            app.metrics.submission(outcome);
            let location = format!("/v1/executions/{}", report.execution_id);
            let mut response = (status, Json(report)).into_response();
            if let Ok(v) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, v);
            }
            response
        }
        Err(e) => submit_error(&app, &e),
    }
}

fn submit_error(app: &App, e: &SubmitError) -> Response {
    match e {
        SubmitError::Invalid(invalid) => {
            app.metrics.submission("invalid");
            document_error(invalid)
        }
        SubmitError::Conflict {
            execution_id,
            differences,
        } => {
            app.metrics.submission("conflict");
            let extra = json!({ "execution_id": execution_id, "differences": differences });
            error_body(StatusCode::CONFLICT, e.to_string(), extra)
        }
        SubmitError::Store(store) => {
            app.metrics.submission("error");
            store_error(store)
        }
        SubmitError::Publish(report) => {
            app.metrics.submission("unpublished");
            app.metrics.publishes(report.published, report.unpublished);
            warn!(execution.id = %report.execution_id, unpublished = report.unpublished, "recorded; publish pending");
            accepted_with_warning(report.as_ref(), e.to_string())
        }
    }
}

/// 202: recorded in Postgres (so it will happen), but not every message is in the queue yet.
fn accepted_with_warning(report: &impl serde::Serialize, message: String) -> Response {
    let mut body = serde_json::to_value(report).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut body {
        map.insert("warning".into(), Value::String(message));
    }
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

pub(super) async fn get_execution(State(app): State<App>, Path(id): Path<String>) -> Response {
    let id = match ExecutionId::parse(&id) {
        Ok(id) => id,
        Err(e) => return bad_execution_id(&e),
    };
    match status::execution_view(&app.store, &id).await {
        Ok(Some(view)) => Json(view).into_response(),
        Ok(None) => error_body(
            StatusCode::NOT_FOUND,
            format!("no execution {id}"),
            Value::Null,
        ),
        Err(e) => store_error(&e),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RedriveQuery {
    #[serde(default)]
    include_cancelled: bool,
}

pub(super) async fn redrive_execution(
    State(app): State<App>,
    Path(id): Path<String>,
    query: Result<Query<RedriveQuery>, QueryRejection>,
) -> Response {
    let id = match ExecutionId::parse(&id) {
        Ok(id) => id,
        Err(e) => return bad_execution_id(&e),
    };
    let options = match query {
        Ok(Query(q)) => RedriveOptions {
            include_cancelled: q.include_cancelled,
        },
        Err(rejection) => return bad_query(&rejection),
    };
    let result = match redrive::requeue_with(&app.store, &id, options).await {
        Ok(requeued) => match app.broker.publisher().await {
            Ok(publisher) => redrive::publish_requeued(&app.store, &publisher, requeued).await,
            Err(e) => Err(requeued.unpublished(&e)),
        },
        Err(e) => Err(e),
    };
    match result {
        Ok(report) => {
            app.metrics.publishes(report.published, 0);
            Json(report).into_response()
        }
        Err(e) => match &e {
            RedriveError::NotFound(_) => {
                error_body(StatusCode::NOT_FOUND, e.to_string(), Value::Null)
            }
            RedriveError::Cancelled(_) => {
                error_body(StatusCode::CONFLICT, e.to_string(), Value::Null)
            }
            RedriveError::Store(store) => store_error(store),
            RedriveError::Publish(report) => {
                app.metrics.publishes(report.published, report.unpublished);
                accepted_with_warning(report.as_ref(), e.to_string())
            }
        },
    }
}

pub(super) async fn cancel_execution(State(app): State<App>, Path(id): Path<String>) -> Response {
    let id = match ExecutionId::parse(&id) {
        Ok(id) => id,
        Err(e) => return bad_execution_id(&e),
    };
    match cancel::cancel(&app.store, &id, "api").await {
        Ok(report) => Json(report).into_response(),
        Err(e @ CancelError::NotFound(_)) => {
            error_body(StatusCode::NOT_FOUND, e.to_string(), Value::Null)
        }
        Err(e @ CancelError::Ended { .. }) => {
            error_body(StatusCode::CONFLICT, e.to_string(), Value::Null)
        }
        Err(CancelError::Store(e)) => store_error(&e),
    }
}
