//! Savings Plans: `CreateSavingsPlan` with `clientToken = token` and the token as a tag.
//!
//! The model marks `clientToken` as an idempotency token ("a unique, case-sensitive identifier
//! that you provide to ensure the idempotency of the request") but documents no retention
//! window and no behaviour on reuse with other parameters, so it is not the only guard: before
//! buying, the account's plans are listed (`DescribeSavingsPlans`, every page — it has no tag
//! filter) and a plan whose `tags[<tag key>]` is the token is recovered. After an ambiguous
//! purchase call the settle gate keeps a retry from creating until the first plan had time to
//! appear; the client token then still dedupes while AWS remembers it. A `ValidationException`
//! on a retry after such a call may be AWS refusing the token's reuse, so the guard runs again
//! before the refusal is believed.
//!
//! The SDK invents a random `clientToken` on every call when none is set, which would make a
//! retry a second purchase — so it is always set, to the token.

use async_trait::async_trait;
use aws_sdk_savingsplans::types::{
    CurrencyCode, SavingsPlan, SavingsPlanOfferingFilterAttribute,
    SavingsPlanOfferingFilterElement, SavingsPlanPaymentOption, SavingsPlanState, SavingsPlanType,
};
use buyonce_shared::document::PlanType;
use buyonce_shared::{IdempotencyToken, Payment, Recommendation};
use tracing::Instrument as _;

use super::{
    all_pages, ended_commitment, exactly_one, offering_key, Executor, How, OfferingCache,
    PermanentKind, PurchaseContext, PurchaseError, PurchaseRequest, Purchased,
};
use crate::clients::aws::errors::{classify_purchase, code, lookup_failed, offering_lookup_failed};
use crate::clients::aws::{AwsClients, SAVINGS_PLANS_REGION};

pub struct SavingsPlans {
    aws: AwsClients,
    offerings: OfferingCache<String>,
}

impl SavingsPlans {
    pub fn new(aws: AwsClients) -> Self {
        Self {
            aws,
            offerings: OfferingCache::default(),
        }
    }
}

fn plan_type(p: Option<PlanType>) -> SavingsPlanType {
    match p {
        Some(PlanType::Ec2Instance) => SavingsPlanType::Ec2Instance,
        Some(PlanType::Sagemaker) => SavingsPlanType::Sagemaker,
        Some(PlanType::Database) => SavingsPlanType::Database,
        Some(PlanType::Compute) | None => SavingsPlanType::Compute,
    }
}

fn payment_option(p: Payment) -> SavingsPlanPaymentOption {
    match p {
        Payment::AllUpfront | Payment::Upfront => SavingsPlanPaymentOption::AllUpfront,
        Payment::PartialUpfront => SavingsPlanPaymentOption::PartialUpfront,
        Payment::NoUpfront | Payment::Monthly => SavingsPlanPaymentOption::NoUpfront,
    }
}

/// States the guard lists: every state a plan bought now can be in. (`retired` plans ended
/// their term years ago.)
const GUARD_STATES: [SavingsPlanState; 7] = [
    SavingsPlanState::PaymentPending,
    SavingsPlanState::PaymentFailed,
    SavingsPlanState::Active,
    SavingsPlanState::Queued,
    SavingsPlanState::QueuedDeleted,
    SavingsPlanState::PendingReturn,
    SavingsPlanState::Returned,
];

