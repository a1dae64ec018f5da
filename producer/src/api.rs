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

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use buyonce_shared::amqp::dead_letters::archive_pending;
use buyonce_shared::document::{DocumentError, MAX_DOCUMENT_BYTES};
use buyonce_shared::ids::IdError;
use buyonce_shared::store::{Store, StoreError};
use buyonce_shared::{ExecutionDocument, ExecutionId};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::{error, warn};

use crate::broker::BrokerLink;
use crate::cancel::{self, CancelError};
use crate::config::ApiTokens;
use crate::dlq::{self, ListFilter, ReplayRequest, Selection};
use crate::fleet;
use crate::metrics::Metrics;
use crate::redrive::{self, RedriveError, RedriveOptions};
use crate::status;
use crate::submit::{self, Outcome, SubmitError};

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

fn error_body(status: StatusCode, message: impl Into<String>, extra: Value) -> Response {
    let mut body = json!({ "error": message.into() });
    if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
        body.extend(extra);
    }
    (status, Json(body)).into_response()
}

fn unauthorized(message: &str, invalid: bool) -> Response {
    let mut response = error_body(StatusCode::UNAUTHORIZED, message, Value::Null);
    let challenge = if invalid {
        "Bearer realm=\"buyonce\", error=\"invalid_token\""
    } else {
        "Bearer realm=\"buyonce\""
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

/// Defences against a web page in the operator's browser (cross-site request forgery) and
/// against DNS rebinding. Every request body must be `application/json` (a page can send
/// `text/plain` or a form anywhere without asking, but not JSON). Without tokens, where
/// nothing else authenticates: the `Host` must be a loopback name or address (a rebinding page
/// reaches 127.0.0.1 under its own host name) and a browser's `Origin`, when sent, must be
/// loopback too (browsers send it on every cross-origin POST). With tokens a browser has
/// nothing to forge with: it never adds an `Authorization` header on its own.
async fn refuse_browsers(State(app): State<App>, request: Request, next: Next) -> Response {
    if has_nul(request.uri()) {
        return error_body(
            StatusCode::BAD_REQUEST,
            "NUL characters are not allowed in the path or query",
            Value::Null,
        );
    }
    if let Some(refusal) = browser_refusal(request.headers(), app.tokens.is_empty()) {
        warn!(refusal = %refusal.1, "request refused");
        return error_body(refusal.0, refusal.1, Value::Null);
    }
    next.run(request).await
}

/// NUL cannot be stored in Postgres text: refused at the door (it reached the store as a
/// 500 with Postgres' error text before), wherever it hides in the path or query.
fn has_nul(uri: &axum::http::Uri) -> bool {
    uri.path_and_query()
        .is_some_and(|pq| pq.as_str().to_ascii_lowercase().contains("%00"))
}

fn browser_refusal(
    headers: &axum::http::HeaderMap,
    tokenless: bool,
) -> Option<(StatusCode, String)> {
    let has_body = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|n| n.trim() != "0")
        || headers.contains_key(header::TRANSFER_ENCODING);
    let content_type = headers.get(header::CONTENT_TYPE);
    if has_body || content_type.is_some() {
        let json = content_type
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Some((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "a request body must be sent as `Content-Type: application/json`".into(),
            ));
        }
    }
    if !tokenless {
        return None;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if !host.is_some_and(is_loopback_authority) {
        return Some((
            StatusCode::FORBIDDEN,
            format!(
                "without BUYONCE_API_TOKENS the API answers only requests addressed to a loopback \
                 host (localhost, 127.0.0.1, [::1]); this one was for {:?}",
                host.unwrap_or("no Host header")
            ),
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let loopback = origin.split_once("://").is_some_and(|(scheme, authority)| {
            matches!(scheme, "http" | "https") && is_loopback_authority(authority)
        });
        if !loopback {
            return Some((
                StatusCode::FORBIDDEN,
                format!(
                    "without BUYONCE_API_TOKENS the API refuses requests a web page sends from \
                     another origin ({origin:?}); set tokens to call it from elsewhere"
                ),
            ));
        }
    }
    None
}

/// `localhost`, `127.x.x.x` or `[::1]`, with or without a port.
fn is_loopback_authority(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((addr, rest)) if rest.is_empty() || rest.starts_with(':') => addr,
            _ => return false,
        },
        None => authority.split(':').next().unwrap_or(""),
    };
    buyonce_shared::net::is_loopback_host(host)
}

async fn require_bearer(State(app): State<App>, request: Request, next: Next) -> Response {
    // No tokens configured: `serve` only listens on loopback then (see `serve::listen_addr`).
    if app.tokens.is_empty() {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        });
    match presented {
        Some(token) if app.tokens.accepts(&token) => next.run(request).await,
        Some(_) => unauthorized("invalid bearer token", true),
        None => unauthorized(
            "missing bearer token: send `Authorization: Bearer <token>`",
            false,
        ),
    }
}

