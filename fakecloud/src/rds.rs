//! RDS reserved DB instances (awsQuery).
//!
//! The client-chosen `ReservedDBInstanceId` is unique per account and region; reusing it answers
//! HTTP 404 `ReservedDBInstanceAlreadyExists`, as the RDS API model declares.

use std::collections::BTreeMap;

use axum::response::Response;
use http::StatusCode;

use super::aws::Call;
use super::catalog::Offer;
use super::ledger::{Commitment, Detail};
use super::protocol::{
    duration_param, fmt_price, iso_time, max_records, paginate, query_recurring_charges,
    query_success, ApiError, AwsService, Params,
};
use super::xml::XmlWriter;

/// Dispatches one RDS call.
pub fn handle(call: &Call<'_>) -> Result<Response, ApiError> {
    match call.operation {
        "DescribeReservedDBInstancesOfferings" => describe_offerings(call),
        "PurchaseReservedDBInstancesOffering" => purchase(call),
        "DescribeReservedDBInstances" => describe(call),
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
    class: Option<String>,
    duration: Option<i64>,
    product: Option<String>,
    offering_type: Option<String>,
    multi_az: Option<bool>,
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
            class: p.get("DBInstanceClass").map(str::to_string),
            duration,
            product: p.get("ProductDescription").map(str::to_string),
            offering_type: p.get("OfferingType").map(str::to_string),
            multi_az: p.bool("MultiAZ", invalid)?,
        })
    }

    fn matches(
        &self,
        class: &str,
        duration: i64,
        product: Option<&str>,
        offering_type: &str,
        multi_az: Option<bool>,
    ) -> bool {
        self.class.as_deref().is_none_or(|c| c == class)
            && self.duration.is_none_or(|d| d == duration)
            && self
                .product
                .as_deref()
                .is_none_or(|p| product.is_some_and(|x| x.eq_ignore_ascii_case(p)))
            && self
                .offering_type
                .as_deref()
                .is_none_or(|t| t == offering_type)
            && self.multi_az.is_none_or(|m| multi_az == Some(m))
    }
}

fn describe_offerings(call: &Call<'_>) -> Result<Response, ApiError> {
    let p = call.params;
    let criteria = Criteria::parse(p)?;
    let page_size = max_records(p)?;
    let id = p.get("ReservedDBInstancesOfferingId");
    let offers: Vec<Offer<'_>> = call
        .shared
        .catalog
        .offers(AwsService::Rds, call.region)
        .into_iter()
        .filter(|offer| {
            let o = offer.offering;
            id.is_none_or(|id| id == offer.id)
                && criteria.matches(
                    &o.resource_type,
                    o.duration_seconds,
                    o.product_description.as_deref(),
                    o.payment_option.as_str(),
                    o.multi_az,
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
        AwsService::Rds,
        call.operation,
        call.request_id,
        |w| {
            w.opt_leaf("Marker", marker.as_deref());
            w.elem("ReservedDBInstancesOfferings", |w| {
                for offer in &page {
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
                }
            });
        },
    ))
}

fn offering_not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "ReservedDBInstancesOfferingNotFound",
        format!("Specified offering {id} does not exist."),
    )
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
    let offering_id = p.require("ReservedDBInstancesOfferingId", missing)?;
    let count = p.int("DBInstanceCount", invalid)?.unwrap_or(1);
    let count = u32::try_from(count)
        .ok()
        .filter(|c| *c >= 1)
        .ok_or_else(|| invalid("DBInstanceCount must be at least 1"))?;
    let tags = tags(p)?;
    let offer = call
        .shared
        .catalog
        .offer(AwsService::Rds, call.region, offering_id)
        .ok_or_else(|| offering_not_found(offering_id))?;

    // Check and insert under one lock: concurrent purchases of one ID create one reservation.
    let mut store = call.shared.store();
    let id = match p.get("ReservedDBInstanceId").filter(|id| !id.is_empty()) {
        Some(id) => id.to_string(),
        None => format!(
            "ri-{}-{:06}",
            call.now.format("%Y-%m-%d-%H-%M-%S"),
            store.number(1_000_000)
        ),
    };
    if store
        .scoped("rds", call.account(), call.region)
        .any(|c| c.id.eq_ignore_ascii_case(&id))
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "ReservedDBInstanceAlreadyExists",
            format!("User already has a reservation with the given identifier {id}."),
        ));
    }
    let lease_id = store.uuid();
    let mut reservation = call.new_reservation(
        AwsService::Rds,
        &offer,
        id.clone(),
        count,
        Some(id.clone()),
        tags,
    );
    reservation.detail = Detail::Rds { lease_id };
    store.commitments.push(reservation.clone());
    drop(store);
    tracing::info!(reservation.id = %id, offering.id = %offering_id, count, account = %call.account(), region = %call.region, "RDS reservation purchased");
    Ok(query_success(
        AwsService::Rds,
        call.operation,
        call.request_id,
        |w| reserved_instance(w, call, &reservation),
    ))
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

fn describe(call: &Call<'_>) -> Result<Response, ApiError> {
    let p = call.params;
    let criteria = Criteria::parse(p)?;
    let page_size = max_records(p)?;
    let id = p.get("ReservedDBInstanceId").filter(|id| !id.is_empty());
    let offering_id = p.get("ReservedDBInstancesOfferingId");
    let lease_id = p.get("LeaseId");
    let mut found: Vec<Commitment> = call
        .shared
        .store()
        .scoped("rds", call.account(), call.region)
        .filter(|r| {
            id.is_none_or(|id| r.id.eq_ignore_ascii_case(id))
                && offering_id.is_none_or(|o| o == r.offering_id)
                && lease_id
                    .is_none_or(|l| matches!(&r.detail, Detail::Rds { lease_id } if lease_id == l))
                && criteria.matches(
                    &r.resource_type,
                    r.duration_seconds,
                    r.product.as_deref(),
                    &r.payment,
                    r.multi_az,
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
                "ReservedDBInstanceNotFound",
                format!("Reserved DB instance {id} not found."),
            ));
        }
    }
    let (page, marker) = paginate(found, p.get("Marker"), call.page_size(page_size))
        .map_err(|_| invalid("Invalid marker"))?;
    Ok(query_success(
        AwsService::Rds,
        call.operation,
        call.request_id,
        |w| {
            w.opt_leaf("Marker", marker.as_deref());
            w.elem("ReservedDBInstances", |w| {
                for r in &page {
                    reserved_instance(w, call, r);
                }
            });
        },
    ))
}
