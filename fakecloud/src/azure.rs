//! Azure: the OAuth2 client-credentials token endpoint and Microsoft.Capacity reservation orders
//! (api-version 2022-11-01).
//!
//! The purchase flow is the real two-step one: `POST calculatePrice` mints a
//! `reservationOrderId` that is valid for a limited time, and `PUT reservationOrders/{id}` buys
//! only an ID minted that way and not expired — anything else gets the real 400
//! `Session timed out - Call CalculatePrice again and provide the new Reservation Order ID for
//! purchase`, so a client-chosen order ID fails here as it does in Azure. A second PUT of a
//! purchased ID answers `ReservationOrderIdAlreadyExists`. A purchase answers 202 with `Location`,
//! `Azure-AsyncOperation` and `Retry-After`, and the order moves `Creating` → `Succeeded`.
//!
//! The 2022-11-01 `PurchaseRequest` and `ReservationOrderResponse` have no `tags`: tags sent with
//! a purchase are ignored and never returned, so the display name is the only handle a client
//! can find its order by — as in Azure.

use std::collections::BTreeMap;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, Months, SecondsFormat, TimeDelta, Utc};
use http::request::Parts;
use http::{HeaderValue, Method, StatusCode};
use serde_json::{json, Value};

use super::aws::to_delta;
use super::catalog::{ONE_YEAR, THREE_YEARS};
use super::faults::{CommitFailure, InjectedError, OpKind};
use super::identity::AzureClaims;
use super::ledger::{AzureOrder, Commitment, Detail, PriceSession, Provider};
use super::protocol::{decode_token, encode_token, ApiError, Params};
use super::realism::Realism;
use super::server::{DropConnection, Shared};

/// The Microsoft.Capacity API version fakecloud serves.
pub const API_VERSION: &str = "2022-11-01";
const PROVIDER_PREFIX: &str = "/providers/microsoft.capacity/";
const SESSION_TIMED_OUT: &str =
    "Session timed out - Call CalculatePrice again and provide the new Reservation Order ID for purchase";

/// The project's Azure service name of a `reservedResourceType` (`VirtualMachines` → `vm`).
pub fn azure_service(reserved_resource_type: &str) -> String {
    match reserved_resource_type.to_ascii_lowercase().as_str() {
        "virtualmachines" => "vm".into(),
        "sqldatabases" => "sql-database".into(),
        "rediscache" => "redis-cache".into(),
        "cosmosdb" => "cosmos-db".into(),
        other => other.into(),
    }
}

/// The 2022-11-01 spec's `ReservedResourceType` values. The enum is declared extensible, but a
/// value outside it is refused here: nothing documents what Azure does with one.
const RESERVED_RESOURCE_TYPES: [&str; 26] = [
    "VirtualMachines",
    "SqlDatabases",
    "SuseLinux",
    "CosmosDb",
    "RedHat",
    "SqlDataWarehouse",
    "VMwareCloudSimple",
    "RedHatOsa",
    "Databricks",
    "AppService",
    "ManagedDisk",
    "BlockBlob",
    "RedisCache",
    "AzureDataExplorer",
    "MySql",
    "MariaDb",
    "PostgreSql",
    "DedicatedHost",
    "SapHana",
    "SqlAzureHybridBenefit",
    "AVS",
    "DataFactory",
    "NetAppStorage",
    "AzureFiles",
    "SqlEdge",
    "VirtualMachineSoftware",
];

/// Audiences ARM accepts in a token (its `InvalidAuthenticationTokenAudience` message), besides
/// fakecloud's own base URL.
const ARM_AUDIENCES: [&str; 2] = [
    "https://management.azure.com",
    "https://management.core.windows.net",
];

/// Whether a path belongs to the Azure side (ARM paths are case-insensitive).
pub fn is_azure_path(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.starts_with(PROVIDER_PREFIX) || token_tenant(path).is_some()
}

