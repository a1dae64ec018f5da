//! OpenSearch reserved instances: `ReservationName = "buyonce-" + 40 hex of the token`.
//!
//! Guard: list reservations (all pages) and match the name. Backstop: a duplicate name is
//! answered with 409 `ResourceAlreadyExistsException` (other OpenSearch errors are 409 too, so
//! the error type is matched, never the status) → recover by name. The SDK does not check the
//! 5–64 character rule for names, so it is checked here.

use async_trait::async_trait;
use aws_sdk_opensearch::types::{ReservedInstance, ReservedInstancePaymentOption};
use buyonce_shared::{IdempotencyToken, Payment};

use super::aws_errors::{classify, code, lookup_failed};
use super::{
    all_pages, exactly_one, offering_key, required, Executor, How, OfferingCache, PermanentKind,
    PurchaseContext, PurchaseError, PurchaseRequest, Purchased,
};
use crate::aws::{no_retry, AwsClients};

pub struct OpenSearch {
    aws: AwsClients,
    offerings: OfferingCache<(String, f64)>,
}

impl OpenSearch {
    pub fn new(aws: AwsClients) -> Self {
        Self {
            aws,
            offerings: OfferingCache::default(),
        }
    }
}

/// The reservation name for a token, validated against OpenSearch's 5–64 character rule.
pub fn reservation_name(token: &IdempotencyToken) -> Result<String, PurchaseError> {
    let name = token.reservation_id("buyonce-", 64);
    if !(5..=64).contains(&name.len()) {
        return Err(PurchaseError::permanent(
            PermanentKind::Validation,
            format!(
                "OpenSearch reservation name must be 5-64 characters, got {}",
                name.len()
            ),
        ));
    }
    Ok(name)
}

fn found(r: &ReservedInstance, how: How) -> Purchased {
    Purchased {
        commitment_id: r.reserved_instance_id().unwrap_or_default().to_owned(),
        cost_usd: r
            .fixed_price()
            .map(|p| p * f64::from(r.instance_count().max(1))),
        how,
        tag_pending: false,
    }
}

async fn find_by_name(
    client: &aws_sdk_opensearch::Client,
    name: &str,
) -> Result<Option<ReservedInstance>, PurchaseError> {
    let mut next = None;
    loop {
        let out = client
            .describe_reserved_instances()
            .set_next_token(next)
            .max_results(100)
            .send()
            .await
            .map_err(|e| lookup_failed("opensearch:DescribeReservedInstances", &e))?;
        if let Some(r) = out
            .reserved_instances()
            .iter()
            .find(|r| r.reservation_name() == Some(name))
        {
            return Ok(Some(r.clone()));
        }
        next = out
            .next_token()
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        if next.is_none() {
            return Ok(None);
        }
    }
}

fn payment_option(p: Payment) -> ReservedInstancePaymentOption {
    match p {
        Payment::AllUpfront | Payment::Upfront => ReservedInstancePaymentOption::AllUpfront,
        Payment::PartialUpfront => ReservedInstancePaymentOption::PartialUpfront,
        Payment::NoUpfront | Payment::Monthly => ReservedInstancePaymentOption::NoUpfront,
    }
}

#[async_trait]
impl Executor for OpenSearch {
    async fn purchase(
        &self,
        req: &PurchaseRequest<'_>,
        ctx: &dyn PurchaseContext,
    ) -> Result<Purchased, PurchaseError> {
        let rec = req.rec;
        let region = required(&rec.region, "region")?;
        let name = reservation_name(req.token)?;
        let client = self.aws.opensearch(&rec.account, region).await?;
        let count = rec.units() as i32;

        if let Some(existing) = find_by_name(&client, &name).await? {
            return Ok(found(&existing, How::Guard));
        }

        let instance_type = required(&rec.resource_type, "resource_type")?;
        let wanted_payment = payment_option(rec.payment);
        let (offering_id, price) = self
            .offerings
            .get_or_try(offering_key(rec), || async {
                let wanted_payment = &wanted_payment;
                let offerings = all_pages(|next| {
                    let mut lookup = client
                        .describe_reserved_instance_offerings()
                        .max_results(100);
                    if let Some(oid) = &rec.offering_id {
                        lookup = lookup.reserved_instance_offering_id(oid);
                    }
                    let request = lookup.set_next_token(next);
                    async move {
                        let out = request.send().await.map_err(|e| {
                            lookup_failed("opensearch:DescribeReservedInstanceOfferings", &e)
                        })?;
                        let page = out
                            .reserved_instance_offerings()
                            .iter()
                            .filter(|o| {
                                rec.offering_id.is_some()
                                    || (o.instance_type().map(|t| t.as_str())
                                        == Some(instance_type)
                                        && i64::from(o.duration()) == rec.term.seconds()
                                        && o.payment_option() == Some(wanted_payment))
                            })
                            .map(|o| {
                                (
                                    o.reserved_instance_offering_id()
                                        .unwrap_or_default()
                                        .to_owned(),
                                    o.fixed_price().unwrap_or(0.0),
                                )
                            })
                            .collect();
                        Ok((page, out.next_token().map(str::to_owned)))
                    }
                })
                .await?;
                exactly_one(offerings, &rec.describe())
            })
            .await?;

        let upfront = price * f64::from(count);
        ctx.authorize_spend(
            upfront,
            &format!("OpenSearch offering {offering_id} x{count}"),
        )
        .await?;

        let result = client
            .purchase_reserved_instance_offering()
            .reserved_instance_offering_id(&offering_id)
            .reservation_name(&name)
            .instance_count(count)
            .customize()
            .config_override(
                aws_sdk_opensearch::config::Builder::default().retry_config(no_retry()),
            )
            .send()
            .await;
        match result {
            Ok(out) => Ok(Purchased {
                commitment_id: out.reserved_instance_id().unwrap_or_default().to_owned(),
                cost_usd: Some(upfront),
                how: How::Purchased,
                tag_pending: false,
            }),
            // Match the type, not the status: OpenSearch answers 409 for other errors too.
            Err(e) if code(&e) == Some("ResourceAlreadyExistsException") => {
                match find_by_name(&client, &name).await? {
                    Some(r) => Ok(found(&r, How::Recovered)),
                    None => Err(PurchaseError::transient(
                        "opensearch: name already exists but the reservation is not visible yet",
                    )),
                }
            }
            Err(e) => Err(classify("opensearch:PurchaseReservedInstanceOffering", &e)),
        }
    }
}
