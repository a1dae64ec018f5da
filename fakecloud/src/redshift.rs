//! Redshift reserved nodes (awsQuery).
//!
//! The hard case of the project: a purchase takes no client ID, and reserved nodes cannot be
//! tagged — `CreateTags` and `DescribeTags` refuse reserved-node ARNs, because `reservednode` is
//! not among Redshift's taggable resource types. fakecloud refuses too, rather than offering a
//! tag-based dedupe that would pass here and double-buy in the cloud.

use axum::response::Response;
use http::StatusCode;

use super::aws::Call;
use super::catalog::Offer;
use super::ledger::Commitment;
use super::protocol::{
    fmt_price, invalid_parameter, iso_time, max_records, missing_parameter,
    query_recurring_charges, query_success, ApiError, AwsService, Params,
};
use super::reserved::{self, Key, Lookup, Purchase, Query, ReservedService, Wire as _};
use super::xml::XmlWriter;

/// Redshift, as a [`ReservedService`] whose purchases carry no [`Key`].
pub struct Redshift;

impl ReservedService for Redshift {
    const SERVICE: AwsService = AwsService::Redshift;
    const DESCRIBE_OFFERINGS: &'static str = "DescribeReservedNodeOfferings";
    const PURCHASE: &'static str = "PurchaseReservedNodeOffering";
    const DESCRIBE: &'static str = "DescribeReservedNodes";
    const PURCHASED: &'static str = "Redshift reserved node purchased";
    type Wire = Query;

    fn other_operation(call: &Call<'_>) -> Result<Response, ApiError> {
        match call.operation {
            "CreateTags" => create_tags(call),
            "DescribeTags" => describe_tags(call),
            other => Err(Query::unknown_operation(other)),
        }
    }

    fn offerings_lookup(p: &&Params) -> Result<Lookup, ApiError> {
        Ok(Lookup {
            page_size: max_records(p)?,
            id: p.get("ReservedNodeOfferingId").map(str::to_string),
            ..Lookup::default()
        })
    }

    fn offering_not_found(id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "ReservedNodeOfferingNotFound",
            format!("Specified offering {id} does not exist."),
        )
    }

    fn offerings_page(call: &Call<'_>, page: &[Offer<'_>], next: Option<String>) -> Response {
        reserved::query_page(
            call,
            Self::SERVICE,
            "ReservedNodeOfferings",
            next,
            page,
            |w, offer| {
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
            },
        )
    }

    fn purchase_request<'c>(call: &'c Call<'_>, p: &&Params) -> Result<Purchase<'c>, ApiError> {
        let offering_id = p.require("ReservedNodeOfferingId", missing_parameter)?;
        let count = reserved::count(p.int("NodeCount", invalid_parameter)?, || {
            invalid_parameter("NodeCount must be at least 1")
        })?;
        Ok(Purchase {
            offer: reserved::offer::<Self>(call, offering_id)?,
            count,
            key: Key::None,
            tags: Default::default(),
        })
    }

    fn purchased(call: &Call<'_>, reservation: &Commitment) -> Response {
        query_success(Self::SERVICE, call.operation, call.request_id, |w| {
            reserved_node(w, call, reservation)
        })
    }

    fn reservations_lookup(p: &&Params) -> Result<Lookup, ApiError> {
        Ok(Lookup {
            page_size: max_records(p)?,
            id: p
                .get("ReservedNodeId")
                .filter(|id| !id.is_empty())
                .map(str::to_string),
            ..Lookup::default()
        })
    }

    fn reservation_not_found(id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "ReservedNodeNotFound",
            format!("The specified reserved compute node {id} not found."),
        )
    }

    fn reservations_page(call: &Call<'_>, page: &[Commitment], next: Option<String>) -> Response {
        reserved::query_page(call, Self::SERVICE, "ReservedNodes", next, page, |w, r| {
            reserved_node(w, call, r)
        })
    }
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
    invalid_parameter("Tagging is not supported for resource type reservednode.")
}

fn create_tags(call: &Call<'_>) -> Result<Response, ApiError> {
    let p = call.params;
    let arn = p.require("ResourceName", missing_parameter)?;
    match arn_resource_type(arn) {
        None => Err(invalid_parameter(format!("Invalid ARN {arn}"))),
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