/// `/{tenant}/oauth2/v2.0/token` → tenant.
fn token_tenant(path: &str) -> Option<&str> {
    let mut parts = path.trim_start_matches('/').split('/');
    let tenant = parts.next()?;
    let rest: Vec<&str> = parts.collect();
    (rest == ["oauth2", "v2.0", "token"] && !tenant.is_empty()).then_some(tenant)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Token(String),
    CalculatePrice,
    ListOrders,
    PurchaseOrder(String),
    GetOrder(String),
    OperationStatus(String),
    OperationResult(String),
}

impl Route {
    fn operation(&self) -> &'static str {
        match self {
            Route::Token(_) => "GetToken",
            Route::CalculatePrice => "CalculatePrice",
            Route::ListOrders => "ListReservationOrders",
            Route::PurchaseOrder(_) => "PurchaseReservationOrder",
            Route::GetOrder(_) => "GetReservationOrder",
            Route::OperationStatus(_) => "GetOperationStatus",
            Route::OperationResult(_) => "GetOperationResult",
        }
    }

    fn kind(&self) -> OpKind {
        match self {
            Route::Token(_) | Route::CalculatePrice => OpKind::Other,
            Route::PurchaseOrder(_) => OpKind::Purchase,
            _ => OpKind::Lookup,
        }
    }

    fn parse(method: &Method, path: &str) -> Option<Route> {
        if let Some(tenant) = token_tenant(path) {
            return (method == Method::POST).then(|| Route::Token(tenant.to_string()));
        }
        let lower = path.to_ascii_lowercase();
        let rest = lower.strip_prefix(PROVIDER_PREFIX)?.trim_end_matches('/');
        let segments: Vec<&str> = rest.split('/').collect();
        match (method.as_str(), segments.as_slice()) {
            ("POST", ["calculateprice"]) => Some(Route::CalculatePrice),
            ("GET", ["reservationorders"]) => Some(Route::ListOrders),
            ("PUT", ["reservationorders", id]) => Some(Route::PurchaseOrder(id.to_string())),
            ("GET", ["reservationorders", id]) => Some(Route::GetOrder(id.to_string())),
            ("GET", ["reservationorders", id, "operationstatus"]) => {
                Some(Route::OperationStatus(id.to_string()))
            }
            ("GET", ["reservationorders", id, "operationresults"]) => {
                Some(Route::OperationResult(id.to_string()))
            }
            _ => None,
        }
    }
}

/// An ARM error: `{"error": {"code": …, "message": …}}`.
fn arm_error(error: &ApiError, request_id: &str) -> Response {
    let body = json!({ "error": { "code": error.code, "message": error.message } });
    let mut response = (error.status, axum::Json(body)).into_response();
    set_request_id(&mut response, request_id);
    response
}

fn set_request_id(response: &mut Response, request_id: &str) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response
            .headers_mut()
            .insert("x-ms-request-id", value.clone());
        response
            .headers_mut()
            .insert("x-ms-correlation-request-id", value);
    }
}

fn bad_request(code: &str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(code, message)
}

fn injected(error: &InjectedError) -> ApiError {
    match error {
        InjectedError::Throttling => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "The request is being throttled as the limit has been reached for operation type.",
        ),
        InjectedError::InternalFailure => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "Internal server error.",
        ),
        InjectedError::ServiceUnavailable => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The service is unavailable.",
        ),
        InjectedError::Custom {
            status,
            code,
            message,
        } => ApiError::injected(*status, code, message.as_deref()),
    }
}

/// Context of one Azure call.
struct Ctx<'a> {
    shared: &'a Shared,
    base: String,
    query: Params,
    now: DateTime<Utc>,
    provisioning_failure: Option<Option<String>>,
    /// The realism knobs at the time of the call.
    realism: Realism,
}

impl Ctx<'_> {
    /// Whether lookups show `c` yet (realism's eventual consistency).
    fn visible(&self, c: &Commitment) -> bool {
        self.now >= c.created_at + to_delta(self.realism.visibility_delay)
    }
}

