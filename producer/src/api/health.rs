//! The unauthenticated routes: liveness (`/healthz`), readiness (`/readyz`: Postgres and the
//! broker), `/metrics` in OpenMetrics text, and the JSON 404 for any other path.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tracing::warn;

use super::error::error_body;
use super::App;

pub(super) async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// Ready when Postgres answers and the broker connection is up (reconnecting if needed).
pub(super) async fn readyz(State(app): State<App>) -> Response {
    let database = match tokio::time::timeout(Duration::from_secs(3), app.store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 3s".to_owned()),
    };
    let broker = match tokio::time::timeout(Duration::from_secs(5), app.broker.publisher()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err("no connection within 5s".to_owned()),
    };
    // Unauthenticated: say which dependency is down, not why (the log says why).
    let show = |what: &str, r: &Result<(), String>| match r {
        Ok(()) => "ok",
        Err(e) => {
            warn!(dependency = what, error = %e, "not ready");
            "unavailable"
        }
    };
    let status = if database.is_ok() && broker.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "database": show("database", &database), "broker": show("broker", &broker) })),
    )
        .into_response()
}

pub(super) async fn metrics(State(app): State<App>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
        .into_response()
}

pub(super) async fn not_found() -> Response {
    error_body(StatusCode::NOT_FOUND, "no such route", Value::Null)
}
