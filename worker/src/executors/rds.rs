//! RDS reserved DB instances: `ReservedDBInstanceId = reservation_id("rds-", token)`.
//!
//! Guard: describe by that ID (`ReservedDBInstanceNotFound` → proceed, any other failure →
//! refuse). Backstop: the model's `ReservedDBInstanceAlreadyExistsFault` ("User already has a
//! reservation with the given identifier", HTTP 404) → the existing reservation is recovered.
//! The flow is [`super::by_handle`].

use async_trait::async_trait;
use aws_sdk_rds::types::{ReservedDbInstance, Tag};
use buyonce_shared::{IdempotencyToken, Recommendation};

use super::by_handle::{purchase_answer, Bought, ByHandle, HandleService, Offering, Reservation};
use super::{all_pages, required, PurchaseError};
use crate::clients::aws::errors::{code, lookup_failed, offering_lookup_failed};
use crate::clients::aws::Clients;

/// RDS reservation IDs: letters, digits and hyphens; 44 characters here.
const MAX_ID: usize = 60;

/// The RDS executor.
pub type Rds = ByHandle<RdsService>;

pub struct RdsService;

fn reservation(r: &ReservedDbInstance) -> Reservation {
    let count = r.db_instance_count();
    Reservation {
        id: r.reserved_db_instance_id().unwrap_or_default().to_owned(),
        state: r.state().map(str::to_owned),
        count,
        cost_usd: r.fixed_price().map(|p| p * f64::from(count.unwrap_or(1))),
        matches_recommendation: true,
    }
}

#[async_trait]
impl HandleService for RdsService {
    const NAME: &'static str = "rds";
    const UNIQUE_HANDLE: bool = true;
    type Sdk = aws_sdk_rds::Client;

    fn handle(token: &IdempotencyToken) -> Result<String, PurchaseError> {
        Ok(token.reservation_id("rds-", MAX_ID))
    }

    #[tracing::instrument(
        name = "provider_call",
        level = "debug",
        skip_all,
        fields(op = "rds:DescribeReservedDBInstances")
    )]
    async fn find(
        client: &Clients<Self::Sdk>,
        handle: &str,
        _rec: &Recommendation,
    ) -> Result<Vec<Reservation>, PurchaseError> {
        match client
            .lookup
            .describe_reserved_db_instances()
            .reserved_db_instance_id(handle)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .reserved_db_instances()
                .iter()
                .map(reservation)
                .collect()),
            Err(e) if code(&e) == Some("ReservedDBInstanceNotFound") => Ok(Vec::new()),
            Err(e) => Err(lookup_failed("rds:DescribeReservedDBInstances", &e)),
        }
    }

    #[tracing::instrument(
        name = "provider_call",
        level = "debug",
        skip_all,
        fields(op = "rds:DescribeReservedDBInstancesOfferings")
    )]
    async fn offerings(
        client: &Clients<Self::Sdk>,
        rec: &Recommendation,
    ) -> Result<Vec<Offering>, PurchaseError> {
        let mut lookup = client.lookup.describe_reserved_db_instances_offerings();
        match &rec.offering_id {
            Some(oid) => lookup = lookup.reserved_db_instances_offering_id(oid),
            None => {
                lookup = lookup
                    .db_instance_class(required(&rec.resource_type, "resource_type")?)
                    .duration(rec.term.seconds().to_string())
                    .product_description(required(&rec.engine, "engine")?)
                    .offering_type(rec.payment.aws_offering_type())
                    .multi_az(rec.multi_az.unwrap_or(false))
            }
        }
        all_pages(|marker| {
            let request = lookup.clone().set_marker(marker);
            async move {
                let out = request.send().await.map_err(|e| {
                    offering_lookup_failed("rds:DescribeReservedDBInstancesOfferings", &e)
                })?;
                let page = out
                    .reserved_db_instances_offerings()
                    .iter()
                    .map(|o| Offering {
                        id: o
                            .reserved_db_instances_offering_id()
                            .unwrap_or_default()
                            .to_owned(),
                        fixed_price: o.fixed_price().unwrap_or(0.0),
                    })
                    .collect();
                Ok((page, out.marker().map(str::to_owned)))
            }
        })
        .await
    }

    #[tracing::instrument(
        name = "provider_call",
        level = "debug",
        skip_all,
        fields(op = "rds:PurchaseReservedDBInstancesOffering")
    )]
    async fn buy(
        client: &Clients<Self::Sdk>,
        offering: &Offering,
        handle: &str,
        count: i32,
        (tag_key, token): (&str, &str),
    ) -> Result<Bought, PurchaseError> {
        let result = client
            .once
            .purchase_reserved_db_instances_offering()
            .reserved_db_instances_offering_id(&offering.id)
            .reserved_db_instance_id(handle)
            .db_instance_count(count)
            .tags(Tag::builder().key(tag_key).value(token).build())
            .send()
            .await;
        purchase_answer(
            "rds:PurchaseReservedDBInstancesOffering",
            result,
            "ReservedDBInstanceAlreadyExists",
            |out| out.reserved_db_instance().map(reservation),
        )
    }
}
