//! The fleet routes: the summary (`/v1/status`) and the pause brake (`/v1/pause`,
//! `/v1/resume`), thin over [`crate::fleet`].

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::error::{error_body, json_body, store_error};
use super::App;
use crate::fleet;

pub(super) async fn fleet_status(State(app): State<App>) -> Response {
    match fleet::summary(&app.store, app.daily_budget_usd).await {
        Ok(summary) => Json(summary).into_response(),
        Err(e) => store_error(&e),
    }
}

pub(super) async fn get_pause(State(app): State<App>) -> Response {
    match app.store.pause_state().await {
        Ok(state) => Json(state).into_response(),
        Err(e) => store_error(&e),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PauseBody {
    reason: Option<String>,
}

pub(super) async fn pause(State(app): State<App>, body: Bytes) -> Response {
    let body: PauseBody = match json_body(&body) {
        Ok(b) => b,
        Err(refusal) => return refusal.into_response(),
    };
    if let Err(problem) = fleet::check_reason(body.reason.as_deref()) {
        return error_body(
            StatusCode::UNPROCESSABLE_ENTITY,
            problem.clone(),
            json!({ "errors": [{ "path": "reason", "message": problem }] }),
        );
    }
    match fleet::pause(&app.store, body.reason.as_deref(), "api").await {
        Ok(state) => Json(state).into_response(),
        Err(e) => store_error(&e),
    }
}

pub(super) async fn resume(State(app): State<App>) -> Response {
    match fleet::resume(&app.store, "api").await {
        Ok(state) => Json(state).into_response(),
        Err(e) => store_error(&e),
    }
}
