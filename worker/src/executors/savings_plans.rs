//! Savings Plans: `CreateSavingsPlan` with `clientToken = token`; AWS dedupes natively.
//!
//! The SDK invents a random `clientToken` on every call when none is set, which would make a
//! retry a second purchase — so it is always set, to the token. The token is also written as a
//! tag for people looking at the plan in the console.

use async_trait::async_trait;
use aws_sdk_savingsplans::types::{
    CurrencyCode, SavingsPlanOfferingFilterAttribute, SavingsPlanOfferingFilterElement,
    SavingsPlanPaymentOption, SavingsPlanType,
};
use buyonce_shared::document::PlanType;
use buyonce_shared::Payment;

use super::aws_errors::{classify, lookup_failed};
use super::{
    exactly_one, offering_key, Executor, How, OfferingCache, PermanentKind, PurchaseContext,
    PurchaseError, PurchaseRequest, Purchased,
};
use crate::aws::{no_retry, AwsClients};

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

/// Upfront share of the total commitment: all, half (AWS's default split), or nothing.
fn upfront_fraction(p: Payment) -> f64 {
    match p {
        Payment::AllUpfront | Payment::Upfront => 1.0,
        Payment::PartialUpfront => 0.5,
        Payment::NoUpfront | Payment::Monthly => 0.0,
    }
}

/// AWS takes the hourly commitment as a string with at most five decimals; `0.1 * 3` must
/// not go out as `0.30000000000000004`.
pub fn commitment_string(usd_per_hour: f64) -> String {
    let s = format!("{usd_per_hour:.5}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[async_trait]
impl Executor for SavingsPlans {
    async fn purchase(
        &self,
        req: &PurchaseRequest<'_>,
        ctx: &dyn PurchaseContext,
    ) -> Result<Purchased, PurchaseError> {
        let rec = req.rec;
        let client = self.aws.savings_plans(&rec.account).await?;
        let commitment = rec.commitment_usd_per_hour.ok_or_else(|| {
            PurchaseError::permanent(
                PermanentKind::Validation,
                "commitment_usd_per_hour is required",
            )
        })?;

        let offering_id = self
            .offerings
            .get_or_try(offering_key(rec), || async {
                Ok(match &rec.offering_id {
                    Some(id) => id.clone(),
                    None => {
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
                        let out = lookup.send().await.map_err(|e| {
                            lookup_failed("savingsplans:DescribeSavingsPlansOfferings", &e)
                        })?;
                        let ids: Vec<String> = out
                            .search_results()
                            .iter()
                            .filter_map(|o| o.offering_id().map(str::to_owned))
                            .collect();
                        exactly_one(ids, &rec.describe())?
                    }
                })
            })
            .await?;

        let hours = rec.term.seconds() as f64 / 3600.0;
        let upfront = commitment * hours * upfront_fraction(rec.payment);
        ctx.authorize_spend(upfront, &format!("savings plan offering {offering_id}"))
            .await?;

        let mut create = client
            .create_savings_plan()
            .savings_plan_offering_id(&offering_id)
            .commitment(commitment_string(commitment))
            // Always set: the SDK would otherwise invent a fresh token per call.
            .client_token(req.token.as_str())
            .tags(ctx.tag_key(), req.token.as_str());
        if rec.payment == Payment::PartialUpfront {
            create = create.upfront_payment_amount(format!("{upfront:.2}"));
        }
        let created = create
            .customize()
            .config_override(
                aws_sdk_savingsplans::config::Builder::default().retry_config(no_retry()),
            )
            .send()
            .await
            .map_err(|e| classify("savingsplans:CreateSavingsPlan", &e))?;
        let plan_id = created.savings_plan_id().unwrap_or_default().to_owned();
        if plan_id.is_empty() {
            return Err(PurchaseError::transient(
                "savingsplans:CreateSavingsPlan returned no savingsPlanId",
            ));
        }

        // No re-read: with a reused client token AWS returns the existing plan only for the
        // same parameters (different ones are refused), so its upfront amount is this one.
        Ok(Purchased {
            commitment_id: plan_id,
            cost_usd: Some(upfront),
            how: How::Purchased,
            tag_pending: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::commitment_string;

    #[test]
    fn commitments_are_sent_with_at_most_five_decimals() {
        assert_eq!(commitment_string(0.1 * 3.0), "0.3");
        assert_eq!(commitment_string(1.25), "1.25");
        assert_eq!(commitment_string(2.0), "2");
        assert_eq!(commitment_string(0.123456789), "0.12346");
    }
}
