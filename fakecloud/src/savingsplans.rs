//! Savings Plans (restJson1, `POST /<Operation>`).
//!
//! `CreateSavingsPlan` dedupes on `clientToken` per account: the same token with the same
//! parameters returns the plan created the first time and creates nothing; the same token with
//! different parameters is refused with 400 `ValidationException` — the only client-error type
//! the Savings Plans model declares for the operation (it has no `IdempotentParameterMismatch`).

use std::collections::BTreeMap;

use axum::response::Response;
use chrono::{DateTime, TimeDelta, Utc};
use http::StatusCode;
use serde_json::{json, Value};

use super::aws::{valid_purchase_time, Call};
use super::catalog::{PaymentOption, SavingsPlanOffering, THREE_YEARS};
use super::ledger::{Commitment, Detail, Provider};
use super::protocol::{fmt_price, iso_time, json_response, paginate, ApiError, JsonInput};

/// Dispatches one Savings Plans call.
pub fn handle(call: &Call<'_>) -> Result<Response, ApiError> {
    let input = JsonInput::parse(call.body, validation)?;
    let body = match call.operation {
        "DescribeSavingsPlansOfferings" => describe_offerings(call, &input)?,
        "CreateSavingsPlan" => create(call, &input)?,
        "DescribeSavingsPlans" => return describe(call, &input),
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "UnknownOperationException",
                format!("Unknown operation {other}"),
            ));
        }
    };
    Ok(json_response(
        StatusCode::OK,
        "application/json",
        &body,
        call.request_id,
    ))
}

fn validation(message: String) -> ApiError {
    ApiError::bad_request("ValidationException", message)
}

fn years(duration: i64) -> u32 {
    if duration == THREE_YEARS {
        3
    } else {
        1
    }
}

fn service_code(plan_type: &str) -> &'static str {
    match plan_type {
        "EC2Instance" => "EC2InstanceSavingsPlans",
        "SageMaker" => "MachineLearningSavingsPlans",
        "Database" => "DatabaseSavingsPlans",
        _ => "ComputeSavingsPlans",
    }
}

/// `SavingsPlanState` in the model.
const STATES: [&str; 8] = [
    "payment-pending",
    "payment-failed",
    "active",
    "retired",
    "queued",
    "queued-deleted",
    "pending-return",
    "returned",
];

fn description(o: &SavingsPlanOffering) -> String {
    let family = o
        .instance_family
        .as_deref()
        .map(|f| format!("{f} "))
        .unwrap_or_default();
    format!(
        "{} year {} {family}{} Savings Plan",
        years(o.duration_seconds),
        o.payment_option.as_str(),
        o.plan_type
    )
}

/// `{"name": …, "values": […]}` filters.
fn name_values(input: &JsonInput, key: &str) -> Result<Vec<(String, Vec<String>)>, ApiError> {
    let Some(list) = input.value(key) else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| input.invalid(format!("{key} must be a list")))?;
    list.iter()
        .map(|f| {
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| input.invalid("filter name is required"))?;
            let values = f
                .get("values")
                .and_then(Value::as_array)
                .map(|v| {
                    v.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            Ok((name.to_string(), values))
        })
        .collect()
}

fn check_values(input: &JsonInput, key: &str, allowed: &[&str]) -> Result<Vec<String>, ApiError> {
    let values = input.strings(key)?;
    if let Some(bad) = values.iter().find(|v| !allowed.contains(&v.as_str())) {
        return Err(input.invalid(format!(
            "1 validation error detected: Value '{bad}' at '{key}' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
            allowed.join(", ")
        )));
    }
    Ok(values)
}

fn page_size(input: &JsonInput) -> Result<usize, ApiError> {
    let n = input.int("maxResults")?.unwrap_or(1000);
    if !(1..=1000).contains(&n) {
        return Err(input.invalid(format!("maxResults must be between 1 and 1000, got {n}")));
    }
    Ok(n as usize)
}