/// Handles one Azure request.
pub async fn handle(shared: &Shared, parts: &Parts, body: Bytes) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let Some(route) = Route::parse(&parts.method, parts.uri.path()) else {
        let error = ApiError::new(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            format!(
                "The resource type could not be found for {} {}.",
                parts.method,
                parts.uri.path()
            ),
        );
        return arm_error(&error, &request_id);
    };
    let op_name = format!("azure:{}", route.operation());
    shared.store().count_call(&op_name);
    tracing::debug!(operation = %op_name, request.id = %request_id, "azure call");
    let now = Utc::now();
    let query = Params::parse(parts.uri.query().unwrap_or_default().as_bytes());
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let base = format!("http://{host}");

    let claims = match &route {
        Route::Token(_) => None,
        _ => match authenticate(shared, parts, now, &base) {
            Ok(claims) => Some(claims),
            Err(response) => return *response,
        },
    };
    if !matches!(route, Route::Token(_)) {
        match query.get("api-version") {
            None => {
                let e = bad_request(
                    "MissingApiVersionParameter",
                    "The api-version query parameter (?api-version=) is required for all requests.",
                );
                return arm_error(&e, &request_id);
            }
            Some(v) if v != API_VERSION => {
                let e = bad_request(
                    "InvalidApiVersionParameter",
                    format!("The api-version '{v}' is invalid. The supported versions are '{API_VERSION}'."),
                );
                return arm_error(&e, &request_id);
            }
            Some(_) => {}
        }
    }

    let decision = shared.decide(&op_name, route.kind());
    let latency = shared.config.latency + decision.latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(error) = &decision.reject {
        tracing::info!(operation = %op_name, ?error, "injected error");
        let mut response = arm_error(&injected(error), &request_id);
        if matches!(error, InjectedError::Throttling) {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        return response;
    }

    let ctx = Ctx {
        shared,
        base,
        query,
        now,
        provisioning_failure: decision.provisioning_failure.clone(),
        realism: shared.realism(),
    };
    let tenant = claims.as_ref().map(|c| c.tid.clone()).unwrap_or_default();
    let result = match &route {
        Route::Token(tenant) => token(&ctx, tenant, &body),
        Route::CalculatePrice => calculate_price(&ctx, &body),
        Route::PurchaseOrder(id) => purchase(&ctx, &tenant, id, &body),
        Route::GetOrder(id) => get_order(&ctx, &tenant, id, decision.lookup_empty),
        Route::ListOrders => list_orders(&ctx, &tenant, decision.lookup_empty),
        Route::OperationStatus(id) => operation_status(&ctx, &tenant, id),
        Route::OperationResult(id) => operation_result(&ctx, &tenant, id),
    };
    let mut response = match result {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(operation = %op_name, code = %error.code, "azure call failed");
            return arm_error(&error, &request_id);
        }
    };
    set_request_id(&mut response, &request_id);
    match decision.commit_then_fail {
        None => response,
        Some(CommitFailure::ServerError) => {
            tracing::info!(operation = %op_name, "commit-then-fail: answering 500");
            arm_error(&injected(&InjectedError::InternalFailure), &request_id)
        }
        Some(CommitFailure::DropConnection) => {
            tracing::info!(operation = %op_name, "commit-then-fail: dropping the connection");
            DropConnection::response()
        }
    }
}

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