/// A failure on our side: the client gets a generic message and a request ID, the log gets
/// the details under the same ID (store errors name tables, functions and Postgres' text,
/// which are none of a client's business).
fn server_error(status: StatusCode, public: &str, detail: &dyn std::fmt::Display) -> Response {
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

fn store_error(e: &StoreError) -> Response {
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

fn document_error(e: &DocumentError) -> Response {
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

fn bad_execution_id(e: &IdError) -> Response {
    error_body(
        StatusCode::BAD_REQUEST,
        format!("invalid execution ID: {e}"),
        json!({ "errors": [{ "path": "execution_id", "message": e.to_string() }] }),
    )
}

async fn create_execution(State(app): State<App>, body: Result<Bytes, BytesRejection>) -> Response {
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

async fn get_execution(State(app): State<App>, Path(id): Path<String>) -> Response {
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
struct RedriveQuery {
    #[serde(default)]
    include_cancelled: bool,
}

fn bad_query(rejection: &QueryRejection) -> Response {
    error_body(
        StatusCode::BAD_REQUEST,
        format!("invalid query string: {}", rejection.body_text()),
        Value::Null,
    )
}

async fn redrive_execution(
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

async fn cancel_execution(State(app): State<App>, Path(id): Path<String>) -> Response {
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

async fn fleet_status(State(app): State<App>) -> Response {
    match fleet::summary(&app.store, app.daily_budget_usd).await {
        Ok(summary) => Json(summary).into_response(),
        Err(e) => store_error(&e),
    }
}

async fn get_pause(State(app): State<App>) -> Response {
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

/// A request refused before anything happened: its status and message (small, unlike a
/// `Response`, so it can be an `Err`).
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error_body(self.0, self.1, Value::Null)
    }
}

/// Parses an optional JSON body: empty (or `null`) means the defaults.
fn json_body<T: Default + serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
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

async fn pause(State(app): State<App>, body: Bytes) -> Response {
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

async fn resume(State(app): State<App>) -> Response {
    match fleet::resume(&app.store, "api").await {
        Ok(state) => Json(state).into_response(),
        Err(e) => store_error(&e),
    }
}

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
struct DeadLetterQuery {
    reason: Option<String>,
    execution: Option<String>,
    service: Option<String>,
    limit: Option<i64>,
}

async fn list_dead_letters(
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

async fn get_dead_letter(State(app): State<App>, Path(id): Path<String>) -> Response {
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

async fn replay_dead_letters(State(app): State<App>, body: Bytes) -> Response {
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

async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// Ready when Postgres answers and the broker connection is up (reconnecting if needed).
async fn readyz(State(app): State<App>) -> Response {
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

async fn metrics(State(app): State<App>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
        .into_response()
}

async fn not_found() -> Response {
    error_body(StatusCode::NOT_FOUND, "no such route", Value::Null)
}