/// AWS takes the hourly commitment as a string with at most five decimals; `0.1 * 3` must
/// not go out as `0.30000000000000004`.
pub fn commitment_string(usd_per_hour: f64) -> String {
    let s = format!("{usd_per_hour:.5}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The upfront payment for `payment`, on a plan whose total value is `total` USD. Partial
/// upfront must be "a whole number between 50 and 99 percent of the total value" (API
/// reference and model): the smallest whole number at or above half, if it fits.
pub fn upfront_payment(payment: Payment, total: f64) -> Result<f64, PurchaseError> {
    match payment {
        Payment::AllUpfront | Payment::Upfront => Ok(total),
        Payment::NoUpfront | Payment::Monthly => Ok(0.0),
        Payment::PartialUpfront => {
            // Cents of rounding error in `total` must not push the half above the whole number.
            let half = ((total * 0.5 * 100.0).round() / 100.0).ceil();
            let most = (total * 0.99).floor();
            if half > most {
                return Err(PurchaseError::permanent(
                    PermanentKind::Validation,
                    format!(
                        "a partial-upfront Savings Plan needs a whole-dollar upfront payment between 50 and 99 % of its total value; ${total:.2} is too small for one"
                    ),
                ));
            }
            Ok(half)
        }
    }
}

/// Whether a plan is bought and in force (or on its way): anything but the ended states of
/// `SavingsPlanState`, so a state the model may add counts as bought (the safe direction).
fn plan_is_live(state: Option<&SavingsPlanState>) -> bool {
    !matches!(
        state.map(SavingsPlanState::as_str),
        Some("payment-failed" | "retired" | "queued-deleted" | "pending-return" | "returned")
    )
}

/// The guard: the plan carrying the token, if any. An ended one (payment failed, returned,
/// deleted from the queue) is a permanent error: buying again is the operator's decision.
#[tracing::instrument(
    name = "provider_call",
    level = "debug",
    skip_all,
    fields(op = "savingsplans:DescribeSavingsPlans")
)]
async fn find_by_token(
    client: &aws_sdk_savingsplans::Client,
    tag_key: &str,
    token: &IdempotencyToken,
    how: How,
) -> Result<Option<Purchased>, PurchaseError> {
    let plans: Vec<SavingsPlan> = all_pages(|next| {
        let request = client
            .describe_savings_plans()
            .set_states(Some(GUARD_STATES.to_vec()))
            .max_results(1000)
            .set_next_token(next);
        async move {
            let out = request
                .send()
                .await
                .map_err(|e| lookup_failed("savingsplans:DescribeSavingsPlans", &e))?;
            let page = out
                .savings_plans()
                .iter()
                .filter(|p| {
                    p.tags()
                        .and_then(|t| t.get(tag_key))
                        .is_some_and(|v| v == token.as_str())
                })
                .cloned()
                .collect();
            Ok((page, out.next_token().map(str::to_owned)))
        }
    })
    .await?;
    let (live, ended): (Vec<_>, Vec<_>) = plans.into_iter().partition(|p| plan_is_live(p.state()));
    if live.len() > 1 {
        tracing::error!(
            plans = ?live.iter().filter_map(|p| p.savings_plan_id()).collect::<Vec<_>>(),
            "several live Savings Plans carry this item's token: it was bought more than once"
        );
    }
    if let Some(plan) = live.into_iter().next() {
        return Ok(Some(Purchased {
            commitment_id: plan.savings_plan_id().unwrap_or_default().to_owned(),
            cost_usd: plan
                .upfront_payment_amount()
                .and_then(|a| a.parse::<f64>().ok()),
            how,
            tag_pending: false,
        }));
    }
    match ended.first() {
        Some(plan) => Err(ended_commitment(
            "Savings Plan",
            plan.savings_plan_id().unwrap_or_default(),
            plan.state().map(|s| s.as_str()).unwrap_or("ended"),
            "submit the recommendation again under a new idempotency_key to buy it",
        )),
        None => Ok(None),
    }
}

#[tracing::instrument(
    name = "provider_call",
    level = "debug",
    skip_all,
    fields(op = "savingsplans:DescribeSavingsPlansOfferings")
)]
async fn resolve_offering(
    client: &aws_sdk_savingsplans::Client,
    rec: &Recommendation,
) -> Result<String, PurchaseError> {
    if let Some(id) = &rec.offering_id {
        return Ok(id.clone());
    }
    let mut lookup = client
        .describe_savings_plans_offerings()
        .plan_types(plan_type(rec.plan_type))
        .durations(rec.term.seconds())
        .payment_options(payment_option(rec.payment))
        .currencies(CurrencyCode::Usd);
    if rec.plan_type == Some(PlanType::Ec2Instance) {
        if let Some(region) = &rec.region {
            lookup = lookup.filters(
                SavingsPlanOfferingFilterElement::builder()
                    .name(SavingsPlanOfferingFilterAttribute::Region)
                    .values(region)
                    .build(),
            );
        }
        if let Some(family) = &rec.resource_type {
            lookup = lookup.filters(
                SavingsPlanOfferingFilterElement::builder()
                    .name(SavingsPlanOfferingFilterAttribute::InstanceFamily)
                    .values(family)
                    .build(),
            );
        }
    }
    let ids = all_pages(|next| {
        let request = lookup.clone().set_next_token(next);
        async move {
            let out = request.send().await.map_err(|e| {
                offering_lookup_failed("savingsplans:DescribeSavingsPlansOfferings", &e)
            })?;
            let page = out
                .search_results()
                .iter()
                .filter_map(|o| o.offering_id().map(str::to_owned))
                .collect();
            Ok((page, out.next_token().map(str::to_owned)))
        }
    })
    .await?;
    exactly_one(ids, &rec.describe())
}

