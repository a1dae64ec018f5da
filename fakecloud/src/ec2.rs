//! EC2 Reserved Instances (EC2 query protocol).
//!
//! Real EC2 has no client token and no tag-on-create for RIs: a purchase is found again only by
//! the tags written afterwards with `CreateTags`. fakecloud keeps exactly that contract.

use std::collections::BTreeMap;

use axum::response::Response;
use chrono::{DateTime, SecondsFormat, Utc};
use http::StatusCode;

use super::aws::{valid_purchase_time, Call};
use super::catalog::Offer;
use super::ledger::Commitment;
use super::protocol::{
    fmt_price, invalid_parameter, missing_parameter, paginate, wildcard_match, xml_response,
    ApiError, AwsService, Params,
};
use super::xml::XmlWriter;

const NAMESPACE: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";
/// EC2 allows at most 50 tags per resource.
const MAX_TAGS: usize = 50;

/// Dispatches one EC2 call.
pub fn handle(call: &Call<'_>) -> Result<Response, ApiError> {
    match call.operation {
        "DescribeReservedInstancesOfferings" => describe_offerings(call),
        "PurchaseReservedInstancesOffering" => purchase(call),
        "DescribeReservedInstances" => describe_reserved_instances(call),
        "CreateTags" => create_tags(call),
        other => Err(ApiError::bad_request(
            "InvalidAction",
            format!("The action {other} is not valid for this web service."),
        )),
    }
}

fn dry_run(params: &Params) -> Result<(), ApiError> {
    if params.bool("DryRun", invalid_parameter)?.unwrap_or(false) {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "DryRunOperation",
            "Request would have succeeded, but DryRun flag is set.",
        ));
    }
    Ok(())
}

fn respond(call: &Call<'_>, body: impl FnOnce(&mut XmlWriter)) -> Response {
    let mut w = XmlWriter::new();
    w.root(&format!("{}Response", call.operation), NAMESPACE, |w| {
        w.leaf("requestId", call.request_id);
        body(w);
    });
    xml_response(StatusCode::OK, w.finish(), call.request_id)
}

fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `Filter.N.Name` / `Filter.N.Value.M`: values OR-ed within a filter, filters AND-ed.
struct Filter {
    name: String,
    values: Vec<String>,
}

fn filters(params: &Params) -> Result<Vec<Filter>, ApiError> {
    params
        .structs("Filter")
        .into_iter()
        .map(|f| {
            let name = f
                .get("Name")
                .filter(|n| !n.is_empty())
                .ok_or_else(|| missing_parameter("Filter.N.Name"))?;
            Ok(Filter {
                name: name.to_string(),
                values: f.list("Value"),
            })
        })
        .collect()
}

fn any_value(values: &[String], actual: &str) -> bool {
    values.iter().any(|pattern| wildcard_match(pattern, actual))
}

fn same_price(values: &[String], actual: f64) -> bool {
    values
        .iter()
        .any(|v| v.parse::<f64>().is_ok_and(|v| (v - actual).abs() < 1e-9))
}

fn offer_matches_filter(offer: &Offer<'_>, filter: &Filter) -> Result<bool, ApiError> {
    let o = offer.offering;
    let v = &filter.values;
    Ok(match filter.name.as_str() {
        "instance-type" => any_value(v, &o.resource_type),
        "product-description" => any_value(v, o.product_description.as_deref().unwrap_or_default()),
        "duration" => any_value(v, &o.duration_seconds.to_string()),
        "fixed-price" => same_price(v, o.fixed_price),
        "usage-price" => same_price(v, o.usage_price),
        "reserved-instances-offering-id" => any_value(v, &offer.id),
        "scope" => any_value(v, scope(offer.zone.as_deref())),
        "marketplace" => any_value(v, "false"),
        "availability-zone" => offer.zone.as_ref().is_some_and(|z| any_value(v, z)),
        "availability-zone-id" => offer
            .zone
            .as_ref()
            .is_some_and(|z| any_value(v, &zone_id(z))),
        other => {
            return Err(invalid_parameter(format!(
                "The filter '{other}' is invalid"
            )))
        }
    })
}

/// The `scope` EC2 reports for a reservation in `zone` (`None`: regional).
fn scope(zone: Option<&str>) -> &'static str {
    if zone.is_some() {
        "Availability Zone"
    } else {
        "Region"
    }
}

/// A zone ID for a zone name (`us-east-1a` → `use1-az1`-like, stable).
fn zone_id(zone: &str) -> String {
    let letter = zone.chars().last().unwrap_or('a');
    let prefix: String = zone
        .split('-')
        .map(|p| p.chars().next().unwrap_or('x'))
        .collect();
    format!("{prefix}-az{}", (letter as u8).saturating_sub(b'a') + 1)
}

