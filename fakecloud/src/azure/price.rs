//! `calculatePrice`: quotes a purchase and mints the `reservationOrderId` (a price session,
//! valid for a limited time) that a reservation-order PUT must present.

use axum::response::{IntoResponse, Response};
use chrono::Months;
use serde_json::{json, Value};

use super::request::{round2, Purchase};
use super::wire::price_json;
use super::Ctx;
use crate::aws::to_delta;
use crate::ledger::PriceSession;
use crate::protocol::ApiError;

pub(super) fn calculate_price(ctx: &Ctx<'_>, body: &[u8]) -> Result<Response, ApiError> {
    let purchase = Purchase::parse(body, ctx.realism.azure_strict_names)?;
    let (total, currency) = purchase.price(ctx)?;
    let months = purchase.months();
    let installment = round2(total / f64::from(months));
    let due_now = if purchase.billing_plan == "Monthly" {
        installment
    } else {
        total
    };
    let schedule: Vec<Value> = if purchase.billing_plan == "Monthly" {
        (0..months)
            .map(|m| {
                let due = ctx
                    .now
                    .checked_add_months(Months::new(m))
                    .unwrap_or(ctx.now);
                json!({
                    "dueDate": due.format("%Y-%m-%d").to_string(),
                    "pricingCurrencyTotal": price_json(&currency, installment),
                    "billingCurrencyTotal": price_json(&currency, installment),
                    "status": "Scheduled",
                })
            })
            .collect()
    } else {
        vec![json!({
            "dueDate": ctx.now.format("%Y-%m-%d").to_string(),
            "pricingCurrencyTotal": price_json(&currency, total),
            "billingCurrencyTotal": price_json(&currency, total),
            "status": "Scheduled",
        })]
    };
    let order_id = {
        let mut store = ctx.shared.store();
        let id = store.uuid();
        let expires_at = ctx.now + to_delta(ctx.shared.config.azure_price_session_ttl);
        store.price_sessions.insert(
            id.clone(),
            PriceSession {
                fingerprint: purchase.fingerprint(),
                total,
                currency: currency.clone(),
                expires_at,
            },
        );
        id
    };
    let years = purchase.months() / 12;
    Ok(axum::Json(json!({
        "properties": {
            "billingCurrencyTotal": price_json(&currency, due_now),
            "netTotal": total,
            "taxTotal": 0.0,
            "grandTotal": total,
            "isTaxIncluded": false,
            "isBillingPartnerManaged": false,
            "reservationOrderId": order_id,
            "skuTitle": format!("Reserved {}, {}, {}, {years} Year", purchase.reserved_resource_type, purchase.sku, purchase.location),
            "skuDescription": purchase.sku,
            // For a monthly plan, one instalment, as in the spec's CalculateReservationOrder
            // example; the whole term is the payment schedule's sum.
            "pricingCurrencyTotal": price_json(&currency, due_now),
            "paymentSchedule": schedule,
        }
    }))
    .into_response())
}
