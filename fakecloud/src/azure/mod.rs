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
//!
//! This module routes and dispatches one call (authentication, api-version, faults); the
//! operations live in [`token`] (the token endpoint and the bearer check), [`price`]
//! (`calculatePrice`), [`orders`] (reservation orders) and [`operations`] (their long-running
//! operations), the wire shapes in [`request`] and [`wire`], the routes in [`route`].

mod operations;
mod orders;
mod price;
mod request;
mod route;
mod token;
mod wire;

use axum::response::Response;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::request::Parts;
use http::{HeaderValue, StatusCode};

use super::aws::to_delta;
use super::faults::{CommitFailure, InjectedError};
use super::ledger::Commitment;
use super::protocol::{ApiError, Params};
use super::realism::Realism;
use super::server::{DropConnection, Shared};
use route::Route;
use wire::{arm_error, bad_request, injected, set_request_id};

pub use route::is_azure_path;

/// The Microsoft.Capacity API version fakecloud serves.
pub const API_VERSION: &str = "2022-11-01";

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
        _ => match token::authenticate(shared, parts, now, &base) {
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
        Route::Token(tenant) => token::token(&ctx, tenant, &body),
        Route::CalculatePrice => price::calculate_price(&ctx, &body),
        Route::PurchaseOrder(id) => orders::purchase(&ctx, &tenant, id, &body),
        Route::GetOrder(id) => orders::get_order(&ctx, &tenant, id, decision.lookup_empty),
        Route::ListOrders => orders::list_orders(&ctx, &tenant, decision.lookup_empty),
        Route::OperationStatus(id) => operations::operation_status(&ctx, &tenant, id),
        Route::OperationResult(id) => operations::operation_result(&ctx, &tenant, id),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names() {
        assert_eq!(azure_service("VirtualMachines"), "vm");
        assert_eq!(azure_service("SqlDatabases"), "sql-database");
        assert_eq!(azure_service("RedisCache"), "redis-cache");
        assert_eq!(azure_service("CosmosDb"), "cosmos-db");
    }
}
