//! RDS reserved DB instances (awsQuery).
//!
//! The client-chosen `ReservedDBInstanceId` is unique per account and region; reusing it answers
//! HTTP 404 `ReservedDBInstanceAlreadyExists`, as the RDS API model declares.

use axum::response::Response;
use http::StatusCode;

use super::aws::Call;
use super::catalog::Offer;
use super::ledger::{Commitment, Detail, Store};
use super::protocol::{
    fmt_price, iso_time, query_recurring_charges, query_success, ApiError, AwsService, Params,
};
use super::reserved::{self, Lookup, Purchase, Query, QueryById, ReservedService};
use super::xml::XmlWriter;

/// The names under which RDS takes the requests it shares with ElastiCache.
const PARAMS: QueryById = QueryById {
    offering_id: "ReservedDBInstancesOfferingId",
    reservation_id: "ReservedDBInstanceId",
    count: "DBInstanceCount",
    resource_type: "DBInstanceClass",
    multi_az: true,
};

/// RDS, as a [`ReservedService`].
pub struct Rds;

impl ReservedService for Rds {
    const SERVICE: AwsService = AwsService::Rds;
    const DESCRIBE_OFFERINGS: &'static str = "DescribeReservedDBInstancesOfferings";
    const PURCHASE: &'static str = "PurchaseReservedDBInstancesOffering";
    const DESCRIBE: &'static str = "DescribeReservedDBInstances";
    const IDS_IGNORE_CASE: bool = true;
    const PURCHASED: &'static str = "RDS reservation purchased";
    type Wire = Query;

    fn offerings_lookup(p: &&Params) -> Result<Lookup, ApiError> {
        PARAMS.offerings_lookup(p)
    }

    fn offering_not_found(id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "ReservedDBInstancesOfferingNotFound",
            format!("Specified offering {id} does not exist."),
        )
    }

    fn offerings_page(call: &Call<'_>, page: &[Offer<'_>], next: Option<String>) -> Response {
        reserved::query_page(
            call,
            Self::SERVICE,
            "ReservedDBInstancesOfferings",
            next,
            page,
            |w, offer| {
                let o = offer.offering;
                w.elem("ReservedDBInstancesOffering", |w| {
                    w.leaf("ReservedDBInstancesOfferingId", &offer.id);
                    w.leaf("DBInstanceClass", &o.resource_type);
                    w.leaf("Duration", o.duration_seconds);
                    w.leaf("FixedPrice", fmt_price(o.fixed_price));
                    w.leaf("UsagePrice", fmt_price(o.usage_price));
                    w.leaf("CurrencyCode", &o.currency);
                    w.opt_leaf("ProductDescription", o.product_description.as_deref());
                    w.leaf("OfferingType", o.payment_option.as_str());
                    w.leaf("MultiAZ", o.multi_az.unwrap_or(false));
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

    fn detail(store: &mut Store) -> Detail {
        Detail::Rds {
            lease_id: store.uuid(),
        }
    }

    fn purchased(call: &Call<'_>, reservation: &Commitment) -> Response {
        query_success(Self::SERVICE, call.operation, call.request_id, |w| {
            reserved_instance(w, call, reservation)
        })
    }

    fn reservations_lookup(p: &&Params) -> Result<Lookup, ApiError> {
        let mut lookup = PARAMS.reservations_lookup(p)?;
        lookup.criteria.lease_id = p.get("LeaseId").map(str::to_string);
        Ok(lookup)
    }

    fn reservation_not_found(id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "ReservedDBInstanceNotFound",
            format!("Reserved DB instance {id} not found."),
        )
    }

    fn reservations_page(call: &Call<'_>, page: &[Commitment], next: Option<String>) -> Response {
        reserved::query_page(
            call,
            Self::SERVICE,
            "ReservedDBInstances",
            next,
            page,
            |w, r| reserved_instance(w, call, r),
        )
    }
}

fn reserved_instance(w: &mut XmlWriter, call: &Call<'_>, r: &Commitment) {
    w.elem("ReservedDBInstance", |w| {
        w.leaf("ReservedDBInstanceId", &r.id);
        w.leaf("ReservedDBInstancesOfferingId", &r.offering_id);
        w.leaf("DBInstanceClass", &r.resource_type);
        w.leaf("StartTime", iso_time(r.created_at));
        w.leaf("Duration", r.duration_seconds);
        w.leaf("FixedPrice", fmt_price(r.unit_fixed));
        w.leaf("UsagePrice", fmt_price(r.unit_usage));
        w.leaf("CurrencyCode", &r.currency);
        w.leaf("DBInstanceCount", r.count);
        w.opt_leaf("ProductDescription", r.product.as_deref());
        w.leaf("OfferingType", &r.payment);
        w.leaf("MultiAZ", r.multi_az.unwrap_or(false));
        w.leaf("State", r.state_at(call.now));
        query_recurring_charges(w, r.unit_recurring);
        w.leaf(
            "ReservedDBInstanceArn",
            format!("arn:aws:rds:{}:{}:ri:{}", r.region, r.account, r.id),
        );
        if let Detail::Rds { lease_id } = &r.detail {
            w.leaf("LeaseId", lease_id);
        }
    });
}

fn already_exists(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "ReservedDBInstanceAlreadyExists",
        format!("User already has a reservation with the given identifier {id}."),
    )
}
