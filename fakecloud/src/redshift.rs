//! Redshift reserved nodes (awsQuery).
//!
//! The hard case of the project: a purchase takes no client ID, and reserved nodes cannot be
//! tagged — `CreateTags` and `DescribeTags` refuse reserved-node ARNs, because `reservednode` is
//! not among Redshift's taggable resource types. fakecloud refuses too, rather than offering a
//! tag-based dedupe that would pass here and double-buy in the cloud.

use axum::response::Response;
use http::StatusCode;

use super::aws::Call;
use super::ledger::Commitment;
use super::protocol::{
    fmt_price, iso_time, max_records, paginate, query_recurring_charges, query_success, ApiError,
    AwsService,
};
use super::xml::XmlWriter;

/// Dispatches one Redshift call.
pub fn handle(call: &Call<'_>) -> Result<Response, ApiError> {
    match call.operation {
        "DescribeReservedNodeOfferings" => describe_offerings(call),
        "PurchaseReservedNodeOffering" => purchase(call),
        "DescribeReservedNodes" => describe(call),
        "CreateTags" => create_tags(call),
        "DescribeTags" => describe_tags(call),
        other => Err(ApiError::bad_request(
            "InvalidAction",
            format!("Could not find operation {other}"),
        )),
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("InvalidParameterValue", message)
}

fn missing(key: &str) -> ApiError {
    ApiError::bad_request(
        "MissingParameter",
        format!("The request must contain the parameter {key}"),
    )
}

fn offering_not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "ReservedNodeOfferingNotFound",
        format!("Specified offering {id} does not exist."),
    )
}

fn describe_offerings(call: &Call<'_>) -> Result<Response, ApiError> {
    let p = call.params;
    let page_size = max_records(p)?;
    let id = p.get("ReservedNodeOfferingId");
    let offers: Vec<_> = call
        .shared
        .catalog
        .offers(AwsService::Redshift, call.region)
        .into_iter()
        .filter(|o| id.is_none_or(|id| id == o.id))
        .collect();
    if let Some(id) = id {
        if offers.is_empty() {
            return Err(offering_not_found(id));
        }
    }
    let (page, marker) = paginate(offers, p.get("Marker"), call.page_size(page_size))
        .map_err(|_| invalid("Invalid marker"))?;
    Ok(query_success(
        AwsService::Redshift,
        call.operation,
        call.request_id,
        |w| {
            w.opt_leaf("Marker", marker.as_deref());
            w.elem("ReservedNodeOfferings", |w| {
                for offer in &page {
                    let o = offer.offering;
                    w.elem("ReservedNodeOffering", |w| {
                        w.leaf("ReservedNodeOfferingId", &offer.id);
                        w.leaf("NodeType", &o.resource_type);
                        w.leaf("Duration", o.duration_seconds);
                        w.leaf("FixedPrice", fmt_price(o.fixed_price));
                        w.leaf("UsagePrice", fmt_price(o.usage_price));
                        w.leaf("CurrencyCode", &o.currency);
                        w.leaf("OfferingType", o.payment_option.as_str());
                        query_recurring_charges(w, o.recurring_hourly);
                        w.leaf("ReservedNodeOfferingType", "Regular");
                    });
                }
            });
        },
    ))
}

fn purchase(call: &Call<'_>) -> Result<Response, ApiError> {
    let p = call.params;
    let offering_id = p.require("ReservedNodeOfferingId", missing)?;
    let count = p.int("NodeCount", invalid)?.unwrap_or(1);
    let count = u32::try_from(count)
        .ok()
        .filter(|c| *c >= 1)
        .ok_or_else(|| invalid("NodeCount must be at least 1"))?;
    let offer = call
        .shared
        .catalog
        .offer(AwsService::Redshift, call.region, offering_id)
        .ok_or_else(|| offering_not_found(offering_id))?;
    let mut store = call.shared.store();
    let id = store.uuid();
    let node = call.new_reservation(
        AwsService::Redshift,
        &offer,
        id.clone(),
        count,
        None,
        Default::default(),
    );
    store.commitments.push(node.clone());
    drop(store);
    tracing::info!(reserved_node.id = %id, offering.id = %offering_id, count, account = %call.account(), region = %call.region, "Redshift reserved node purchased");
    Ok(query_success(
        AwsService::Redshift,
        call.operation,
        call.request_id,
        |w| reserved_node(w, call, &node),
    ))
}

fn reserved_node(w: &mut XmlWriter, call: &Call<'_>, r: &Commitment) {
    w.elem("ReservedNode", |w| {
        w.leaf("ReservedNodeId", &r.id);
        w.leaf("ReservedNodeOfferingId", &r.offering_id);
        w.leaf("NodeType", &r.resource_type);
        w.leaf("StartTime", iso_time(r.created_at));
        w.leaf("Duration", r.duration_seconds);
        w.leaf("FixedPrice", fmt_price(r.unit_fixed));
        w.leaf("UsagePrice", fmt_price(r.unit_usage));
        w.leaf("CurrencyCode", &r.currency);
        w.leaf("NodeCount", r.count);
        w.leaf("State", r.state_at(call.now));
        w.leaf("OfferingType", &r.payment);
        query_recurring_charges(w, r.unit_recurring);
        w.leaf("ReservedNodeOfferingType", "Regular");
    });
}

fn describe(call: &Call<'_>) -> Result<Response, ApiError> {
    let p = call.params;
    let page_size = max_records(p)?;
    let id = p.get("ReservedNodeId").filter(|id| !id.is_empty());
    let mut found: Vec<Commitment> = call
        .shared
        .store()
        .scoped("redshift", call.account(), call.region)
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
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "ReservedNodeNotFound",
                format!("The specified reserved compute node {id} not found."),
            ));
        }
    }
    let (page, marker) = paginate(found, p.get("Marker"), call.page_size(page_size))
        .map_err(|_| invalid("Invalid marker"))?;
    Ok(query_success(
        AwsService::Redshift,
        call.operation,
        call.request_id,
        |w| {
            w.opt_leaf("Marker", marker.as_deref());
            w.elem("ReservedNodes", |w| {
                for r in &page {
                    reserved_node(w, call, r);
                }
            });
        },
    ))
}

/// `arn:aws:redshift:<region>:<account>:<type>:<name>` → `<type>`.
fn arn_resource_type(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(_), Some("redshift"), Some(_), Some(_), Some(rest)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    rest.split([':', '/']).next()
}

fn not_taggable() -> ApiError {
    invalid("Tagging is not supported for resource type reservednode.")
}

fn create_tags(call: &Call<'_>) -> Result<Response, ApiError> {
    let p = call.params;
    let arn = p.require("ResourceName", missing)?;
    match arn_resource_type(arn) {
        None => Err(invalid(format!("Invalid ARN {arn}"))),
        Some("reservednode") => Err(not_taggable()),
        // No other Redshift resource is emulated, so any other ARN names nothing.
        Some(_) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundFault",
            format!("The resource {arn} could not be found."),
        )),
    }
}

fn describe_tags(call: &Call<'_>) -> Result<Response, ApiError> {
    let p = call.params;
    if p.get("ResourceType")
        .is_some_and(|t| t.eq_ignore_ascii_case("reservednode"))
        || p.get("ResourceName").and_then(arn_resource_type) == Some("reservednode")
    {
        return Err(not_taggable());
    }
    Ok(query_success(
        AwsService::Redshift,
        call.operation,
        call.request_id,
        |w| {
            w.elem("TaggedResources", |_| {});
        },
    ))
}