fn describe_offerings(call: &Call<'_>) -> Result<Response, ApiError> {
    let p = call.params;
    let ids = p.list("ReservedInstancesOfferingId");
    let filters = filters(p)?;
    let min = p.int("MinDuration", invalid_parameter)?;
    let max = p.int("MaxDuration", invalid_parameter)?;
    let page_size = p.int("MaxResults", invalid_parameter)?.unwrap_or(100);
    if !(5..=100).contains(&page_size) {
        return Err(invalid_parameter(format!("Value ( {page_size} ) for parameter maxResults is invalid. Expecting a value between 5 and 100.")));
    }
    if let Some(class) = p.get("OfferingClass") {
        if class != "standard" && class != "convertible" {
            return Err(invalid_parameter(format!(
                "Invalid value '{class}' for OfferingClass"
            )));
        }
    }
    if let Some(ty) = p.get("OfferingType") {
        if ![
            "All Upfront",
            "Partial Upfront",
            "No Upfront",
            "Heavy Utilization",
            "Medium Utilization",
            "Light Utilization",
        ]
        .contains(&ty)
        {
            return Err(invalid_parameter(format!(
                "Invalid value '{ty}' for OfferingType"
            )));
        }
    }
    // With an Availability Zone, only that zone's offerings; without, the regional offering and
    // every zonal one.
    let zone_wanted = p.get("AvailabilityZone");
    let zone_id_wanted = p.get("AvailabilityZoneId");
    if zone_wanted.is_some() && zone_id_wanted.is_some() {
        return Err(invalid_parameter(
            "Either AvailabilityZone or AvailabilityZoneId can be specified, but not both",
        ));
    }
    let tenancy_ok = p.get("InstanceTenancy").is_none_or(|t| t == "default");
    dry_run(p)?;

    let mut selected = Vec::new();
    for offer in call.shared.catalog.offers(AwsService::Ec2, call.region) {
        let o = offer.offering;
        let zone = offer.zone.as_deref();
        let zone_ok = match (zone_wanted, zone_id_wanted) {
            (Some(z), _) => zone == Some(z),
            (_, Some(id)) => zone.is_some_and(|z| zone_id(z) == id),
            (None, None) => true,
        };
        let keep = zone_ok
            && tenancy_ok
            && (ids.is_empty() || ids.contains(&offer.id))
            && p.get("InstanceType").is_none_or(|v| v == o.resource_type)
            && p.get("ProductDescription")
                .is_none_or(|v| Some(v) == o.product_description.as_deref())
            && p.get("OfferingClass")
                .is_none_or(|v| Some(v) == o.offering_class.as_deref())
            && p.get("OfferingType")
                .is_none_or(|v| v == o.payment_option.as_str())
            && min.is_none_or(|m| o.duration_seconds >= m)
            && max.is_none_or(|m| o.duration_seconds <= m);
        if keep
            && filters.iter().try_fold(true, |acc, f| {
                Ok::<_, ApiError>(acc && offer_matches_filter(&offer, f)?)
            })?
        {
            selected.push(offer);
        }
    }
    let (page, next) = paginate(
        selected,
        p.get("NextToken"),
        call.page_size(page_size as usize),
    )
    .map_err(|_| {
        ApiError::bad_request("InvalidPaginationToken", "The pagination token is invalid")
    })?;
    Ok(respond(call, |w| {
        w.elem("reservedInstancesOfferingsSet", |w| {
            for offer in &page {
                let o = offer.offering;
                w.elem("item", |w| {
                    w.leaf("reservedInstancesOfferingId", &offer.id);
                    w.leaf("instanceType", &o.resource_type);
                    w.leaf("duration", o.duration_seconds);
                    w.leaf("fixedPrice", fmt_price(o.fixed_price));
                    w.leaf("usagePrice", fmt_price(o.usage_price));
                    w.opt_leaf("productDescription", o.product_description.as_deref());
                    w.leaf("instanceTenancy", "default");
                    w.leaf("currencyCode", &o.currency);
                    w.leaf("offeringType", o.payment_option.as_str());
                    recurring_charges(w, o.recurring_hourly);
                    w.leaf("marketplace", "false");
                    w.elem("pricingDetailsSet", |_| {});
                    w.opt_leaf("offeringClass", o.offering_class.as_deref());
                    w.leaf("scope", scope(offer.zone.as_deref()));
                    w.opt_leaf("availabilityZone", offer.zone.as_deref());
                    w.opt_leaf(
                        "availabilityZoneId",
                        offer.zone.as_deref().map(zone_id).as_deref(),
                    );
                });
            }
        });
        w.opt_leaf("nextToken", next.as_deref());
    }))
}

