//! How the API answers a refusal or a failure: the JSON error body every route shares, the
//! mapping of store, document and execution-ID errors to statuses (our own failures logged
//! under a request ID, never shown), and the small `Refusal` a body parser returns.

use axum::extract::rejection::QueryRejection;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use buyonce_shared::document::DocumentError;
use buyonce_shared::ids::IdError;
use buyonce_shared::store::StoreError;
use serde_json::{json, Value};
use tracing::error;

pub(super) fn error_body(status: StatusCode, message: impl Into<String>, extra: Value) -> Response {
    let mut body = json!({ "error": message.into() });
    if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
        body.extend(extra);
    }
    (status, Json(body)).into_response()
}

/// A failure on our side: the client gets a generic message and a request ID, the log gets
/// the details under the same ID (store errors name tables, functions and Postgres' text,
/// which are none of a client's business).
pub(super) fn server_error(
    status: StatusCode,
    public: &str,
    detail: &dyn std::fmt::Display,
) -> Response {
    let request_id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    error!(request_id = %request_id, status = status.as_u16(), error = %detail, "{public}");
    let mut response = error_body(
        status,
        format!("{public} (request {request_id}; the producer's log has the details)"),
        json!({ "request_id": request_id }),
    );
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

pub(super) fn store_error(e: &StoreError) -> Response {
    if e.is_unavailable() {
        server_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "database unavailable, retry later",
            e,
        )
    } else {
        server_error(StatusCode::INTERNAL_SERVER_ERROR, "database error", e)
    }
}

pub(super) fn document_error(e: &DocumentError) -> Response {
    let status = match e {
        DocumentError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        DocumentError::NotUtf8(_) | DocumentError::Syntax { .. } => StatusCode::BAD_REQUEST,
        DocumentError::Field(_) | DocumentError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
    };
    error_body(
        status,
        format!("execution document is invalid: {e}"),
        json!({ "errors": e.field_errors() }),
    )
}

pub(super) fn bad_execution_id(e: &IdError) -> Response {
    error_body(
        StatusCode::BAD_REQUEST,
        format!("invalid execution ID: {e}"),
        json!({ "errors": [{ "path": "execution_id", "message": e.to_string() }] }),
    )
}

pub(super) fn bad_query(rejection: &QueryRejection) -> Response {
    error_body(
        StatusCode::BAD_REQUEST,
        format!("invalid query string: {}", rejection.body_text()),
        Value::Null,
    )
}

/// A request refused before anything happened: its status and message (small, unlike a
/// `Response`, so it can be an `Err`).
pub(super) struct Refusal(pub(super) StatusCode, pub(super) String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error_body(self.0, self.1, Value::Null)
    }
}

/// Parses an optional JSON body: empty (or `null`) means the defaults.
pub(super) fn json_body<T: Default + serde::de::DeserializeOwned>(
    body: &[u8],
) -> Result<T, Refusal> {
    let trimmed = body.trim_ascii();
    if trimmed.is_empty() || trimmed == b"null" {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        let status = if e.is_syntax() || e.is_eof() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        Refusal(status, format!("invalid request body: {e}"))
    })
}
