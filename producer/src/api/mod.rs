//! The HTTP API: submit, inspect and re-drive executions; health, readiness and metrics.
//!
//! | Route | Answers |
//! |---|---|
//! | `POST /v1/executions` | 201 created, 200 identical resubmission, 202 recorded but not all published, 400 not JSON, 409 same ID with other content, 413 too large, 422 invalid field |
//! | `GET /v1/executions/{id}` | 200 execution and items (masked tokens), 404 |
//! | `POST /v1/executions/{id}/redrive[?include_cancelled=true]` | 200 re-driven (possibly nothing), 202 requeued but not all published, 404, 409 cancelled (without `include_cancelled`) |
//! | `POST /v1/executions/{id}/cancel` | 200 cancelled (queued items) with the still-running items named, 404, 409 already ended |
//! | `GET /v1/status` | 200 fleet summary: pause flag, spend today vs budget, items per status, dead letters |
//! | `GET /v1/pause`, `POST /v1/pause` (`{"reason": "..."}` optional), `POST /v1/resume` | 200 the pause state after the change |
//! | `GET /v1/dead-letters?reason=&execution=&service=&limit=` | 200 `{"dead_letters": [...], "total": n}` after draining the queue into Postgres, 400 bad filter |
//! | `GET /v1/dead-letters/{id}` | 200 one dead letter with headers and envelope or escaped body, 404 |
//! | `POST /v1/dead-letters/replay` (`{"ids": [..]}` or `{"all": true}` or `{"reason": ..}` or `{"execution": ..}`, `"dry_run"`) | 200 per-message report (refusals included), 202 requeued but not all published, 400/422 bad selection |
//! | `GET /healthz`, `/readyz`, `/metrics` | unauthenticated |
//!
//! `/v1` routes require `Authorization: Bearer <token>` when tokens are configured (401
//! otherwise); a store failure is 503.

mod auth;
mod dead_letters;
mod error;
mod executions;
mod fleet;
mod health;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use buyonce_shared::document::MAX_DOCUMENT_BYTES;
use buyonce_shared::store::Store;

use crate::broker::BrokerLink;
use crate::config::ApiTokens;
use crate::metrics::Metrics;
use auth::{refuse_browsers, require_bearer};
use dead_letters::{get_dead_letter, list_dead_letters, replay_dead_letters};
use executions::{cancel_execution, create_execution, get_execution, redrive_execution};
use fleet::{fleet_status, get_pause, pause, resume};
use health::{healthz, metrics, not_found, readyz};

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct App {
    pub store: Store,
    pub broker: Arc<BrokerLink>,
    pub metrics: Arc<Metrics>,
    pub tokens: ApiTokens,
    /// `BUYONCE_DAILY_BUDGET_USD` as the producer sees it (shown by `/v1/status`).
    pub daily_budget_usd: Option<f64>,
}

/// The API's routes.
pub fn router(app: App) -> Router {
    let api = Router::new()
        .route("/v1/executions", post(create_execution))
        .route("/v1/executions/{id}", get(get_execution))
        .route("/v1/executions/{id}/redrive", post(redrive_execution))
        .route("/v1/executions/{id}/cancel", post(cancel_execution))
        .route("/v1/status", get(fleet_status))
        .route("/v1/pause", get(get_pause).post(pause))
        .route("/v1/resume", post(resume))
        .route("/v1/dead-letters", get(list_dead_letters))
        .route("/v1/dead-letters/replay", post(replay_dead_letters))
        .route("/v1/dead-letters/{id}", get(get_dead_letter))
        // route_layer: authentication runs before the handler reads the body; the browser
        // guard (outermost) before authentication.
        .route_layer(middleware::from_fn_with_state(app.clone(), require_bearer))
        .route_layer(middleware::from_fn_with_state(app.clone(), refuse_browsers))
        .layer(DefaultBodyLimit::max(MAX_DOCUMENT_BYTES));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(api)
        .fallback(not_found)
        .with_state(app)
}
