//! ElastiCache reserved cache nodes (awsQuery).
//!
//! The client-chosen `ReservedCacheNodeId` is unique per account and region; reusing it answers
//! HTTP 404 `ReservedCacheNodeAlreadyExists`, as the ElastiCache API model declares.

use axum::response::Response;
use http::StatusCode;

use super::aws::Call;
use super::catalog::Offer;
use super::ledger::{Commitment, Store};
use super::protocol::{
    fmt_price, iso_time, query_recurring_charges, query_success, ApiError, AwsService, Params,
};
use super::reserved::{self, Lookup, Purchase, Query, QueryById, ReservedService};
use super::xml::XmlWriter;

/// The names under which ElastiCache takes the requests it shares with RDS.
const PARAMS: QueryById = QueryById {
    offering_id: "ReservedCacheNodesOfferingId",
    reservation_id: "ReservedCacheNodeId",
    count: "CacheNodeCount",
    resource_type: "CacheNodeType",
    multi_az: false,
};

/// ElastiCache, as a [`ReservedService`].
pub struct ElastiCache;

impl ReservedService for ElastiCache {
    const SERVICE: AwsService = AwsService::ElastiCache;
    const DESCRIBE_OFFERINGS: &'static str = "DescribeReservedCacheNodesOfferings";
    const PURCHASE: &'static str = "PurchaseReservedCacheNodesOffering";
    const DESCRIBE: &'static str = "DescribeReservedCacheNodes";
    const IDS_IGNORE_CASE: bool = true;
    const PURCHASED: &'static str = "ElastiCache reservation purchased";
    type Wire = Query;

    fn offerings_lookup(p: &&Params) -> Result<Lookup, ApiError> {
        PARAMS.offerings_lookup(p)
    }

    fn offering_not_found(id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "ReservedCacheNodesOfferingNotFound",
            format!("Reserved cache nodes offering {id} not found."),
        )
    }

    fn offerings_page(call: &Call<'_>, page: &[Offer<'_>], next: Option<String>) -> Response {
        reserved::query_page(
            call,
            Self::SERVICE,
            "ReservedCacheNodesOfferings",
            next,
            page,
            |w, offer| {
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
            },
        )
    }

    fn purchase_request<'c>(call: &'c Call<'_>, p: &&Params) -> Result<Purchase<'c>, ApiError> {
        PARAMS.purchase::<Self>(call, p, already_exists)
    }

    fn new_id(call: &Call<'_>, store: &mut Store) -> String {
        reserved::dated_id(call, store)
    }

    fn purchased(call: &Call<'_>, reservation: &Commitment) -> Response {
        query_success(Self::SERVICE, call.operation, call.request_id, |w| {
            reserved_node(w, call, reservation)
        })
    }

    fn reservations_lookup(p: &&Params) -> Result<Lookup, ApiError> {
        PARAMS.reservations_lookup(p)
    }

    fn reservation_not_found(id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "ReservedCacheNodeNotFound",
            format!("Reserved cache node {id} not found."),
        )
    }

    fn reservations_page(call: &Call<'_>, page: &[Commitment], next: Option<String>) -> Response {
        reserved::query_page(
            call,
            Self::SERVICE,
            "ReservedCacheNodes",
            next,
            page,
            |w, r| reserved_node(w, call, r),
        )
    }
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

fn already_exists(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "ReservedCacheNodeAlreadyExists",
        format!("You already have a reservation with the given identifier {id}."),
    )
}
