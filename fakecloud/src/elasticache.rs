//! ElastiCache reserved cache nodes (awsQuery).
//!
//! The client-chosen `ReservedCacheNodeId` is unique per account and region; reusing it answers
//! HTTP 404 `ReservedCacheNodeAlreadyExists`, as the ElastiCache API model declares.

use std::collections::BTreeMap;

use axum::response::Response;
use http::StatusCode;

use super::aws::Call;
use super::catalog::Offer;
use super::ledger::Commitment;
use super::protocol::{
    duration_param, fmt_price, iso_time, max_records, paginate, query_recurring_charges,
    query_success, ApiError, AwsService, Params,
};
use super::xml::XmlWriter;

/// Dispatches one ElastiCache call.
pub fn handle(call: &Call<'_>) -> Result<Response, ApiError> {
    match call.operation {
        "DescribeReservedCacheNodesOfferings" => describe_offerings(call),
        "PurchaseReservedCacheNodesOffering" => purchase(call),
        "DescribeReservedCacheNodes" => describe(call),
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

/// The filters shared by both Describe calls.
struct Criteria {
    node_type: Option<String>,
    duration: Option<i64>,
    product: Option<String>,
    offering_type: Option<String>,
}

impl Criteria {
    fn parse(p: &Params) -> Result<Self, ApiError> {
        let duration = match p.get("Duration") {
            None => None,
            Some(d) => {
                Some(duration_param(d).ok_or_else(|| invalid(format!("Invalid duration: {d}")))?)
            }
        };
        Ok(Self {
            node_type: p.get("CacheNodeType").map(str::to_string),
            duration,
            product: p.get("ProductDescription").map(str::to_string),
            offering_type: p.get("OfferingType").map(str::to_string),
        })
    }

    fn matches(
        &self,
        node_type: &str,
        duration: i64,
        product: Option<&str>,
        offering_type: &str,
    ) -> bool {
        self.node_type.as_deref().is_none_or(|t| t == node_type)
            && self.duration.is_none_or(|d| d == duration)
            && self
                .product
                .as_deref()
                .is_none_or(|p| product.is_some_and(|x| x.eq_ignore_ascii_case(p)))
            && self
                .offering_type
                .as_deref()
                .is_none_or(|t| t == offering_type)
    }
}

fn offering_not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "ReservedCacheNodesOfferingNotFound",
        format!("Reserved cache nodes offering {id} not found."),
    )
}

fn describe_offerings(call: &Call<'_>) -> Result<Response, ApiError> {
    let p = call.params;
    let criteria = Criteria::parse(p)?;
    let page_size = max_records(p)?;
    let id = p.get("ReservedCacheNodesOfferingId");
    let offers: Vec<Offer<'_>> = call
        .shared
        .catalog
        .offers(AwsService::ElastiCache, call.region)
        .into_iter()
        .filter(|offer| {
            let o = offer.offering;
            id.is_none_or(|id| id == offer.id)
                && criteria.matches(
                    &o.resource_type,
                    o.duration_seconds,
                    o.product_description.as_deref(),
                    o.payment_option.as_str(),
                )
        })
        .collect();
    if let Some(id) = id {
        if offers.is_empty() {
            return Err(offering_not_found(id));
        }
    }
    let (page, marker) = paginate(offers, p.get("Marker"), call.page_size(page_size))
        .map_err(|_| invalid("Invalid marker"))?;
    Ok(query_success(
        AwsService::ElastiCache,
        call.operation,
        call.request_id,
        |w| {
            w.opt_leaf("Marker", marker.as_deref());
            w.elem("ReservedCacheNodesOfferings", |w| {
                for offer in &page {
                    let o = offer.offering;
                    w.elem("ReservedCacheNodesOffering", |w| {
                        w.leaf("ReservedCacheNodesOfferingId", &offer.id);
                        w.leaf("CacheNodeType", &o.resource_type);
                        w.leaf("Duration", o.duration_seconds);
                        w.leaf("FixedPrice", fmt_price(o.fixed_price));
                        w.leaf("UsagePrice", fmt_price(o.usage_price));
                        w.opt_leaf("ProductDescription", o.product_description.as_deref());
                        w.leaf("OfferingType", o.payment_option.as_str());
                        query_recurring_charges(w, o.recurring_hourly);
                    });
                }
            });
        },
    ))
}

fn tags(p: &Params) -> Result<BTreeMap<String, String>, ApiError> {
    let mut tags = BTreeMap::new();
    for tag in p.structs("Tags.Tag") {
        let key = tag
            .get("Key")
            .filter(|k| !k.is_empty())
            .ok_or_else(|| invalid("Tag keys must not be empty"))?;
        tags.insert(
            key.to_string(),
            tag.get("Value").unwrap_or_default().to_string(),
        );
    }
    Ok(tags)
}

