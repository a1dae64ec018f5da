//! Reservation orders: the purchase PUT (one order per minted ID, however many concurrent PUTs),
//! and getting and listing orders as the tenant sees them.

use std::collections::BTreeMap;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};
use serde_json::{json, Value};

use super::request::Purchase;
use super::wire::{bad_request, order_json, order_url};
use super::{azure_service, Ctx, API_VERSION};
use crate::aws::to_delta;
use crate::ledger::{AzureOrder, Commitment, Detail, Provider};
use crate::protocol::{decode_token, encode_token, ApiError};

const SESSION_TIMED_OUT: &str =
    "Session timed out - Call CalculatePrice again and provide the new Reservation Order ID for purchase";

pub(super) fn purchase(
    ctx: &Ctx<'_>,
    tenant: &str,
    id: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let realism = &ctx.realism;
    let request = Purchase::parse(body, realism.azure_strict_names)?;
    let id = id.to_ascii_lowercase();
    // One lock for "already bought?", "minted and fresh?" and the insert: N concurrent PUTs of
    // one ID make one order.
    let mut store = ctx.shared.store();
    if store
        .with_id(&id)
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
    store.insert(order.clone());
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

/// The order with this ID visible to `tenant`.
/// Realism's eventual consistency applies: a fresh order is not found yet (ARM documents that a
/// resource being created may answer 404 until its creation completes).
pub(super) fn find_order(ctx: &Ctx<'_>, tenant: &str, id: &str) -> Result<Commitment, ApiError> {
    let id = id.to_ascii_lowercase();
    let found = ctx
        .shared
        .store()
        .with_id(&id)
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

pub(super) fn get_order(
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

pub(super) fn list_orders(
    ctx: &Ctx<'_>,
    tenant: &str,
    lookup_empty: bool,
) -> Result<Response, ApiError> {
    let orders: Vec<Commitment> = if lookup_empty {
        Vec::new()
    } else {
        let all: Vec<Commitment> = ctx.shared.store().of_tenant(tenant).cloned().collect();
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