fn describe_offerings(call: &Call<'_>, input: &JsonInput) -> Result<Value, ApiError> {
    let ids = input.strings("offeringIds")?;
    let plan_types = check_values(
        input,
        "planTypes",
        &["Compute", "EC2Instance", "SageMaker", "Database"],
    )?;
    let payments = check_values(
        input,
        "paymentOptions",
        &["All Upfront", "Partial Upfront", "No Upfront"],
    )?;
    let currencies = check_values(input, "currencies", &["CNY", "USD", "EUR"])?;
    let product_type = input.string("productType")?;
    let service_codes = input.strings("serviceCodes")?;
    let durations: Vec<i64> = match input.value("durations") {
        None => Vec::new(),
        Some(v) => v
            .as_array()
            .and_then(|a| a.iter().map(Value::as_i64).collect::<Option<Vec<_>>>())
            .ok_or_else(|| input.invalid("durations must be a list of integers"))?,
    };
    let filters = name_values(input, "filters")?;
    for (name, _) in &filters {
        if name != "region" && name != "instanceFamily" {
            return Err(input.invalid(format!("Invalid offering filter attribute {name}")));
        }
    }
    let page_size = page_size(input)?;
    let offers: Vec<(&str, &SavingsPlanOffering)> = call
        .shared
        .catalog
        .savings_plans()
        .filter(|(id, o)| {
            (ids.is_empty() || ids.iter().any(|x| x == id))
                && (plan_types.is_empty() || plan_types.contains(&o.plan_type))
                && (payments.is_empty() || payments.iter().any(|p| p == o.payment_option.as_str()))
                && (currencies.is_empty() || currencies.contains(&o.currency))
                && (durations.is_empty() || durations.contains(&o.duration_seconds))
                && product_type.is_none_or(|p| o.product_types.iter().any(|x| x == p))
                && (service_codes.is_empty()
                    || service_codes
                        .iter()
                        .any(|s| s == service_code(&o.plan_type)))
                && filters.iter().all(|(name, values)| {
                    // Plans without a region or family (Compute, SageMaker) apply everywhere.
                    let actual = if name == "region" {
                        &o.region
                    } else {
                        &o.instance_family
                    };
                    actual.as_ref().is_none_or(|a| values.contains(a))
                })
        })
        .collect();
    let (page, next) = paginate(
        offers,
        input.string("nextToken")?,
        call.page_size(page_size),
    )
    .map_err(|_| input.invalid("Invalid nextToken"))?;
    let items: Vec<Value> = page
        .iter()
        .map(|(id, o)| {
            let mut properties = Vec::new();
            if let Some(region) = &o.region {
                properties.push(json!({"name": "region", "value": region}));
            }
            if let Some(family) = &o.instance_family {
                properties.push(json!({"name": "instanceFamily", "value": family}));
            }
            let usage_prefix = match o.plan_type.as_str() {
                "EC2Instance" => format!("EC2InstanceSP:{}.", o.instance_family.as_deref().unwrap_or_default()),
                "SageMaker" => "SageMakerSP:".to_string(),
                "Database" => "DatabaseSP:".to_string(),
                _ => "ComputeSP:".to_string(),
            };
            json!({
                "offeringId": id,
                "productTypes": o.product_types,
                "planType": o.plan_type,
                "description": description(o),
                "paymentOption": o.payment_option.as_str(),
                "durationSeconds": o.duration_seconds,
                "currency": o.currency,
                "serviceCode": service_code(&o.plan_type),
                "usageType": format!("{usage_prefix}{}yr{}", years(o.duration_seconds), o.payment_option.as_str().replace(' ', "")),
                "operation": "",
                "properties": properties,
            })
        })
        .collect();
    Ok(json!({ "searchResults": items, "nextToken": next }))
}

/// Parses a decimal amount with at most `decimals` digits after the point.
fn amount(text: &str, decimals: usize) -> Option<f64> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits_ok = !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit());
    (digits_ok && frac.len() <= decimals)
        .then(|| text.parse().ok())
        .flatten()
}

