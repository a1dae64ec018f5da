//! MemoryDB reserved nodes (awsJson1_1, `X-Amz-Target: AmazonMemoryDB.<Operation>`).
//!
//! The client-chosen `ReservationId` is unique per account and region; reusing it answers HTTP
//! 400 with `__type` `ReservedNodeAlreadyExistsFault`, as the MemoryDB API model declares.

use std::collections::BTreeMap;

use axum::response::Response;
use http::StatusCode;
use serde_json::{json, Value};

use super::aws::Call;
use super::catalog::Offer;
use super::ledger::Commitment;
use super::protocol::{
    duration_param, json_recurring_charges, json_response, ApiError, AwsService, JsonInput,
};
use super::reserved::{self, Criteria, Key, Lookup, Purchase, ReservedService, Wire};

/// MemoryDB, as a [`ReservedService`] with its own [`Wire`].
pub struct MemoryDb;

impl Wire for MemoryDb {
    type Input<'a> = JsonInput;

    fn input(call: &Call<'_>) -> Result<JsonInput, ApiError> {
        JsonInput::parse(call.body, invalid)
    }

    fn page_token(input: &JsonInput) -> Result<Option<&str>, ApiError> {
        input.string("NextToken")
    }

    fn bad_page_token() -> ApiError {
        invalid("Invalid NextToken".into())
    }

    fn unknown_operation(operation: &str) -> ApiError {
        ApiError::bad_request(
            "UnknownOperationException",
            format!("Unknown operation {operation}"),
        )
    }
}

impl ReservedService for MemoryDb {
    const SERVICE: AwsService = AwsService::MemoryDb;
    const DESCRIBE_OFFERINGS: &'static str = "DescribeReservedNodesOfferings";
    const PURCHASE: &'static str = "PurchaseReservedNodesOffering";
    const DESCRIBE: &'static str = "DescribeReservedNodes";
    const PURCHASED: &'static str = "MemoryDB reservation purchased";
    type Wire = Self;

    fn offerings_lookup(input: &JsonInput) -> Result<Lookup, ApiError> {
        Ok(Lookup {
            id: input.string("ReservedNodesOfferingId")?.map(str::to_string),
            criteria: criteria(input)?,
            page_size: page_size(input)?,
        })
    }

    fn offering_not_found(id: &str) -> ApiError {
        ApiError::bad_request(
            "ReservedNodesOfferingNotFoundFault",
            format!("Reserved nodes offering {id} not found"),
        )
    }

    fn offerings_page(call: &Call<'_>, page: &[Offer<'_>], next: Option<String>) -> Response {
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
                    "RecurringCharges": json_recurring_charges(o.recurring_hourly),
                })
            })
            .collect();
        respond(
            call,
            json!({ "ReservedNodesOfferings": items, "NextToken": next }),
        )
    }

    fn purchase_request<'c>(
        call: &'c Call<'_>,
        input: &JsonInput,
    ) -> Result<Purchase<'c>, ApiError> {
        let offering_id = input
            .string("ReservedNodesOfferingId")?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| input.invalid("ReservedNodesOfferingId is required"))?;
        let count = reserved::count(input.int("NodeCount")?, || {
            input.invalid("NodeCount must be at least 1")
        })?;
        let tags = tags(input)?;
        let offer = reserved::offer::<Self>(call, offering_id)?;
        Ok(Purchase {
            offer,
            count,
            key: Key::Id {
                chosen: input
                    .string("ReservationId")?
                    .filter(|id| !id.is_empty())
                    .map(str::to_string),
                taken: |id| {
                    ApiError::bad_request(
                        "ReservedNodeAlreadyExistsFault",
                        format!("You already have a reservation with the given identifier {id}"),
                    )
                },
            },
            tags,
        })
    }

    fn purchased(call: &Call<'_>, reservation: &Commitment) -> Response {
        respond(
            call,
            json!({ "ReservedNode": reserved_node(call, reservation) }),
        )
    }

    fn reservations_lookup(input: &JsonInput) -> Result<Lookup, ApiError> {
        let id = input.string("ReservationId")?.filter(|id| !id.is_empty());
        let offering_id = input.string("ReservedNodesOfferingId")?;
        Ok(Lookup {
            id: id.map(str::to_string),
            criteria: Criteria {
                offering_id: offering_id.map(str::to_string),
                ..criteria(input)?
            },
            page_size: page_size(input)?,
        })
    }

    fn reservation_not_found(id: &str) -> ApiError {
        ApiError::bad_request(
            "ReservedNodeNotFoundFault",
            format!("Reserved node {id} not found"),
        )
    }

    fn reservations_page(call: &Call<'_>, page: &[Commitment], next: Option<String>) -> Response {
        let items: Vec<Value> = page.iter().map(|r| reserved_node(call, r)).collect();
        respond(call, json!({ "ReservedNodes": items, "NextToken": next }))
    }
}

fn invalid(message: String) -> ApiError {
    ApiError::bad_request("InvalidParameterValueException", message)
}

fn respond(call: &Call<'_>, body: Value) -> Response {
    json_response(
        StatusCode::OK,
        "application/x-amz-json-1.1",
        &body,
        call.request_id,
    )
}

/// The filters both Describe calls take: `NodeType`, `OfferingType`, `Duration`.
fn criteria(input: &JsonInput) -> Result<Criteria, ApiError> {
    let resource_type = input.string("NodeType")?.map(str::to_string);
    let offering_type = input.string("OfferingType")?.map(str::to_string);
    let duration = match input.string("Duration")? {
        None => None,
        Some(d) => {
            Some(duration_param(d).ok_or_else(|| input.invalid(format!("Invalid duration: {d}")))?)
        }
    };
    Ok(Criteria {
        resource_type,
        duration,
        offering_type,
        ..Criteria::default()
    })
}

fn page_size(input: &JsonInput) -> Result<usize, ApiError> {
    let n = input.int("MaxResults")?.unwrap_or(100);
    if !(1..=100).contains(&n) {
        return Err(input.invalid(format!("MaxResults must be between 1 and 100, got {n}")));
    }
    Ok(n as usize)
}

fn tags(input: &JsonInput) -> Result<BTreeMap<String, String>, ApiError> {
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
    Ok(tags)
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
        "RecurringCharges": json_recurring_charges(r.unit_recurring),
        "ARN": format!("arn:aws:memorydb:{}:{}:reservednode/{}", r.region, r.account, r.id),
    })
}
