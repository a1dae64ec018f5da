//! OpenSearch reserved instances: `ReservationName = "buyonce-" + 40 hex of the token`.
//!
//! The model constrains the name to 5–64 characters (pattern `.*`) and says nothing about it
//! being unique, so nothing here relies on that: the guard lists the reservations (all pages —
//! the API cannot filter by name) and takes one only if it carries the name **and** the
//! recommendation's instance type, term, payment option and count; after an ambiguous purchase
//! call the settle gate keeps a retry from buying again until the first purchase had time to
//! appear. `ResourceAlreadyExistsException` (409, like several other OpenSearch errors: the type
//! is matched, never the status) is recovered the same way. The SDK does not check the name's
//! length, so it is checked here. The flow is [`super::by_handle`].

use async_trait::async_trait;
use aws_sdk_opensearch::types::{ReservedInstance, ReservedInstancePaymentOption};
use buyonce_shared::{IdempotencyToken, Payment, Recommendation};

use super::by_handle::{purchase_answer, Bought, ByHandle, HandleService, Offering, Reservation};
use super::{all_pages, required, PermanentKind, PurchaseError};
use crate::clients::aws::errors::{lookup_failed, offering_lookup_failed};
use crate::clients::aws::Clients;

/// The OpenSearch executor.
pub type OpenSearch = ByHandle<OpenSearchService>;

pub struct OpenSearchService;

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

fn payment_option(p: Payment) -> ReservedInstancePaymentOption {
    match p {
        Payment::AllUpfront | Payment::Upfront => ReservedInstancePaymentOption::AllUpfront,
        Payment::PartialUpfront => ReservedInstancePaymentOption::PartialUpfront,
        Payment::NoUpfront | Payment::Monthly => ReservedInstancePaymentOption::NoUpfront,
    }
}

fn same_attributes(r: &ReservedInstance, rec: &Recommendation) -> bool {
    let offering = match &rec.offering_id {
        Some(id) => r.reserved_instance_offering_id() == Some(id.as_str()),
        None => {
            r.instance_type().map(|t| t.as_str()) == rec.resource_type.as_deref()
                && i64::from(r.duration()) == rec.term.seconds()
                && r.payment_option() == Some(&payment_option(rec.payment))
        }
    };
    offering && r.instance_count() == rec.units() as i32
}

fn reservation(r: &ReservedInstance, rec: &Recommendation) -> Reservation {
    Reservation {
        id: r.reserved_instance_id().unwrap_or_default().to_owned(),
        state: r.state().map(str::to_owned),
        count: Some(r.instance_count()),
        cost_usd: r
            .fixed_price()
            .map(|p| p * f64::from(r.instance_count().max(1))),
        matches_recommendation: same_attributes(r, rec),
    }
}

#[async_trait]
impl HandleService for OpenSearchService {
    const NAME: &'static str = "opensearch";
    const UNIQUE_HANDLE: bool = false;
    type Sdk = aws_sdk_opensearch::Client;

    fn handle(token: &IdempotencyToken) -> Result<String, PurchaseError> {
        reservation_name(token)
    }

    #[tracing::instrument(
        name = "provider_call",
        level = "debug",
        skip_all,
        fields(op = "opensearch:DescribeReservedInstances")
    )]
    async fn find(
        client: &Clients<Self::Sdk>,
        handle: &str,
        rec: &Recommendation,
    ) -> Result<Vec<Reservation>, PurchaseError> {
        all_pages(|next| {
            let request = client
                .lookup
                .describe_reserved_instances()
                .set_next_token(next)
                .max_results(100);
            async move {
                let out = request
                    .send()
                    .await
                    .map_err(|e| lookup_failed("opensearch:DescribeReservedInstances", &e))?;
                let page = out
                    .reserved_instances()
                    .iter()
                    .filter(|r| r.reservation_name() == Some(handle))
                    .map(|r| reservation(r, rec))
                    .collect();
                Ok((page, out.next_token().map(str::to_owned)))
            }
        })
        .await
    }

    #[tracing::instrument(
        name = "provider_call",
        level = "debug",
        skip_all,
        fields(op = "opensearch:DescribeReservedInstanceOfferings")
    )]
    async fn offerings(
        client: &Clients<Self::Sdk>,
        rec: &Recommendation,
    ) -> Result<Vec<Offering>, PurchaseError> {
        let instance_type = required(&rec.resource_type, "resource_type")?;
        let wanted_payment = payment_option(rec.payment);
        all_pages(|next| {
            let mut lookup = client
                .lookup
                .describe_reserved_instance_offerings()
                .max_results(100);
            if let Some(oid) = &rec.offering_id {
                lookup = lookup.reserved_instance_offering_id(oid);
            }
            let request = lookup.set_next_token(next);
            let wanted_payment = &wanted_payment;
            async move {
                let out = request.send().await.map_err(|e| {
                    offering_lookup_failed("opensearch:DescribeReservedInstanceOfferings", &e)
                })?;
                let page = out
                    .reserved_instance_offerings()
                    .iter()
                    .filter(|o| {
                        rec.offering_id.is_some()
                            || (o.instance_type().map(|t| t.as_str()) == Some(instance_type)
                                && i64::from(o.duration()) == rec.term.seconds()
                                && o.payment_option() == Some(wanted_payment))
                    })
                    .map(|o| Offering {
                        id: o
                            .reserved_instance_offering_id()
                            .unwrap_or_default()
                            .to_owned(),
                        fixed_price: o.fixed_price().unwrap_or(0.0),
                    })
                    .collect();
                Ok((page, out.next_token().map(str::to_owned)))
            }
        })
        .await
    }

    #[tracing::instrument(
        name = "provider_call",
        level = "debug",
        skip_all,
        fields(op = "opensearch:PurchaseReservedInstanceOffering")
    )]
    async fn buy(
        client: &Clients<Self::Sdk>,
        offering: &Offering,
        handle: &str,
        count: i32,
        _tag: (&str, &str),
    ) -> Result<Bought, PurchaseError> {
        let result = client
            .once
            .purchase_reserved_instance_offering()
            .reserved_instance_offering_id(&offering.id)
            .reservation_name(handle)
            .instance_count(count)
            .send()
            .await;
        purchase_answer(
            "opensearch:PurchaseReservedInstanceOffering",
            result,
            "ResourceAlreadyExistsException",
            |out| {
                Some(Reservation {
                    id: out.reserved_instance_id().unwrap_or_default().to_owned(),
                    state: None,
                    count: Some(count),
                    cost_usd: Some(offering.fixed_price * f64::from(count)),
                    matches_recommendation: true,
                })
            },
        )
    }
}
