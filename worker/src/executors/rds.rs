//! RDS reserved DB instances: `ReservedDBInstanceId = reservation_id("rds-", token)`.
//!
//! Guard: describe by that ID (`ReservedDBInstanceNotFound` → proceed, any other failure →
//! refuse). Backstop: RDS answers a duplicate ID with HTTP 404 `ReservedDBInstanceAlreadyExists`;
//! the existing reservation is recovered.

use async_trait::async_trait;
use aws_sdk_rds::types::{ReservedDbInstance, Tag};

use super::aws_errors::{classify, code, lookup_failed};
use super::{
    all_pages, exactly_one, offering_key, required, Executor, How, OfferingCache, PurchaseContext,
    PurchaseError, PurchaseRequest, Purchased,
};
use crate::aws::{no_retry, AwsClients};

/// RDS reservation IDs: letters, digits and hyphens; 44 characters here.
const MAX_ID: usize = 60;

pub struct Rds {
    aws: AwsClients,
    offerings: OfferingCache<(String, f64)>,
}

impl Rds {
    pub fn new(aws: AwsClients) -> Self {
        Self {
            aws,
            offerings: OfferingCache::default(),
        }
    }
}

fn found(r: &ReservedDbInstance, how: How) -> Purchased {
    Purchased {
        commitment_id: r.reserved_db_instance_id().unwrap_or_default().to_owned(),
        cost_usd: r
            .fixed_price()
            .map(|p| p * f64::from(r.db_instance_count().unwrap_or(1))),
        how,
        tag_pending: false,
    }
}

async fn describe(
    client: &aws_sdk_rds::Client,
    id: &str,
) -> Result<Option<ReservedDbInstance>, PurchaseError> {
    match client
        .describe_reserved_db_instances()
        .reserved_db_instance_id(id)
        .send()
        .await
    {
        Ok(out) => Ok(out.reserved_db_instances().first().cloned()),
        Err(e) if code(&e) == Some("ReservedDBInstanceNotFound") => Ok(None),
        Err(e) => Err(lookup_failed("rds:DescribeReservedDBInstances", &e)),
    }
}

#[async_trait]
impl Executor for Rds {
    async fn purchase(
        &self,
        req: &PurchaseRequest<'_>,
        ctx: &dyn PurchaseContext,
    ) -> Result<Purchased, PurchaseError> {
        let rec = req.rec;
        let region = required(&rec.region, "region")?;
        let client = self.aws.rds(&rec.account, region).await?;
        let id = req.token.reservation_id("rds-", MAX_ID);
        let count = rec.units() as i32;

        if let Some(existing) = describe(&client, &id).await? {
            return Ok(found(&existing, How::Guard));
        }

        let (offering_id, price) = self
            .offerings
            .get_or_try(offering_key(rec), || async {
                let mut lookup = client.describe_reserved_db_instances_offerings();
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
                let offerings = all_pages(|marker| {
                    let request = lookup.clone().set_marker(marker);
                    async move {
                        let out = request.send().await.map_err(|e| {
                            lookup_failed("rds:DescribeReservedDBInstancesOfferings", &e)
                        })?;
                        let page = out
                            .reserved_db_instances_offerings()
                            .iter()
                            .map(|o| {
                                (
                                    o.reserved_db_instances_offering_id()
                                        .unwrap_or_default()
                                        .to_owned(),
                                    o.fixed_price().unwrap_or(0.0),
                                )
                            })
                            .collect();
                        Ok((page, out.marker().map(str::to_owned)))
                    }
                })
                .await?;
                exactly_one(offerings, &rec.describe())
            })
            .await?;

        let upfront = price * f64::from(count);
        ctx.authorize_spend(upfront, &format!("RDS offering {offering_id} x{count}"))
            .await?;

        let result = client
            .purchase_reserved_db_instances_offering()
            .reserved_db_instances_offering_id(&offering_id)
            .reserved_db_instance_id(&id)
            .db_instance_count(count)
            .tags(
                Tag::builder()
                    .key(ctx.tag_key())
                    .value(req.token.as_str())
                    .build(),
            )
            .customize()
            .config_override(aws_sdk_rds::config::Builder::default().retry_config(no_retry()))
            .send()
            .await;
        match result {
            Ok(out) => match out.reserved_db_instance() {
                Some(r) => Ok(found(r, How::Purchased)),
                None => Err(PurchaseError::transient(
                    "rds: purchase returned no reservation",
                )),
            },
            // The ID is ours: an earlier attempt bought it (its response was lost).
            Err(e) if code(&e) == Some("ReservedDBInstanceAlreadyExists") => match describe(
                &client, &id,
            )
            .await?
            {
                Some(r) => Ok(found(&r, How::Recovered)),
                None => Err(PurchaseError::transient(
                    "rds: ReservedDBInstanceAlreadyExists but the reservation is not visible yet",
                )),
            },
            Err(e) => Err(classify("rds:PurchaseReservedDBInstancesOffering", &e)),
        }
    }
}
