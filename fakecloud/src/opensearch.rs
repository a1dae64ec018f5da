//! OpenSearch reserved instances (restJson1 under `/2021-01-01/opensearch/`).
//!
//! The `ReservationName` (5–64 characters; the SDK does not check the length, so the service
//! does) is unique per account and region: reusing it answers 409
//! `ResourceAlreadyExistsException`. Other OpenSearch errors are 409 too, so clients must match
//! the type, not the status.

use axum::response::Response;
use http::StatusCode;
use serde_json::{json, Value};

use super::aws::Call;
use super::catalog::PaymentOption;
use super::ledger::{Commitment, Detail};
use super::protocol::{json_response, paginate, ApiError, AwsService, JsonInput};

/// Dispatches one OpenSearch call.
pub fn handle(call: &Call<'_>) -> Result<Response, ApiError> {
    let body = match call.operation {
        "DescribeReservedInstanceOfferings" => describe_offerings(call)?,
        "PurchaseReservedInstanceOffering" => purchase(call)?,
        "DescribeReservedInstances" => describe(call)?,
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "UnknownOperationException",
                format!("Unknown operation {other}"),
            ));
        }
    };
    Ok(json_response(
        StatusCode::OK,
        "application/json",
        &body,
        call.request_id,
    ))
}

fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn validation(message: String) -> ApiError {
    ApiError::bad_request("ValidationException", message)
}

fn not_found(message: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "ResourceNotFoundException", message)
}

fn page_size(call: &Call<'_>) -> Result<usize, ApiError> {
    let n = call.params.int("maxResults", validation)?.unwrap_or(100);
    if !(1..=100).contains(&n) {
        return Err(validation(format!(
            "1 validation error detected: Value '{n}' at 'maxResults' failed to satisfy constraint: Member must have value less than or equal to 100"
        )));
    }
    Ok(n as usize)
}

fn recurring(hourly: f64) -> Value {
    if hourly > 0.0 {
        json!([{ "RecurringChargeAmount": hourly, "RecurringChargeFrequency": "Hourly" }])
    } else {
        json!([])
    }
}

fn describe_offerings(call: &Call<'_>) -> Result<Value, ApiError> {
    let id = call.params.get("offeringId").filter(|s| !s.is_empty());
    let page_size = page_size(call)?;
    let offers: Vec<_> = call
        .shared
        .catalog
        .offers(AwsService::OpenSearch, call.region)
        .into_iter()
        .filter(|o| id.is_none_or(|id| id == o.id))
        .collect();
    if let Some(id) = id {
        if offers.is_empty() {
            return Err(not_found(format!(
                "Reserved instance offering {id} not found"
            )));
        }
    }
    let (page, next) = paginate(
        offers,
        call.params.get("nextToken"),
        call.page_size(page_size),
    )
    .map_err(|_| validation("Invalid nextToken".into()))?;
    let items: Vec<Value> = page
        .iter()
        .map(|offer| {
            let o = offer.offering;
            json!({
                "ReservedInstanceOfferingId": offer.id,
                "InstanceType": o.resource_type,
                "Duration": o.duration_seconds,
                "FixedPrice": o.fixed_price,
                "UsagePrice": o.usage_price,
                "CurrencyCode": o.currency,
                "PaymentOption": o.payment_option.as_opensearch(),
                "RecurringCharges": recurring(o.recurring_hourly),
            })
        })
        .collect();
    Ok(json!({ "ReservedInstanceOfferings": items, "NextToken": next }))
}