fn authenticate(
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

fn token(ctx: &Ctx<'_>, tenant: &str, body: &[u8]) -> Result<Response, ApiError> {
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

/// A validated `PurchaseRequest`.
#[derive(Debug, Clone)]
struct Purchase {
    sku: String,
    location: String,
    reserved_resource_type: String,
    billing_scope_id: String,
    subscription: String,
    term: String,
    billing_plan: String,
    quantity: u32,
    display_name: Option<String>,
    applied_scope_type: String,
}

impl Purchase {
    /// Parses a `PurchaseRequest`. `strict_names` (realism): refuse what ARM might normalise
    /// — a location not in canonical form, `billingScopeId` not spelled `/subscriptions/<guid>`
    /// — instead of normalising it.
    fn parse(body: &[u8], strict_names: bool) -> Result<Self, ApiError> {
        let invalid = |m: String| bad_request("InvalidRequestContent", m);
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            invalid(format!(
                "The request content was invalid and could not be deserialized: {e}"
            ))
        })?;
        let text = |v: Option<&Value>, name: &str| -> Result<String, ApiError> {
            v.and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .ok_or_else(|| {
                    invalid(format!(
                        "The request content is missing the required property '{name}'."
                    ))
                })
        };
        let props = value.get("properties").filter(|p| p.is_object());
        let props = props.ok_or_else(|| {
            invalid("The request content is missing the required property 'properties'.".into())
        })?;
        let sku = text(value.get("sku").and_then(|s| s.get("name")), "sku.name")?;
        let given_location = text(value.get("location"), "location")?;
        // ARM's RPC guidance has providers accept "West Europe" for `westeurope`; strict mode
        // does not, so a worker that sends anything but the canonical name is caught.
        let location = given_location.to_ascii_lowercase().replace(' ', "");
        if strict_names && location != given_location {
            return Err(bad_request(
                "InvalidLocationId",
                format!(
                    "The location '{given_location}' is not in canonical form (e.g. 'westeurope')."
                ),
            ));
        }
        let reserved_resource_type = text(
            props.get("reservedResourceType"),
            "properties.reservedResourceType",
        )?;
        if !RESERVED_RESOURCE_TYPES
            .iter()
            .any(|t| t.eq_ignore_ascii_case(&reserved_resource_type))
        {
            return Err(invalid(format!(
                "The reserved resource type '{reserved_resource_type}' is not supported."
            )));
        }
        let billing_scope_id = text(props.get("billingScopeId"), "properties.billingScopeId")?;
        let subscription = billing_scope_id
            .strip_prefix("/subscriptions/")
            .or_else(|| {
                (!strict_names)
                    .then(|| billing_scope_id.strip_prefix("/Subscriptions/"))
                    .flatten()
            })
            .filter(|s| !s.is_empty() && !s.contains('/'))
            .ok_or_else(|| {
                bad_request(
                    "InvalidSubscriptionId",
                    format!("Invalid billingScopeId '{billing_scope_id}'."),
                )
            })?
            .to_ascii_lowercase();
        let term = text(props.get("term"), "properties.term")?;
        if !["P1Y", "P3Y", "P5Y"].contains(&term.as_str()) {
            return Err(bad_request(
                "UnsupportedReservationTerm",
                format!("The term '{term}' is not supported."),
            ));
        }
        let billing_plan = props
            .get("billingPlan")
            .and_then(Value::as_str)
            .unwrap_or("Upfront")
            .to_string();
        if billing_plan != "Upfront" && billing_plan != "Monthly" {
            return Err(invalid(format!("Invalid billingPlan '{billing_plan}'.")));
        }
        let quantity = props
            .get("quantity")
            .and_then(Value::as_i64)
            .and_then(|q| u32::try_from(q).ok())
            .filter(|q| *q >= 1)
            .ok_or_else(|| invalid("The quantity must be an integer greater than zero.".into()))?;
        let applied_scope_type = props
            .get("appliedScopeType")
            .and_then(Value::as_str)
            .unwrap_or("Shared")
            .to_string();
        match applied_scope_type.as_str() {
            "Shared" | "ManagementGroup" => {}
            "Single" => {
                let scopes = props
                    .get("appliedScopes")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty());
                let properties = props.get("appliedScopeProperties").is_some_and(|p| {
                    p.get("subscriptionId").is_some() || p.get("resourceGroupId").is_some()
                });
                if !scopes && !properties {
                    return Err(bad_request(
                        "MissingAppliedScopesForSingle",
                        "Applied scopes are required when the applied scope type is Single.",
                    ));
                }
            }
            other => return Err(invalid(format!("Invalid appliedScopeType '{other}'."))),
        }
        let display_name = props
            .get("displayName")
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(Self {
            sku,
            location,
            reserved_resource_type,
            billing_scope_id,
            subscription,
            term,
            billing_plan,
            quantity,
            display_name,
            applied_scope_type,
        })
    }

    /// What must not change between the quote and the purchase.
    fn fingerprint(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}|{}|{}|{}",
            self.sku.to_ascii_lowercase(),
            self.location,
            self.reserved_resource_type.to_ascii_lowercase(),
            self.subscription,
            self.term,
            self.billing_plan,
            self.quantity,
            self.applied_scope_type
        )
    }

    fn months(&self) -> u32 {
        match self.term.as_str() {
            "P3Y" => 36,
            "P5Y" => 60,
            _ => 12,
        }
    }

    fn duration_seconds(&self) -> i64 {
        match self.term.as_str() {
            "P3Y" => THREE_YEARS,
            "P5Y" => ONE_YEAR * 5,
            _ => ONE_YEAR,
        }
    }

    /// The order's total price and currency, from the catalog.
    fn price(&self, ctx: &Ctx<'_>) -> Result<(f64, String), ApiError> {
        let sku = ctx
            .shared
            .catalog
            .azure_sku(&self.reserved_resource_type, &self.sku, &self.term, &self.location)
            .ok_or_else(|| {
                bad_request(
                    "BadRequest",
                    format!(
                        "The SKU '{}' of reserved resource type '{}' is not available for term {} in location '{}'.",
                        self.sku, self.reserved_resource_type, self.term, self.location
                    ),
                )
            })?;
        Ok((
            round2(sku.price * f64::from(self.quantity)),
            sku.currency.clone(),
        ))
    }
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