fn recurring_charges(w: &mut XmlWriter, hourly: f64) {
    w.elem("recurringCharges", |w| {
        if hourly > 0.0 {
            w.elem("item", |w| {
                w.leaf("frequency", "Hourly");
                w.leaf("amount", fmt_price(hourly));
            });
        }
    });
}

fn purchase(call: &Call<'_>) -> Result<Response, ApiError> {
    let p = call.params;
    let offering_id = p.require("ReservedInstancesOfferingId", missing_parameter)?;
    let count = p
        .int("InstanceCount", invalid_parameter)?
        .ok_or_else(|| missing_parameter("InstanceCount"))?;
    let count = u32::try_from(count)
        .ok()
        .filter(|c| *c >= 1)
        .ok_or_else(|| invalid_parameter(format!("Invalid value '{count}' for InstanceCount")))?;
    // LimitPrice caps Marketplace purchases; the catalog sells only AWS offerings, for which AWS
    // does not apply it, so it is validated but not enforced (a spend cap is the buyer's job).
    if let Some(amount) = p.get("LimitPrice.Amount") {
        amount.parse::<f64>().map_err(|_| {
            invalid_parameter(format!("Invalid value '{amount}' for LimitPrice.Amount"))
        })?;
    }
    if let Some(currency) = p.get("LimitPrice.CurrencyCode") {
        if currency != "USD" {
            return Err(invalid_parameter(format!(
                "Invalid value '{currency}' for LimitPrice.CurrencyCode"
            )));
        }
    }
    let purchase_time = match p.get("PurchaseTime") {
        None => None,
        Some(t) => Some(
            DateTime::parse_from_rfc3339(t)
                .map(|at| at.with_timezone(&Utc))
                .ok()
                .filter(|at| valid_purchase_time(call.now, *at))
                .ok_or_else(|| {
                    invalid_parameter(format!("Invalid value '{t}' for PurchaseTime"))
                })?,
        ),
    };
    let offer = call
        .shared
        .catalog
        .offer(AwsService::Ec2, call.region, offering_id)
        .ok_or_else(|| {
            ApiError::bad_request(
                "InvalidReservedInstancesOfferingId",
                format!("The Reserved Instances offering '{offering_id}' does not exist."),
            )
        })?;
    dry_run(p)?;

    let mut store = call.shared.store();
    let id = store.uuid();
    let mut ri = call.new_reservation(
        AwsService::Ec2,
        &offer,
        id.clone(),
        count,
        None,
        BTreeMap::new(),
    );
    if let Some(at) = purchase_time.filter(|at| *at > call.now) {
        // A queued purchase: nothing happens until its purchase time.
        ri.pending_state = "queued".into();
        ri.created_at = at;
        ri.ready_at = at + (ri.ready_at - call.now);
    }
    store.insert(ri);
    drop(store);
    tracing::info!(ri.id = %id, offering.id = %offering_id, count, account = %call.account(), region = %call.region, "EC2 RI purchased");
    Ok(respond(call, |w| w.leaf("reservedInstancesId", &id)))
}

fn ri_matches_filter(ri: &Commitment, state: &str, filter: &Filter) -> Result<bool, ApiError> {
    let v = &filter.values;
    Ok(match filter.name.as_str() {
        "state" => any_value(v, state),
        "instance-type" => any_value(v, &ri.resource_type),
        "product-description" => any_value(v, ri.product.as_deref().unwrap_or_default()),
        "reserved-instances-id" => any_value(v, &ri.id),
        "duration" => any_value(v, &ri.duration_seconds.to_string()),
        "fixed-price" => same_price(v, ri.unit_fixed),
        "usage-price" => same_price(v, ri.unit_usage),
        "scope" => any_value(v, scope(ri.zone.as_deref())),
        "start" => any_value(v, &timestamp(ri.created_at)),
        "end" => any_value(v, &timestamp(ri.end())),
        "tag-key" => ri.tags.keys().any(|k| any_value(v, k)),
        "availability-zone" => ri.zone.as_ref().is_some_and(|z| any_value(v, z)),
        "availability-zone-id" => ri.zone.as_ref().is_some_and(|z| any_value(v, &zone_id(z))),
        name => match name.strip_prefix("tag:") {
            Some(key) => ri.tags.get(key).is_some_and(|value| any_value(v, value)),
            None => return Err(invalid_parameter(format!("The filter '{name}' is invalid"))),
        },
    })
}

