//! The Microsoft.Capacity resources the executor reads: reservation orders and their
//! provisioning states, price quotes, and what a purchase PUT answered.

use serde_json::Value;

use crate::error::{PermanentKind, PurchaseError};

/// Where an order is, from its `provisioningState` (Microsoft.Capacity 2022-11-01
/// `ProvisioningState`: Creating, PendingResourceHold, ConfirmedResourceHold, PendingBilling,
/// ConfirmedBilling, Created, Succeeded, Cancelled, Expired, BillingFailed, Failed, Split,
/// Merged — an open enum that does not say which are terminal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderState {
    /// Bought: `Succeeded`, or later reshaped by the owner (`Split`, `Merged`).
    Bought,
    /// Not bought (or not any more): `Failed`, `BillingFailed`, `Cancelled`/`Canceled`, `Expired`.
    Ended,
    /// Anything else, including states the spec may add: not bought for sure yet, and not safe
    /// to buy again either.
    InProgress,
}

impl OrderState {
    pub fn of(state: &str) -> Self {
        match state.to_ascii_lowercase().as_str() {
            "succeeded" | "split" | "merged" => OrderState::Bought,
            "failed" | "billingfailed" | "cancelled" | "canceled" | "expired" => OrderState::Ended,
            _ => OrderState::InProgress,
        }
    }
}

/// A reservation order as returned by ARM (only what the executor needs).
#[derive(Debug, Clone)]
pub struct Order {
    pub id: String,
    pub display_name: String,
    pub state: String,
    /// The order's price in USD (`planInformation.pricingCurrencyTotal`, with `$expand`).
    pub cost_usd: Option<f64>,
}

/// `{"currencyCode": "USD", "amount": 12.5}` as USD, `None` for another currency or no amount.
fn usd(price: &Value) -> Option<f64> {
    let currency = price["currencyCode"].as_str()?;
    currency
        .eq_ignore_ascii_case("USD")
        .then(|| price["amount"].as_f64())
        .flatten()
}

impl Order {
    pub(super) fn from_json(v: &Value) -> Self {
        let props = &v["properties"];
        // `name` is the order ID; `id` is its ARM path ending in it.
        let name = v["name"].as_str().map(str::to_owned).unwrap_or_else(|| {
            v["id"]
                .as_str()
                .and_then(|id| id.rsplit('/').next())
                .unwrap_or_default()
                .to_owned()
        });
        Self {
            id: name,
            display_name: props["displayName"].as_str().unwrap_or_default().to_owned(),
            state: props["provisioningState"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            cost_usd: usd(&props["planInformation"]["pricingCurrencyTotal"]),
        }
    }

    pub fn state(&self) -> OrderState {
        OrderState::of(&self.state)
    }
}

/// What `calculatePrice` said.
#[derive(Debug, Clone)]
pub struct Quote {
    pub order_id: String,
    /// What the whole term costs, USD.
    pub total_usd: f64,
}

/// The whole term's price of a quote in USD. The spec does not say whether
/// `pricingCurrencyTotal` is the whole term or one instalment for a `Monthly` plan (its example
/// shows one instalment), so the larger of it and the sum of `paymentSchedule` is taken; a quote
/// without a USD amount is refused rather than read as free.
pub fn quote_total_usd(props: &Value, monthly: bool) -> Result<f64, PurchaseError> {
    let refuse = |why: &str| {
        PurchaseError::permanent(
            PermanentKind::Validation,
            format!("azure:calculatePrice: {why}; refusing to buy without knowing the price"),
        )
    };
    let total = usd(&props["pricingCurrencyTotal"]).or_else(|| usd(&props["billingCurrencyTotal"]));
    let schedule: Option<Vec<Option<f64>>> = props["paymentSchedule"].as_array().map(|entries| {
        entries
            .iter()
            .map(|p| usd(&p["pricingCurrencyTotal"]))
            .collect()
    });
    let scheduled = match &schedule {
        Some(amounts) if amounts.iter().any(Option::is_none) => {
            return Err(refuse("a paymentSchedule entry has no USD amount"))
        }
        Some(amounts) if !amounts.is_empty() => Some(amounts.iter().flatten().sum::<f64>()),
        _ => None,
    };
    match (total, scheduled) {
        (Some(t), Some(s)) => Ok(t.max(s)),
        (Some(_), None) if monthly => Err(refuse(
            "a monthly quote without a paymentSchedule does not say what the whole term costs",
        )),
        (Some(t), None) => Ok(t),
        (None, Some(s)) => Ok(s),
        (None, None) => Err(refuse("the quote carries no USD amount")),
    }
}

/// Outcome of the purchase PUT, after waiting for the order to leave its in-progress states.
#[derive(Debug)]
pub enum PutOutcome {
    /// The order is bought.
    Bought(Order),
    /// The order ended without buying (`Failed`, `BillingFailed`, …).
    Ended(Order),
    /// `ReservationOrderIdAlreadyExists`: an earlier PUT with this ID created the order.
    AlreadyExists,
    /// `Session timed out - Call CalculatePrice again`: this ID cannot be bought with. Whether an
    /// earlier PUT consumed it is not said.
    SessionExpired(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn provisioning_states_are_sorted_into_bought_ended_and_in_progress() {
        for s in ["Succeeded", "succeeded", "Split", "Merged"] {
            assert_eq!(OrderState::of(s), OrderState::Bought, "{s}");
        }
        for s in [
            "Failed",
            "BillingFailed",
            "Cancelled",
            "Canceled",
            "Expired",
        ] {
            assert_eq!(OrderState::of(s), OrderState::Ended, "{s}");
        }
        for s in [
            "Creating",
            "PendingResourceHold",
            "ConfirmedResourceHold",
            "PendingBilling",
            "ConfirmedBilling",
            "Created",
            "SomethingNew",
            "",
        ] {
            assert_eq!(OrderState::of(s), OrderState::InProgress, "{s}");
        }
    }

    #[test]
    fn a_monthly_quote_costs_its_whole_schedule() {
        // The spec's example: pricingCurrencyTotal equal to one instalment.
        let props = json!({
            "pricingCurrencyTotal": {"currencyCode": "USD", "amount": 46.0},
            "paymentSchedule": [
                {"pricingCurrencyTotal": {"currencyCode": "USD", "amount": 46}},
                {"pricingCurrencyTotal": {"currencyCode": "USD", "amount": 46}},
                {"pricingCurrencyTotal": {"currencyCode": "USD", "amount": 46}}
            ]
        });
        assert_eq!(quote_total_usd(&props, true).unwrap(), 138.0);
        let upfront = json!({"pricingCurrencyTotal": {"currencyCode": "USD", "amount": 552.0}});
        assert_eq!(quote_total_usd(&upfront, false).unwrap(), 552.0);
    }

    #[test]
    fn a_quote_without_a_usd_amount_is_refused() {
        for props in [
            json!({}),
            json!({"pricingCurrencyTotal": {"currencyCode": "EUR", "amount": 40.0}}),
            json!({"pricingCurrencyTotal": {"currencyCode": "USD"}}),
        ] {
            assert!(quote_total_usd(&props, false).is_err(), "{props}");
        }
        let monthly_without_schedule =
            json!({"pricingCurrencyTotal": {"currencyCode": "USD", "amount": 46.0}});
        assert!(quote_total_usd(&monthly_without_schedule, true).is_err());
    }
}