fn price_json(currency: &str, amount: f64) -> Value {
    json!({ "currencyCode": currency, "amount": amount })
}

fn calculate_price(ctx: &Ctx<'_>, body: &[u8]) -> Result<Response, ApiError> {
    let purchase = Purchase::parse(body, ctx.realism.azure_strict_names)?;
    let (total, currency) = purchase.price(ctx)?;
    let months = purchase.months();
    let installment = round2(total / f64::from(months));
    let due_now = if purchase.billing_plan == "Monthly" {
        installment
    } else {
        total
    };
    let schedule: Vec<Value> = if purchase.billing_plan == "Monthly" {
        (0..months)
            .map(|m| {
                let due = ctx
                    .now
                    .checked_add_months(Months::new(m))
                    .unwrap_or(ctx.now);
                json!({
                    "dueDate": due.format("%Y-%m-%d").to_string(),
                    "pricingCurrencyTotal": price_json(&currency, installment),
                    "billingCurrencyTotal": price_json(&currency, installment),
                    "status": "Scheduled",
                })
            })
            .collect()
    } else {
        vec![json!({
            "dueDate": ctx.now.format("%Y-%m-%d").to_string(),
            "pricingCurrencyTotal": price_json(&currency, total),
            "billingCurrencyTotal": price_json(&currency, total),
            "status": "Scheduled",
        })]
    };
    let order_id = {
        let mut store = ctx.shared.store();
        let id = store.uuid();
        let expires_at = ctx.now + to_delta(ctx.shared.config.azure_price_session_ttl);
        store.price_sessions.insert(
            id.clone(),
            PriceSession {
                fingerprint: purchase.fingerprint(),
                total,
                currency: currency.clone(),
                expires_at,
            },
        );
        id
    };
    let years = purchase.months() / 12;
    Ok(axum::Json(json!({
        "properties": {
            "billingCurrencyTotal": price_json(&currency, due_now),
            "netTotal": total,
            "taxTotal": 0.0,
            "grandTotal": total,
            "isTaxIncluded": false,
            "isBillingPartnerManaged": false,
            "reservationOrderId": order_id,
            "skuTitle": format!("Reserved {}, {}, {}, {years} Year", purchase.reserved_resource_type, purchase.sku, purchase.location),
            "skuDescription": purchase.sku,
            // For a monthly plan, one instalment, as in the spec's CalculateReservationOrder
            // example; the whole term is the payment schedule's sum.
            "pricingCurrencyTotal": price_json(&currency, due_now),
            "paymentSchedule": schedule,
        }
    }))
    .into_response())
}

fn order_url(base: &str, id: &str, suffix: &str) -> String {
    format!("{base}/providers/Microsoft.Capacity/reservationOrders/{id}{suffix}?api-version={API_VERSION}")
}