fn describe_reserved_instances(call: &Call<'_>) -> Result<Response, ApiError> {
    let p = call.params;
    let ids = p.list("ReservedInstancesId");
    let filters = filters(p)?;
    dry_run(p)?;
    let store = call.shared.store();
    let mut selected = Vec::new();
    // Eventual consistency (realism): a fresh RI is not listed yet.
    for ri in store
        .scoped("ec2", call.account(), call.region)
        .filter(|ri| call.visible(ri))
    {
        // Queued RIs are listed too, with state `queued`, as AWS does.
        let state = ri.state_at(call.now);
        let keep = (ids.is_empty() || ids.contains(&ri.id))
            && p.get("OfferingClass")
                .is_none_or(|v| Some(v) == ri.offering_class.as_deref())
            && p.get("OfferingType").is_none_or(|v| v == ri.payment);
        if keep
            && filters.iter().try_fold(true, |acc, f| {
                Ok::<_, ApiError>(acc && ri_matches_filter(ri, &state, f)?)
            })?
        {
            selected.push((ri.clone(), state));
        }
    }
    drop(store);
    if call.faults.lookup_empty {
        selected.clear();
    }
    Ok(respond(call, |w| {
        w.elem("reservedInstancesSet", |w| {
            for (ri, state) in &selected {
                w.elem("item", |w| {
                    w.leaf("reservedInstancesId", &ri.id);
                    w.leaf("instanceType", &ri.resource_type);
                    w.leaf("start", timestamp(ri.created_at));
                    w.leaf("end", timestamp(ri.end()));
                    w.leaf("duration", ri.duration_seconds);
                    w.leaf("usagePrice", fmt_price(ri.unit_usage));
                    w.leaf("fixedPrice", fmt_price(ri.unit_fixed));
                    w.leaf("instanceCount", ri.count);
                    w.opt_leaf("productDescription", ri.product.as_deref());
                    w.leaf("state", state);
                    w.elem("tagSet", |w| {
                        for (key, value) in &ri.tags {
                            w.elem("item", |w| {
                                w.leaf("key", key);
                                w.leaf("value", value);
                            });
                        }
                    });
                    w.leaf("instanceTenancy", "default");
                    w.leaf("currencyCode", &ri.currency);
                    w.leaf("offeringType", &ri.payment);
                    recurring_charges(w, ri.unit_recurring);
                    w.opt_leaf("offeringClass", ri.offering_class.as_deref());
                    w.leaf("scope", scope(ri.zone.as_deref()));
                    w.opt_leaf("availabilityZone", ri.zone.as_deref());
                    w.opt_leaf(
                        "availabilityZoneId",
                        ri.zone.as_deref().map(zone_id).as_deref(),
                    );
                });
            }
        });
    }))
}

fn create_tags(call: &Call<'_>) -> Result<Response, ApiError> {
    let p = call.params;
    let resources = p.list("ResourceId");
    if resources.is_empty() {
        return Err(missing_parameter("ResourceId"));
    }
    let mut tags = BTreeMap::new();
    for tag in p.structs("Tag") {
        let key = tag.get("Key").unwrap_or_default();
        let value = tag.get("Value").unwrap_or_default();
        if key.is_empty() || key.chars().count() > 128 {
            return Err(invalid_parameter(
                "Tag keys must be between 1 and 128 characters",
            ));
        }
        if key.starts_with("aws:") {
            return Err(invalid_parameter(
                "Tag keys starting with 'aws:' are reserved for internal use",
            ));
        }
        if value.chars().count() > 256 {
            return Err(invalid_parameter(
                "Tag values must be at most 256 characters",
            ));
        }
        tags.insert(key.to_string(), value.to_string());
    }
    if tags.is_empty() {
        return Err(missing_parameter("Tag"));
    }
    dry_run(p)?;

    // All or nothing: check every resource before writing any tag.
    let mut store = call.shared.store();
    let (account, region) = (call.account(), call.region);
    for id in &resources {
        // A fresh RI is not found by CreateTags until it is visible (realism), as EC2 documents
        // for resources it has just created.
        let Some(ri) = store
            .with_id(id)
            .find(|c| &c.id == id && c.is_in("ec2", account, region) && call.visible(c))
        else {
            return Err(ApiError::bad_request(
                "InvalidID",
                format!("The ID '{id}' is not valid"),
            ));
        };
        let mut merged = ri.tags.clone();
        merged.extend(tags.clone());
        if merged.len() > MAX_TAGS {
            return Err(ApiError::bad_request(
                "TagLimitExceeded",
                format!("The maximum number of tags per resource ({MAX_TAGS}) would be exceeded for {id}"),
            ));
        }
    }
    for id in &resources {
        for ri in store
            .with_id_mut(id)
            .filter(|c| &c.id == id && c.is_in("ec2", account, region))
        {
            ri.tags.extend(tags.clone());
        }
    }
    drop(store);
    Ok(respond(call, |w| w.leaf("return", "true")))
}
