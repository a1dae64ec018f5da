//! MemoryDB reserved nodes (awsJson1_1, `X-Amz-Target: AmazonMemoryDB.<Operation>`).
//!
//! The client-chosen `ReservationId` is unique per account and region; reusing it answers HTTP
//! 400 with `__type` `ReservedNodeAlreadyExistsFault`, as the MemoryDB API model declares.

use std::collections::BTreeMap;

use axum::response::Response;
use http::StatusCode;
use serde_json::{json, Value};

use super::aws::Call;
use super::ledger::Commitment;
use super::protocol::{duration_param, json_response, paginate, ApiError, AwsService, JsonInput};

/// Dispatches one MemoryDB call.
pub fn handle(call: &Call<'_>) -> Result<Response, ApiError> {
    let input = JsonInput::parse(call.body, invalid)?;
    let body = match call.operation {
        "DescribeReservedNodesOfferings" => describe_offerings(call, &input)?,
        "PurchaseReservedNodesOffering" => purchase(call, &input)?,
        "DescribeReservedNodes" => describe(call, &input)?,
        other => {
            return Err(ApiError::bad_request(
                "UnknownOperationException",
                format!("Unknown operation {other}"),
            ));
        }
    };
    Ok(json_response(
        StatusCode::OK,
        "application/x-amz-json-1.1",
        &body,
        call.request_id,
    ))
}

fn invalid(message: String) -> ApiError {
    ApiError::bad_request("InvalidParameterValueException", message)
}

fn recurring(hourly: f64) -> Value {
    if hourly > 0.0 {
        json!([{ "RecurringChargeAmount": hourly, "RecurringChargeFrequency": "Hourly" }])
    } else {
        json!([])
    }
}

fn page_size(input: &JsonInput) -> Result<usize, ApiError> {
    let n = input.int("MaxResults")?.unwrap_or(100);
    if !(1..=100).contains(&n) {
        return Err(input.invalid(format!("MaxResults must be between 1 and 100, got {n}")));
    }
    Ok(n as usize)
}

fn duration(input: &JsonInput) -> Result<Option<i64>, ApiError> {
    match input.string("Duration")? {
        None => Ok(None),
        Some(d) => duration_param(d)
            .map(Some)
            .ok_or_else(|| input.invalid(format!("Invalid duration: {d}"))),
    }
}

fn offering_not_found(id: &str) -> ApiError {
    ApiError::bad_request(
        "ReservedNodesOfferingNotFoundFault",
        format!("Reserved nodes offering {id} not found"),
    )
}

fn describe_offerings(call: &Call<'_>, input: &JsonInput) -> Result<Value, ApiError> {
    let id = input.string("ReservedNodesOfferingId")?;
    let node_type = input.string("NodeType")?;
    let offering_type = input.string("OfferingType")?;
    let duration = duration(input)?;
    let page_size = page_size(input)?;
    let offers: Vec<_> = call
        .shared
        .catalog
        .offers(AwsService::MemoryDb, call.region)
        .into_iter()
        .filter(|offer| {
            let o = offer.offering;
            id.is_none_or(|id| id == offer.id)
                && node_type.is_none_or(|t| t == o.resource_type)
                && offering_type.is_none_or(|t| t == o.payment_option.as_str())
                && duration.is_none_or(|d| d == o.duration_seconds)
        })
        .collect();
    if let Some(id) = id {
        if offers.is_empty() {
            return Err(offering_not_found(id));
        }
    }
    let (page, next) = paginate(
        offers,
        input.string("NextToken")?,
        call.page_size(page_size),
    )
    .map_err(|_| input.invalid("Invalid NextToken"))?;
    let items: Vec<Value> = page
        .iter()
        .map(|offer| {
            let o = offer.offering;
            json!({
                "ReservedNodesOfferingId": offer.id,
                "NodeType": o.resource_type,
                "Duration": o.duration_seconds,
                "FixedPrice": o.fixed_price,
                "OfferingType": o.payment_option.as_str(),
                "RecurringCharges": recurring(o.recurring_hourly),
            })
        })
        .collect();
    Ok(json!({ "ReservedNodesOfferings": items, "NextToken": next }))
}

