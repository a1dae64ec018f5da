//! Who may call the `/v1` routes: the bearer-token check, and the guards against a web page
//! in the operator's browser (JSON-only bodies; without tokens, loopback `Host` and `Origin`
//! only) and against NUL characters in the path or query.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::Value;
use tracing::warn;

use super::error::error_body;
use super::App;

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
pub(super) async fn refuse_browsers(
    State(app): State<App>,
    request: Request,
    next: Next,
) -> Response {
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

pub(super) async fn require_bearer(
    State(app): State<App>,
    request: Request,
    next: Next,
) -> Response {
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