fn purchase(ctx: &Ctx<'_>, tenant: &str, id: &str, body: &[u8]) -> Result<Response, ApiError> {
    let realism = &ctx.realism;
    let request = Purchase::parse(body, realism.azure_strict_names)?;
    let id = id.to_ascii_lowercase();
    // One lock for "already bought?", "minted and fresh?" and the insert: N concurrent PUTs of
    // one ID make one order.
    let mut store = ctx.shared.store();
    if store
        .commitments
        .iter()
        .any(|c| c.provider == Provider::Azure && c.id == id)
    {
        // Nothing documents which answer a consumed order ID gets; realism gives the one that
        // tempts a client to re-quote.
        if realism.azure_reput_session_timeout {
            return Err(bad_request("BadRequest", SESSION_TIMED_OUT));
        }
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "ReservationOrderIdAlreadyExists",
            format!("Reservation order id '{id}' already exists. Call CalculatePrice to get a new reservation order id."),
        ));
    }
    let session = match store.price_sessions.get(&id) {
        Some(session) if session.expires_at > ctx.now => session.clone(),
        _ => return Err(bad_request("BadRequest", SESSION_TIMED_OUT)),
    };
    if session.fingerprint != request.fingerprint() {
        return Err(bad_request(
            "BadRequest",
            format!("The purchase request does not match the price calculation for reservation order id '{id}'. Call CalculatePrice again."),
        ));
    }
    store.price_sessions.remove(&id);
    let reservation_id = store.uuid();
    let display_name = request.display_name.clone().unwrap_or_else(|| {
        format!(
            "{}_{}",
            request.reserved_resource_type,
            ctx.now.format("%m-%d-%Y_%H-%M")
        )
    });
    let delay = to_delta(ctx.shared.config.azure_provisioning_delay);
    let final_state = match &ctx.provisioning_failure {
        None => "Succeeded".to_string(),
        Some(None) => "Failed".to_string(),
        // Realism's payment failure, spelled the Azure way.
        Some(Some(state)) if state == "payment-failed" => "BillingFailed".to_string(),
        Some(Some(state)) => state.clone(),
    };
    let order = Commitment {
        provider: Provider::Azure,
        service: azure_service(&request.reserved_resource_type),
        account: request.subscription.clone(),
        region: request.location.clone(),
        id: id.clone(),
        handle: Some(display_name.clone()),
        offering_id: request.sku.clone(),
        resource_type: request.sku.clone(),
        product: None,
        offering_class: None,
        multi_az: None,
        zone: None,
        count: request.quantity,
        duration_seconds: request.duration_seconds(),
        payment: request.billing_plan.clone(),
        unit_fixed: 0.0,
        unit_usage: 0.0,
        unit_recurring: 0.0,
        currency: session.currency.clone(),
        tags: BTreeMap::new(),
        created_at: ctx.now,
        ready_at: ctx.now + delay,
        pending_state: "Creating".into(),
        final_state,
        state_override: None,
        detail: Detail::Azure(AzureOrder {
            tenant: tenant.to_string(),
            display_name,
            reserved_resource_type: request.reserved_resource_type.clone(),
            term: request.term.clone(),
            billing_plan: request.billing_plan.clone(),
            applied_scope_type: request.applied_scope_type.clone(),
            billing_scope_id: request.billing_scope_id.clone(),
            reservation_id,
            etag: 1,
            total: session.total,
        }),
    };
    store.commitments.push(order.clone());
    drop(store);
    tracing::info!(order.id = %id, sku = %request.sku, quantity = request.quantity, subscription = %request.subscription, "Azure reservation order purchased");

    if realism.azure_put_in_progress_200 {
        // The ARM PUT pattern: 200 with a non-terminal provisioningState; the client polls the
        // resource until it is terminal.
        return Ok((StatusCode::OK, axum::Json(order_json(ctx, &order, false))).into_response());
    }
    // The spec's pattern for this operation: 202 with `Location` (final-state-via: location)
    // and `Retry-After`, no `Azure-AsyncOperation`.
    let mut response = (
        StatusCode::ACCEPTED,
        axum::Json(order_json(ctx, &order, false)),
    )
        .into_response();
    let headers = response.headers_mut();
    let retry_after = ((delay.num_milliseconds().max(0) + 999) / 1000).to_string();
    for (name, value) in [
        ("location", order_url(&ctx.base, &id, "/operationResults")),
        ("retry-after", retry_after),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    Ok(response)
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn order_json(ctx: &Ctx<'_>, c: &Commitment, with_schedule: bool) -> Value {
    let Detail::Azure(order) = &c.detail else {
        return Value::Null;
    };
    let expiry = c.end();
    let mut properties = json!({
        "displayName": order.display_name,
        "requestDateTime": iso(c.created_at),
        "createdDateTime": iso(c.created_at),
        "benefitStartTime": iso(c.created_at),
        "expiryDate": expiry.format("%Y-%m-%d").to_string(),
        "expiryDateTime": iso(expiry),
        "term": order.term,
        "billingPlan": order.billing_plan,
        "provisioningState": c.state_at(ctx.now),
        "originalQuantity": c.count,
        "reservations": [{
            "id": format!("/providers/microsoft.capacity/reservationOrders/{}/reservations/{}", c.id, order.reservation_id)
        }],
    });
    if with_schedule {
        properties["planInformation"] = json!({
            "pricingCurrencyTotal": price_json(&c.currency, order.total),
            "startDate": c.created_at.format("%Y-%m-%d").to_string(),
            "transactions": [],
        });
    }
    json!({
        "id": format!("/providers/microsoft.capacity/reservationOrders/{}", c.id),
        "type": "Microsoft.Capacity/reservationOrders",
        "name": c.id,
        "etag": order.etag,
        "properties": properties,
    })
}

/// The order with this ID visible to `tenant`.
/// Realism's eventual consistency applies: a fresh order is not found yet (ARM documents that a
/// resource being created may answer 404 until its creation completes).
fn find_order(ctx: &Ctx<'_>, tenant: &str, id: &str) -> Result<Commitment, ApiError> {
    let id = id.to_ascii_lowercase();
    let found = ctx
        .shared
        .store()
        .commitments
        .iter()
        .find(|c| c.id == id && matches!(&c.detail, Detail::Azure(o) if o.tenant == tenant))
        .cloned();
    found.filter(|c| ctx.visible(c)).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "ReservationOrderNotFound",
            format!("Reservation order '{id}' was not found."),
        )
    })
}

