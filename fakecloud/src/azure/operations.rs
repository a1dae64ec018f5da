//! The long-running operation of a reservation-order purchase: the `Azure-AsyncOperation`
//! status document and the `Location` result, with `Retry-After` until the order is terminal.

use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use http::{HeaderValue, StatusCode};
use serde_json::json;

use super::orders::find_order;
use super::wire::{iso, order_json, order_url};
use super::Ctx;
use crate::ledger::Commitment;
use crate::protocol::ApiError;

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
pub(super) fn operation_status(
    ctx: &Ctx<'_>,
    tenant: &str,
    id: &str,
) -> Result<Response, ApiError> {
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
pub(super) fn operation_result(
    ctx: &Ctx<'_>,
    tenant: &str,
    id: &str,
) -> Result<Response, ApiError> {
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