#[async_trait]
impl Executor for SavingsPlans {
    async fn purchase(
        &self,
        req: &PurchaseRequest<'_>,
        ctx: &dyn PurchaseContext,
    ) -> Result<Purchased, PurchaseError> {
        let rec = req.rec;
        let client = self
            .aws
            .clients::<aws_sdk_savingsplans::Client>(&rec.account, SAVINGS_PLANS_REGION)
            .await?;
        let tag_key = ctx.tag_key();
        let commitment = rec.commitment_usd_per_hour.ok_or_else(|| {
            PurchaseError::permanent(
                PermanentKind::Validation,
                "commitment_usd_per_hour is required",
            )
        })?;

        if let Some(found) = find_by_token(&client.lookup, tag_key, req.token, How::Guard).await? {
            return Ok(found);
        }

        let offering_id = self
            .offerings
            .get_or_try(offering_key(rec), || resolve_offering(&client.lookup, rec))
            .await?;
        // AWS prices a plan by the commitment it sends back: the string, not the f64.
        let commitment_text = commitment_string(commitment);
        let hours = rec.term.seconds() as f64 / 3600.0;
        let total = commitment_text.parse::<f64>().unwrap_or(commitment) * hours;
        let upfront = upfront_payment(rec.payment, total)?;
        ctx.authorize_spend(upfront, &format!("savings plan offering {offering_id}"))
            .await?;
        ctx.settle_gate()?;

        let mut create = client
            .once
            .create_savings_plan()
            .savings_plan_offering_id(&offering_id)
            .commitment(&commitment_text)
            // Always set: the SDK would otherwise invent a fresh token per call.
            .client_token(req.token.as_str())
            .tags(tag_key, req.token.as_str());
        if rec.payment == Payment::PartialUpfront {
            create = create.upfront_payment_amount(format!("{upfront:.0}"));
        }
        let created = create
            .send()
            .instrument(tracing::debug_span!(
                "provider_call",
                op = "savingsplans:CreateSavingsPlan"
            ))
            .await;
        match created {
            Ok(out) => match out.savings_plan_id() {
                Some(id) if !id.is_empty() => Ok(Purchased {
                    commitment_id: id.to_owned(),
                    cost_usd: Some(upfront),
                    how: How::Purchased,
                    tag_pending: false,
                }),
                _ => Err(PurchaseError::ambiguous(
                    "savingsplans:CreateSavingsPlan answered without a savingsPlanId",
                )),
            },
            // The only client error the model declares for CreateSavingsPlan: after an earlier
            // call that may have gone through, it may be AWS refusing the token's reuse.
            Err(e) if code(&e) == Some("ValidationException") && req.ambiguous_at.is_some() => {
                match find_by_token(&client.lookup, tag_key, req.token, How::Recovered).await? {
                    Some(found) => Ok(found),
                    None => Err(PurchaseError::ambiguous(format!(
                        "savingsplans:CreateSavingsPlan refused a retry after an earlier call whose outcome is unknown, and no plan carries the token yet: {}",
                        classify_purchase("savingsplans:CreateSavingsPlan", &e).message()
                    ))),
                }
            }
            Err(e) => Err(classify_purchase("savingsplans:CreateSavingsPlan", &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{commitment_string, upfront_payment};
    use buyonce_shared::Payment;

    #[test]
    fn commitments_are_sent_with_at_most_five_decimals() {
        assert_eq!(commitment_string(0.1 * 3.0), "0.3");
        assert_eq!(commitment_string(1.25), "1.25");
        assert_eq!(commitment_string(2.0), "2");
        assert_eq!(commitment_string(0.123456789), "0.12346");
    }

    #[test]
    fn partial_upfront_is_a_whole_number_between_half_and_99_percent() {
        // 0.333 $/h × 8760 h = 2917.08 → half is 1458.54 → 1459.
        let total = 0.333 * 8760.0;
        let upfront = upfront_payment(Payment::PartialUpfront, total).unwrap();
        assert_eq!(upfront, 1459.0);
        assert_eq!(upfront.fract(), 0.0);
        assert!(upfront >= total * 0.5 && upfront <= total * 0.99);
        // An exact half stays as it is.
        assert_eq!(
            upfront_payment(Payment::PartialUpfront, 2000.0).unwrap(),
            1000.0
        );
        // Too small for a whole dollar inside the range: refused, not rounded out of it.
        assert!(upfront_payment(Payment::PartialUpfront, 1.0).is_err());
        assert_eq!(upfront_payment(Payment::PartialUpfront, 1.5).unwrap(), 1.0);
        assert_eq!(upfront_payment(Payment::AllUpfront, 12.5).unwrap(), 12.5);
        assert_eq!(upfront_payment(Payment::NoUpfront, 12.5).unwrap(), 0.0);
    }
}