fn create(call: &Call<'_>, input: &JsonInput) -> Result<Value, ApiError> {
    let offering_id = input
        .string("savingsPlanOfferingId")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| input.invalid("savingsPlanOfferingId is required"))?;
    let commitment_text = input
        .string("commitment")?
        .ok_or_else(|| input.invalid("commitment is required"))?;
    let commitment = amount(commitment_text, 5)
        .filter(|c| (0.001..=1_000_000.0).contains(c))
        .ok_or_else(|| input.invalid(format!("Invalid commitment {commitment_text}: a value between 0.001 and 1000000 with at most five decimals is required")))?;
    let upfront_text = input.string("upfrontPaymentAmount")?;
    let purchase_time = match input.value("purchaseTime") {
        None => None,
        Some(v) => {
            let secs = v
                .as_f64()
                .ok_or_else(|| input.invalid("purchaseTime must be a timestamp"))?;
            let at = DateTime::<Utc>::from_timestamp(secs as i64, 0)
                .filter(|at| valid_purchase_time(call.now, *at))
                .ok_or_else(|| input.invalid("purchaseTime must be at most three years ahead"))?;
            Some(at)
        }
    };
    let client_token = input.string("clientToken")?.map(str::to_string);
    let mut tags = BTreeMap::new();
    if let Some(map) = input.value("tags") {
        for (k, v) in map
            .as_object()
            .ok_or_else(|| input.invalid("tags must be a map"))?
        {
            tags.insert(
                k.clone(),
                v.as_str()
                    .ok_or_else(|| input.invalid("tag values must be strings"))?
                    .to_string(),
            );
        }
    }

    let offering = call
        .shared
        .catalog
        .savings_plan(offering_id)
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "ResourceNotFoundException",
                format!("Savings Plan offering {offering_id} not found"),
            )
        })?;
    let hours = (offering.duration_seconds / 3600) as f64;
    let total = commitment * hours;
    let upfront = match (offering.payment_option, upfront_text) {
        (PaymentOption::PartialUpfront, Some(text)) => {
            // "A whole number between 50 and 99 percent of the total value" (API reference).
            let value = amount(text, 0).ok_or_else(|| {
                input.invalid(format!(
                    "Invalid upfrontPaymentAmount {text}: a whole number is required"
                ))
            })?;
            if value < total * 0.5 - 1e-6 || value > total * 0.99 + 1e-6 {
                return Err(input.invalid(format!(
                    "upfrontPaymentAmount {text} must be between 50 and 99 percent of the total value {total:.2}"
                )));
            }
            value
        }
        (PaymentOption::PartialUpfront, None) => total / 2.0,
        (_, Some(_)) => {
            return Err(input.invalid(
                "upfrontPaymentAmount is only supported for the Partial Upfront payment option",
            ));
        }
        (PaymentOption::AllUpfront, None) => total,
        (PaymentOption::NoUpfront, None) => 0.0,
    };
    let recurring = (total - upfront) / hours;
    let mut fingerprint_tags: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    fingerprint_tags.sort();
    let fingerprint = format!(
        "{offering_id}|{commitment_text}|{}|{}|{}",
        upfront_text.unwrap_or_default(),
        purchase_time.map(|t| t.timestamp()).unwrap_or_default(),
        fingerprint_tags.join(",")
    );

    // Token lookup and insert under one lock: N concurrent creates with one token make one plan.
    // Realism: AWS documents no retention for client tokens; a plan older than the TTL no
    // longer dedupes.
    let token_ttl = call.realism.client_token_ttl;
    let mut store = call.shared.store();
    if let Some(token) = &client_token {
        let previous = store
            .with_handle("savings-plans", call.account(), token)
            .find(|c| {
                token_ttl.is_none_or(|ttl| call.now < c.created_at + super::aws::to_delta(ttl))
            });
        if let Some(previous) = previous {
            return match &previous.detail {
                Detail::SavingsPlan { fingerprint: f, .. } if *f == fingerprint => Ok(json!({ "savingsPlanId": previous.id })),
                _ => Err(input.invalid(format!(
                    "The client token {token} was already used for a request with different parameters."
                ))),
            };
        }
    }
    let id = store.uuid();
    let start = purchase_time.filter(|t| *t > call.now).unwrap_or(call.now);
    let plan = Commitment {
        provider: Provider::Aws,
        service: "savings-plans".into(),
        account: call.account().to_string(),
        region: offering
            .region
            .clone()
            .unwrap_or_else(|| call.region.to_string()),
        id: id.clone(),
        handle: client_token,
        offering_id: offering_id.to_string(),
        resource_type: offering
            .instance_family
            .clone()
            .unwrap_or_else(|| offering.plan_type.clone()),
        product: None,
        offering_class: None,
        multi_az: None,
        zone: None,
        count: 1,
        duration_seconds: offering.duration_seconds,
        payment: offering.payment_option.as_str().to_string(),
        unit_fixed: upfront,
        unit_usage: 0.0,
        unit_recurring: recurring,
        currency: offering.currency.clone(),
        tags: if call.faults.drop_tags {
            BTreeMap::new()
        } else {
            tags
        },
        created_at: start,
        ready_at: start + (call.activation_time() - call.now),
        pending_state: if start > call.now {
            "queued"
        } else {
            "payment-pending"
        }
        .into(),
        final_state: call.final_state(),
        state_override: None,
        detail: Detail::SavingsPlan {
            plan_type: offering.plan_type.clone(),
            commitment: commitment_text.to_string(),
            upfront: fmt_price(upfront),
            recurring: fmt_price(recurring),
            product_types: offering.product_types.clone(),
            instance_family: offering.instance_family.clone(),
            offering_region: offering.region.clone(),
            fingerprint,
        },
    };
    store.insert(plan);
    drop(store);
    tracing::info!(savings_plan.id = %id, offering.id = %offering_id, commitment = %commitment_text, account = %call.account(), "Savings Plan created");
    Ok(json!({ "savingsPlanId": id }))
}

