//! The Azure AD client-credentials token endpoint and the ARM bearer-token check: a token is
//! issued for one tenant and resource, and a Microsoft.Capacity call needs one for ARM.

use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use http::request::Parts;
use http::{HeaderValue, StatusCode};
use serde_json::json;

use super::Ctx;
use crate::identity::AzureClaims;
use crate::protocol::{ApiError, Params};
use crate::server::Shared;

/// Audiences ARM accepts in a token (its `InvalidAuthenticationTokenAudience` message), besides
/// fakecloud's own base URL.
const ARM_AUDIENCES: [&str; 2] = [
    "https://management.azure.com",
    "https://management.core.windows.net",
];

fn unauthorized(base: &str, tenant: &str, code: &str, message: String) -> Response {
    let body = json!({ "error": { "code": code, "message": message } });
    let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    let challenge = format!(
        "Bearer authorization_uri=\"{base}/{tenant}\", error=\"invalid_token\", error_description=\"{code}\""
    );
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, value);
    }
    response
}

pub(super) fn authenticate(
    shared: &Shared,
    parts: &Parts,
    now: DateTime<Utc>,
    base: &str,
) -> Result<AzureClaims, Box<Response>> {
    let tenant = &shared.config.azure_tenant_id;
    let Some(header) = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
    else {
        return Err(Box::new(unauthorized(
            base,
            tenant,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.".into(),
        )));
    };
    let token = header.strip_prefix("Bearer ").unwrap_or_default().trim();
    let claims = shared
        .identities
        .verify_azure_token(token, now)
        .map_err(|expired| {
            let (code, message) = if expired {
                (
                    "ExpiredAuthenticationToken",
                    format!(
                        "The access token expiry UTC time is earlier than current UTC time '{}'.",
                        now.to_rfc3339()
                    ),
                )
            } else {
                (
                    "InvalidAuthenticationToken",
                    "The access token is invalid.".to_string(),
                )
            };
            Box::new(unauthorized(base, tenant, code, message))
        })?;
    // A token for another resource (a storage account, Graph, …) is refused, as ARM does.
    let aud = claims.aud.trim_end_matches('/');
    if !aud.eq_ignore_ascii_case(base) && !ARM_AUDIENCES.iter().any(|a| aud.eq_ignore_ascii_case(a))
    {
        return Err(Box::new(unauthorized(
            base,
            tenant,
            "InvalidAuthenticationTokenAudience",
            format!(
                "The access token has been obtained for wrong audience or resource '{}'. It should exactly match with one of the allowed audiences '{base}/', '{}/'.",
                claims.aud,
                ARM_AUDIENCES.join("/', '")
            ),
        )));
    }
    Ok(claims)
}

/// An Azure AD error (`{"error": "invalid_client", "error_description": "AADSTS…"}`).
fn aad_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {description}"),
        "error_codes": [code],
        "timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
    });
    (status, axum::Json(body)).into_response()
}

pub(super) fn token(ctx: &Ctx<'_>, tenant: &str, body: &[u8]) -> Result<Response, ApiError> {
    let config = &ctx.shared.config;
    let form = Params::parse(body);
    if !tenant.eq_ignore_ascii_case(&config.azure_tenant_id) {
        return Ok(aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found."),
        ));
    }
    if form.get("grant_type") != Some("client_credentials") {
        return Ok(aad_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        ));
    }
    let client_id = form.get("client_id").unwrap_or_default();
    if client_id != config.azure_client_id {
        return Ok(aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'."),
        ));
    }
    if form.get("client_secret") != Some(config.azure_client_secret.as_str()) {
        return Ok(aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
        ));
    }
    let scope = form.get("scope").unwrap_or_default();
    if !scope.ends_with("/.default") {
        return Ok(aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            &format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier."),
        ));
    }
    let lifetime = config.token_lifetime.as_secs() as i64;
    let claims = AzureClaims {
        aud: scope.trim_end_matches("/.default").to_string(),
        iss: format!("{}/{}/v2.0", ctx.base, config.azure_tenant_id),
        tid: config.azure_tenant_id.clone(),
        appid: client_id.to_string(),
        iat: ctx.now.timestamp(),
        exp: ctx.now.timestamp() + lifetime,
    };
    let access_token = ctx.shared.identities.azure_token(&claims);
    Ok(axum::Json(json!({
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": access_token,
    }))
    .into_response())
}
