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
use super::catalog::{Offer, PaymentOption};
use super::ledger::{Commitment, Detail, Store};
use super::protocol::{
    json_recurring_charges, json_response, ApiError, AwsService, JsonInput, Params,
};
use super::reserved::{self, Key, Lookup, Purchase, ReservedService, Wire};

/// OpenSearch, as a [`ReservedService`] with its own [`Wire`].
pub struct OpenSearch;

impl Wire for OpenSearch {
    /// The URL query (a purchase's JSON body is read by the purchase).
    type Input<'a> = &'a Params;

    fn input<'a>(call: &'a Call<'_>) -> Result<&'a Params, ApiError> {
        Ok(call.params)
    }

    fn page_token<'i>(input: &'i &Params) -> Result<Option<&'i str>, ApiError> {
        Ok(input.get("nextToken"))
    }

    fn bad_page_token() -> ApiError {
        validation("Invalid nextToken".into())
    }

    fn unknown_operation(operation: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            format!("Unknown operation {operation}"),
        )
    }
}

impl ReservedService for OpenSearch {
    const SERVICE: AwsService = AwsService::OpenSearch;
    const DESCRIBE_OFFERINGS: &'static str = "DescribeReservedInstanceOfferings";
    const PURCHASE: &'static str = "PurchaseReservedInstanceOffering";
    const DESCRIBE: &'static str = "DescribeReservedInstances";
    const PURCHASED: &'static str = "OpenSearch reservation purchased";
    type Wire = Self;

    fn offerings_lookup(p: &&Params) -> Result<Lookup, ApiError> {
        Ok(Lookup {
            id: p
                .get("offeringId")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            page_size: page_size(p)?,
            ..Lookup::default()
        })
    }

    fn offering_not_found(id: &str) -> ApiError {
        not_found(format!("Reserved instance offering {id} not found"))
    }

    fn offerings_page(call: &Call<'_>, page: &[Offer<'_>], next: Option<String>) -> Response {
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
                    "RecurringCharges": json_recurring_charges(o.recurring_hourly),
                })
            })
            .collect();
        respond(
            call,
            json!({ "ReservedInstanceOfferings": items, "NextToken": next }),
        )
    }

    fn purchase_request<'c>(call: &'c Call<'_>, _: &&Params) -> Result<Purchase<'c>, ApiError> {
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
        let count = reserved::count(input.int("InstanceCount")?, || {
            validation("InstanceCount must be at least 1".into())
        })?;
        Ok(Purchase {
            offer: reserved::offer::<Self>(call, offering_id)?,
            count,
            // Realism: the model does not say names are unique; in that mode a second
            // reservation under a name in use is sold like the first.
            key: Key::Name {
                name: name.to_string(),
                unique: !call.realism.opensearch_duplicate_names,
                taken: |name| {
                    ApiError::new(
                        StatusCode::CONFLICT,
                        "ResourceAlreadyExistsException",
                        format!("A reservation with the name {name} already exists"),
                    )
                },
            },
            tags: Default::default(),
        })
    }

    fn detail(store: &mut Store) -> Detail {
        Detail::OpenSearch {
            billing_subscription_id: store.number(1_000_000_000) as i64,
        }
    }

    fn purchased(call: &Call<'_>, reservation: &Commitment) -> Response {
        respond(
            call,
            json!({ "ReservedInstanceId": reservation.id, "ReservationName": reservation.handle }),
        )
    }

    fn reservations_lookup(p: &&Params) -> Result<Lookup, ApiError> {
        Ok(Lookup {
            id: p
                .get("reservationId")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            page_size: page_size(p)?,
            ..Lookup::default()
        })
    }

    fn reservation_not_found(id: &str) -> ApiError {
        not_found(format!("Reserved instance {id} not found"))
    }

    fn reservations_page(call: &Call<'_>, page: &[Commitment], next: Option<String>) -> Response {
        let items: Vec<Value> = page
            .iter()
            .map(|r| {
                let billing = match r.detail {
                    Detail::OpenSearch {
                        billing_subscription_id,
                    } => billing_subscription_id,
                    _ => 0,
                };
                let payment =
                    PaymentOption::parse(&r.payment).map_or("", PaymentOption::as_opensearch);
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
                    "RecurringCharges": json_recurring_charges(r.unit_recurring),
                })
            })
            .collect();
        respond(
            call,
            json!({ "ReservedInstances": items, "NextToken": next }),
        )
    }
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

fn respond(call: &Call<'_>, body: Value) -> Response {
    json_response(StatusCode::OK, "application/json", &body, call.request_id)
}

fn page_size(p: &Params) -> Result<usize, ApiError> {
    let n = p.int("maxResults", validation)?.unwrap_or(100);
    if !(1..=100).contains(&n) {
        return Err(validation(format!(
            "1 validation error detected: Value '{n}' at 'maxResults' failed to satisfy constraint: Member must have value less than or equal to 100"
        )));
    }
    Ok(n as usize)
}