/// One plan as `DescribeSavingsPlans` lists it, serialised from the ledger's fields without an
/// intermediate `Value` (the guard lists every plan of the account before each purchase, which
/// made building `Value`s most of fakecloud's work in the bench).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct PlanOut<'a> {
    offering_id: &'a str,
    savings_plan_id: &'a str,
    savings_plan_arn: String,
    description: String,
    start: String,
    end: String,
    state: String,
    region: &'a Option<String>,
    ec2_instance_family: &'a Option<String>,
    savings_plan_type: &'a str,
    payment_option: &'a str,
    product_types: &'a [String],
    currency: &'a str,
    commitment: &'a str,
    upfront_payment_amount: &'a str,
    recurring_payment_amount: &'a str,
    term_duration_in_seconds: i64,
    tags: &'a BTreeMap<String, String>,
    returnable_until: String,
}

fn plan_out<'a>(call: &Call<'_>, c: &'a Commitment) -> Option<PlanOut<'a>> {
    let Detail::SavingsPlan {
        plan_type,
        commitment,
        upfront,
        recurring,
        product_types,
        instance_family,
        offering_region,
        ..
    } = &c.detail
    else {
        return None;
    };
    Some(PlanOut {
        offering_id: &c.offering_id,
        savings_plan_id: &c.id,
        savings_plan_arn: plan_arn(c),
        description: format!(
            "{} year {} {plan_type} Savings Plan",
            years(c.duration_seconds),
            c.payment
        ),
        start: iso_time(c.created_at),
        end: iso_time(c.end()),
        state: c.state_at(call.now),
        region: offering_region,
        ec2_instance_family: instance_family,
        savings_plan_type: plan_type,
        payment_option: &c.payment,
        product_types,
        currency: &c.currency,
        commitment,
        upfront_payment_amount: upfront,
        recurring_payment_amount: recurring,
        term_duration_in_seconds: c.duration_seconds,
        tags: &c.tags,
        returnable_until: iso_time(c.created_at + TimeDelta::days(7)),
    })
}

fn plan_arn(c: &Commitment) -> String {
    format!("arn:aws:savingsplans::{}:savingsplan/{}", c.account, c.id)
}

fn plan_matches(c: &Commitment, name: &str, values: &[String]) -> bool {
    let Detail::SavingsPlan {
        plan_type,
        commitment,
        upfront,
        instance_family,
        offering_region,
        ..
    } = &c.detail
    else {
        return false;
    };
    let actual = match name {
        "region" => offering_region.clone().unwrap_or_else(|| c.region.clone()),
        "ec2-instance-family" | "instance-family" => instance_family.clone().unwrap_or_default(),
        "commitment" => commitment.clone(),
        "upfront" => upfront.clone(),
        "term" => c.duration_seconds.to_string(),
        "savings-plan-type" => plan_type.clone(),
        "payment-option" => c.payment.clone(),
        "start" => iso_time(c.created_at),
        "end" => iso_time(c.end()),
        _ => return false,
    };
    values.contains(&actual)
}

fn describe(call: &Call<'_>, input: &JsonInput) -> Result<Response, ApiError> {
    let ids = input.strings("savingsPlanIds")?;
    let arns = input.strings("savingsPlanArns")?;
    let states = check_values(input, "states", &STATES)?;
    let filters = name_values(input, "filters")?;
    let page_size = page_size(input)?;
    let token = input.string("nextToken")?;
    let store = call.shared.store();
    let mut found: Vec<&Commitment> = store
        .in_account("savings-plans", call.account())
        // Eventual consistency (realism): a fresh plan is not listed yet.
        .filter(|c| call.visible(c))
        .filter(|c| {
            (ids.is_empty() || ids.contains(&c.id))
                && (arns.is_empty() || arns.contains(&plan_arn(c)))
                && (states.is_empty() || states.contains(&c.state_at(call.now)))
                && filters
                    .iter()
                    .all(|(name, values)| plan_matches(c, name, values))
        })
        .collect();
    if call.faults.lookup_empty {
        found.clear();
    }
    // Only the page is turned into JSON.
    let (page, next) = paginate(found, token, call.page_size(page_size))
        .map_err(|_| input.invalid("Invalid nextToken"))?;
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Listing<'a> {
        savings_plans: Vec<PlanOut<'a>>,
        next_token: Option<String>,
    }
    let listing = Listing {
        savings_plans: page.into_iter().filter_map(|c| plan_out(call, c)).collect(),
        next_token: next,
    };
    Ok(json_response(
        StatusCode::OK,
        "application/json",
        &listing,
        call.request_id,
    ))
}