fn reserved_node(call: &Call<'_>, r: &Commitment) -> Value {
    json!({
        "ReservationId": r.id,
        "ReservedNodesOfferingId": r.offering_id,
        "NodeType": r.resource_type,
        "StartTime": r.created_at.timestamp_millis() as f64 / 1000.0,
        "Duration": r.duration_seconds,
        "FixedPrice": r.unit_fixed,
        "NodeCount": r.count,
        "OfferingType": r.payment,
        "State": r.state_at(call.now),
        "RecurringCharges": recurring(r.unit_recurring),
        "ARN": format!("arn:aws:memorydb:{}:{}:reservednode/{}", r.region, r.account, r.id),
    })
}

fn purchase(call: &Call<'_>, input: &JsonInput) -> Result<Value, ApiError> {
    let offering_id = input
        .string("ReservedNodesOfferingId")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| input.invalid("ReservedNodesOfferingId is required"))?;
    let count = input.int("NodeCount")?.unwrap_or(1);
    let count = u32::try_from(count)
        .ok()
        .filter(|c| *c >= 1)
        .ok_or_else(|| input.invalid("NodeCount must be at least 1"))?;
    let mut tags = BTreeMap::new();
    if let Some(list) = input.value("Tags") {
        for tag in list
            .as_array()
            .ok_or_else(|| input.invalid("Tags must be a list"))?
        {
            let key = tag
                .get("Key")
                .and_then(Value::as_str)
                .filter(|k| !k.is_empty());
            let key = key.ok_or_else(|| input.invalid("Tag keys must not be empty"))?;
            let value = tag.get("Value").and_then(Value::as_str).unwrap_or_default();
            tags.insert(key.to_string(), value.to_string());
        }
    }
    let offer = call
        .shared
        .catalog
        .offer(AwsService::MemoryDb, call.region, offering_id)
        .ok_or_else(|| offering_not_found(offering_id))?;

    // Check and insert under one lock: concurrent purchases of one ID create one reservation.
    let mut store = call.shared.store();
    let id = match input.string("ReservationId")?.filter(|id| !id.is_empty()) {
        Some(id) => id.to_string(),
        None => store.uuid(),
    };
    if store
        .scoped("memorydb", call.account(), call.region)
        .any(|c| c.id == id)
    {
        return Err(ApiError::bad_request(
            "ReservedNodeAlreadyExistsFault",
            format!("You already have a reservation with the given identifier {id}"),
        ));
    }
    let node = call.new_reservation(
        AwsService::MemoryDb,
        &offer,
        id.clone(),
        count,
        Some(id.clone()),
        tags,
    );
    store.commitments.push(node.clone());
    drop(store);
    tracing::info!(reservation.id = %id, offering.id = %offering_id, count, account = %call.account(), region = %call.region, "MemoryDB reservation purchased");
    Ok(json!({ "ReservedNode": reserved_node(call, &node) }))
}

fn describe(call: &Call<'_>, input: &JsonInput) -> Result<Value, ApiError> {
    let id = input.string("ReservationId")?.filter(|id| !id.is_empty());
    let offering_id = input.string("ReservedNodesOfferingId")?;
    let node_type = input.string("NodeType")?;
    let offering_type = input.string("OfferingType")?;
    let duration = duration(input)?;
    let page_size = page_size(input)?;
    let mut found: Vec<Commitment> = call
        .shared
        .store()
        .scoped("memorydb", call.account(), call.region)
        .filter(|r| {
            id.is_none_or(|id| r.id == id)
                && offering_id.is_none_or(|o| o == r.offering_id)
                && node_type.is_none_or(|t| t == r.resource_type)
                && offering_type.is_none_or(|t| t == r.payment)
                && duration.is_none_or(|d| d == r.duration_seconds)
        })
        .cloned()
        .collect();
    if call.faults.lookup_empty {
        found.clear();
    }
    // Eventual consistency (realism): a fresh reservation is not listed yet.
    found.retain(|r| call.visible(r));
    if let Some(id) = id {
        if found.is_empty() {
            return Err(ApiError::bad_request(
                "ReservedNodeNotFoundFault",
                format!("Reserved node {id} not found"),
            ));
        }
    }
    let (page, next) = paginate(found, input.string("NextToken")?, call.page_size(page_size))
        .map_err(|_| input.invalid("Invalid NextToken"))?;
    let items: Vec<Value> = page.iter().map(|r| reserved_node(call, r)).collect();
    Ok(json!({ "ReservedNodes": items, "NextToken": next }))
}