fn purchase(call: &Call<'_>) -> Result<Value, ApiError> {
    let input = JsonInput::parse(call.body, validation)?;
    let offering_id = input
        .string("ReservedInstanceOfferingId")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| validation("ReservedInstanceOfferingId is required".into()))?;
    // The model's `GUID` shape: 36 characters, 8-4-4-4-12 hex digits.
    if !is_guid(offering_id) {
        return Err(validation(format!(
            "1 validation error detected: Value '{offering_id}' at 'reservedInstanceOfferingId' failed to satisfy constraint: Member must satisfy regular expression pattern: \\p{{XDigit}}{{8}}-\\p{{XDigit}}{{4}}-\\p{{XDigit}}{{4}}-\\p{{XDigit}}{{4}}-\\p{{XDigit}}{{12}}"
        )));
    }
    let name = input.string("ReservationName")?.unwrap_or_default();
    let length = name.chars().count();
    if !(5..=64).contains(&length) {
        return Err(validation(format!(
            "1 validation error detected: Value '{name}' at 'reservationName' failed to satisfy constraint: Member must have length between 5 and 64"
        )));
    }
    let count = input.int("InstanceCount")?.unwrap_or(1);
    let count = u32::try_from(count)
        .ok()
        .filter(|c| *c >= 1)
        .ok_or_else(|| validation("InstanceCount must be at least 1".into()))?;
    let offer = call
        .shared
        .catalog
        .offer(AwsService::OpenSearch, call.region, offering_id)
        .ok_or_else(|| {
            not_found(format!(
                "Reserved instance offering {offering_id} not found"
            ))
        })?;

    // Check and insert under one lock: concurrent purchases with one name create one reservation.
    // Realism: the model does not say names are unique; in that mode a second reservation
    // under a name in use is sold like the first.
    let names_unique = !call.realism.opensearch_duplicate_names;
    let mut store = call.shared.store();
    if names_unique
        && store
            .scoped("opensearch", call.account(), call.region)
            .any(|c| c.handle.as_deref() == Some(name))
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "ResourceAlreadyExistsException",
            format!("A reservation with the name {name} already exists"),
        ));
    }
    let id = store.uuid();
    let billing_subscription_id = store.number(1_000_000_000) as i64;
    let mut reservation = call.new_reservation(
        AwsService::OpenSearch,
        &offer,
        id.clone(),
        count,
        Some(name.to_string()),
        Default::default(),
    );
    reservation.detail = Detail::OpenSearch {
        billing_subscription_id,
    };
    store.commitments.push(reservation);
    drop(store);
    tracing::info!(reservation.id = %id, offering.id = %offering_id, count, account = %call.account(), region = %call.region, "OpenSearch reservation purchased");
    Ok(json!({ "ReservedInstanceId": id, "ReservationName": name }))
}

fn describe(call: &Call<'_>) -> Result<Value, ApiError> {
    let id = call.params.get("reservationId").filter(|s| !s.is_empty());
    let page_size = page_size(call)?;
    let mut found: Vec<Commitment> = call
        .shared
        .store()
        .scoped("opensearch", call.account(), call.region)
        .filter(|r| id.is_none_or(|id| r.id == id))
        .cloned()
        .collect();
    if call.faults.lookup_empty {
        found.clear();
    }
    // Eventual consistency (realism): a fresh reservation is not listed yet.
    found.retain(|r| call.visible(r));
    if let Some(id) = id {
        if found.is_empty() {
            return Err(not_found(format!("Reserved instance {id} not found")));
        }
    }
    let (page, next) = paginate(
        found,
        call.params.get("nextToken"),
        call.page_size(page_size),
    )
    .map_err(|_| validation("Invalid nextToken".into()))?;
    let items: Vec<Value> = page
        .iter()
        .map(|r| {
            let billing = match r.detail {
                Detail::OpenSearch {
                    billing_subscription_id,
                } => billing_subscription_id,
                _ => 0,
            };
            let payment = PaymentOption::parse(&r.payment).map_or("", PaymentOption::as_opensearch);
            json!({
                "ReservationName": r.handle,
                "ReservedInstanceId": r.id,
                "BillingSubscriptionId": billing,
                "ReservedInstanceOfferingId": r.offering_id,
                "InstanceType": r.resource_type,
                "StartTime": r.created_at.timestamp_millis() as f64 / 1000.0,
                "Duration": r.duration_seconds,
                "FixedPrice": r.unit_fixed,
                "UsagePrice": r.unit_usage,
                "CurrencyCode": r.currency,
                "InstanceCount": r.count,
                "State": r.state_at(call.now),
                "PaymentOption": payment,
                "RecurringCharges": recurring(r.unit_recurring),
            })
        })
        .collect();
    Ok(json!({ "ReservedInstances": items, "NextToken": next }))
}