fn get_order(
    ctx: &Ctx<'_>,
    tenant: &str,
    id: &str,
    lookup_empty: bool,
) -> Result<Response, ApiError> {
    if lookup_empty {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "ReservationOrderNotFound",
            format!("Reservation order '{id}' was not found."),
        ));
    }
    let order = find_order(ctx, tenant, id)?;
    let with_schedule = ctx
        .query
        .get("$expand")
        .is_some_and(|e| e.eq_ignore_ascii_case("schedule"));
    Ok(axum::Json(order_json(ctx, &order, with_schedule)).into_response())
}

fn list_orders(ctx: &Ctx<'_>, tenant: &str, lookup_empty: bool) -> Result<Response, ApiError> {
    let orders: Vec<Commitment> = if lookup_empty {
        Vec::new()
    } else {
        let all: Vec<Commitment> = ctx
            .shared
            .store()
            .commitments
            .iter()
            .filter(|c| matches!(&c.detail, Detail::Azure(o) if o.tenant == tenant))
            .cloned()
            .collect();
        all.into_iter().filter(|c| ctx.visible(c)).collect()
    };
    let start = match ctx.query.get("$skiptoken") {
        None => 0,
        Some(token) => {
            decode_token(token).ok_or_else(|| bad_request("BadRequest", "Invalid $skiptoken."))?
        }
    };
    let page_size = ctx.shared.config.azure_page_size.max(1);
    let end = start.saturating_add(page_size).min(orders.len());
    let page: Vec<Value> = orders
        .get(start..end)
        .unwrap_or_default()
        .iter()
        .map(|o| order_json(ctx, o, false))
        .collect();
    let mut body = json!({ "value": page });
    if end < orders.len() {
        let token = encode_token(end);
        body["nextLink"] = json!(format!(
            "{}/providers/Microsoft.Capacity/reservationOrders?api-version={API_VERSION}&$skiptoken={token}",
            ctx.base
        ));
    }
    Ok(axum::Json(body).into_response())
}