fn purchase(call: &Call<'_>) -> Result<Response, ApiError> {
    let p = call.params;
    let offering_id = p.require("ReservedCacheNodesOfferingId", missing)?;
    let count = p.int("CacheNodeCount", invalid)?.unwrap_or(1);
    let count = u32::try_from(count)
        .ok()
        .filter(|c| *c >= 1)
        .ok_or_else(|| invalid("CacheNodeCount must be at least 1"))?;
    let tags = tags(p)?;
    let offer = call
        .shared
        .catalog
        .offer(AwsService::ElastiCache, call.region, offering_id)
        .ok_or_else(|| offering_not_found(offering_id))?;

    // Check and insert under one lock: concurrent purchases of one ID create one reservation.
    let mut store = call.shared.store();
    let id = match p.get("ReservedCacheNodeId").filter(|id| !id.is_empty()) {
        Some(id) => id.to_string(),
        None => format!(
            "ri-{}-{:06}",
            call.now.format("%Y-%m-%d-%H-%M-%S"),
            store.number(1_000_000)
        ),
    };
    if store
        .scoped("elasticache", call.account(), call.region)
        .any(|c| c.id.eq_ignore_ascii_case(&id))
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "ReservedCacheNodeAlreadyExists",
            format!("You already have a reservation with the given identifier {id}."),
        ));
    }
    let reservation = call.new_reservation(
        AwsService::ElastiCache,
        &offer,
        id.clone(),
        count,
        Some(id.clone()),
        tags,
    );
    store.commitments.push(reservation.clone());
    drop(store);
    tracing::info!(reservation.id = %id, offering.id = %offering_id, count, account = %call.account(), region = %call.region, "ElastiCache reservation purchased");
    Ok(query_success(
        AwsService::ElastiCache,
        call.operation,
        call.request_id,
        |w| reserved_node(w, call, &reservation),
    ))
}

fn reserved_node(w: &mut XmlWriter, call: &Call<'_>, r: &Commitment) {
    w.elem("ReservedCacheNode", |w| {
        w.leaf("ReservedCacheNodeId", &r.id);
        w.leaf("ReservedCacheNodesOfferingId", &r.offering_id);
        w.leaf("CacheNodeType", &r.resource_type);
        w.leaf("StartTime", iso_time(r.created_at));
        w.leaf("Duration", r.duration_seconds);
        w.leaf("FixedPrice", fmt_price(r.unit_fixed));
        w.leaf("UsagePrice", fmt_price(r.unit_usage));
        w.leaf("CacheNodeCount", r.count);
        w.opt_leaf("ProductDescription", r.product.as_deref());
        w.leaf("OfferingType", &r.payment);
        w.leaf("State", r.state_at(call.now));
        query_recurring_charges(w, r.unit_recurring);
        w.leaf(
            "ReservationARN",
            format!(
                "arn:aws:elasticache:{}:{}:reserved-instance:{}",
                r.region, r.account, r.id
            ),
        );
    });
}

fn describe(call: &Call<'_>) -> Result<Response, ApiError> {
    let p = call.params;
    let criteria = Criteria::parse(p)?;
    let page_size = max_records(p)?;
    let id = p.get("ReservedCacheNodeId").filter(|id| !id.is_empty());
    let offering_id = p.get("ReservedCacheNodesOfferingId");
    let mut found: Vec<Commitment> = call
        .shared
        .store()
        .scoped("elasticache", call.account(), call.region)
        .filter(|r| {
            id.is_none_or(|id| r.id.eq_ignore_ascii_case(id))
                && offering_id.is_none_or(|o| o == r.offering_id)
                && criteria.matches(
                    &r.resource_type,
                    r.duration_seconds,
                    r.product.as_deref(),
                    &r.payment,
                )
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
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "ReservedCacheNodeNotFound",
                format!("Reserved cache node {id} not found."),
            ));
        }
    }
    let (page, marker) = paginate(found, p.get("Marker"), call.page_size(page_size))
        .map_err(|_| invalid("Invalid marker"))?;
    Ok(query_success(
        AwsService::ElastiCache,
        call.operation,
        call.request_id,
        |w| {
            w.opt_leaf("Marker", marker.as_deref());
            w.elem("ReservedCacheNodes", |w| {
                for r in &page {
                    reserved_node(w, call, r);
                }
            });
        },
    ))
}