fn is_terminal(state: &str) -> bool {
    !matches!(
        state,
        "Creating"
            | "PendingResourceHold"
            | "ConfirmedResourceHold"
            | "PendingBilling"
            | "ConfirmedBilling"
    )
}

/// `Azure-AsyncOperation`: the ARM operation status document.
fn operation_status(ctx: &Ctx<'_>, tenant: &str, id: &str) -> Result<Response, ApiError> {
    let order = find_order(ctx, tenant, id)?;
    let state = order.state_at(ctx.now);
    let status = match state.as_str() {
        "Succeeded" => "Succeeded",
        "Cancelled" => "Canceled",
        s if is_terminal(s) => "Failed",
        _ => "InProgress",
    };
    let mut body = json!({
        "id": order_url("", &order.id, "/operationStatus"),
        "name": order.id,
        "status": status,
        "startTime": iso(order.created_at),
    });
    if is_terminal(&state) {
        body["endTime"] = json!(iso(order.ready_at.max(order.created_at)));
    }
    if status == "Failed" {
        let code = if state == "BillingFailed" {
            "BillingError"
        } else {
            "PurchaseError"
        };
        body["error"] = json!({ "code": code, "message": format!("The reservation order ended in state {state}.") });
    }
    let mut response = axum::Json(body).into_response();
    if status == "InProgress" {
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, retry_after(&order, ctx.now));
    }
    Ok(response)
}

/// `Location`: 202 while the order is being created, then 200 with the order.
fn operation_result(ctx: &Ctx<'_>, tenant: &str, id: &str) -> Result<Response, ApiError> {
    let order = find_order(ctx, tenant, id)?;
    if is_terminal(&order.state_at(ctx.now)) {
        return Ok(axum::Json(order_json(ctx, &order, false)).into_response());
    }
    let mut response = StatusCode::ACCEPTED.into_response();
    let headers = response.headers_mut();
    headers.insert(http::header::RETRY_AFTER, retry_after(&order, ctx.now));
    if let Ok(location) =
        HeaderValue::from_str(&order_url(&ctx.base, &order.id, "/operationResults"))
    {
        headers.insert(http::header::LOCATION, location);
    }
    Ok(response)
}

fn retry_after(order: &Commitment, now: DateTime<Utc>) -> HeaderValue {
    let remaining = (order.ready_at - now).max(TimeDelta::zero());
    HeaderValue::from(((remaining.num_milliseconds() + 999) / 1000).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            Route::parse(&Method::POST, "/t/oauth2/v2.0/token"),
            Some(Route::Token("t".into()))
        );
        assert_eq!(
            Route::parse(
                &Method::PUT,
                "/providers/Microsoft.Capacity/reservationOrders/ABC"
            ),
            Some(Route::PurchaseOrder("abc".into()))
        );
        assert_eq!(
            Route::parse(
                &Method::GET,
                "/providers/microsoft.capacity/reservationorders"
            ),
            Some(Route::ListOrders)
        );
        assert_eq!(
            Route::parse(
                &Method::DELETE,
                "/providers/Microsoft.Capacity/reservationOrders/x"
            ),
            None
        );
        assert!(is_azure_path(
            "/providers/Microsoft.Capacity/calculatePrice"
        ));
        assert!(!is_azure_path("/"));
        assert!(!is_azure_path("/2021-01-01/opensearch/reservedInstances"));
    }

    #[test]
    fn service_names() {
        assert_eq!(azure_service("VirtualMachines"), "vm");
        assert_eq!(azure_service("SqlDatabases"), "sql-database");
        assert_eq!(azure_service("RedisCache"), "redis-cache");
        assert_eq!(azure_service("CosmosDb"), "cosmos-db");
    }
}
