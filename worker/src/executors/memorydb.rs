//! MemoryDB reserved nodes: `ReservationId = reservation_id("mdb-", token)`.
//!
//! Guard: describe by reservation ID (`ReservedNodeNotFoundFault` → proceed, other failures →
//! refuse). Backstop: 400 `ReservedNodeAlreadyExistsFault` (awsJson `__type`) → recover.

use async_trait::async_trait;
use aws_sdk_memorydb::types::{ReservedNode, Tag};

use super::aws_errors::{classify, code, lookup_failed};
use super::{
    all_pages, exactly_one, offering_key, required, Executor, How, OfferingCache, PurchaseContext,
    PurchaseError, PurchaseRequest, Purchased,
};
use crate::aws::{no_retry, AwsClients};

const MAX_ID: usize = 60;

pub struct MemoryDb {
    aws: AwsClients,
    offerings: OfferingCache<(String, f64)>,
}

impl MemoryDb {
    pub fn new(aws: AwsClients) -> Self {
        Self {
            aws,
            offerings: OfferingCache::default(),
        }
    }
}

fn found(r: &ReservedNode, how: How) -> Purchased {
    Purchased {
        commitment_id: r.reservation_id().unwrap_or_default().to_owned(),
        cost_usd: Some(r.fixed_price() * f64::from(r.node_count().max(1))),
        how,
        tag_pending: false,
    }
}

async fn describe(
    client: &aws_sdk_memorydb::Client,
    id: &str,
) -> Result<Option<ReservedNode>, PurchaseError> {
    match client
        .describe_reserved_nodes()
        .reservation_id(id)
        .send()
        .await
    {
        Ok(out) => Ok(out.reserved_nodes().first().cloned()),
        Err(e) if code(&e) == Some("ReservedNodeNotFoundFault") => Ok(None),
        Err(e) => Err(lookup_failed("memorydb:DescribeReservedNodes", &e)),
    }
}

#[async_trait]
impl Executor for MemoryDb {
    async fn purchase(
        &self,
        req: &PurchaseRequest<'_>,
        ctx: &dyn PurchaseContext,
    ) -> Result<Purchased, PurchaseError> {
        let rec = req.rec;
        let region = required(&rec.region, "region")?;
        let client = self.aws.memorydb(&rec.account, region).await?;
        let id = req.token.reservation_id("mdb-", MAX_ID);
        let count = rec.units() as i32;

        if let Some(existing) = describe(&client, &id).await? {
            return Ok(found(&existing, How::Guard));
        }

        let (offering_id, price) = self
            .offerings
            .get_or_try(offering_key(rec), || async {
                let mut lookup = client.describe_reserved_nodes_offerings();
                match &rec.offering_id {
                    Some(oid) => lookup = lookup.reserved_nodes_offering_id(oid),
                    None => {
                        lookup = lookup
                            .node_type(required(&rec.resource_type, "resource_type")?)
                            .duration(rec.term.seconds().to_string())
                            .offering_type(rec.payment.aws_offering_type())
                    }
                }
                let offerings = all_pages(|next| {
                    let request = lookup.clone().set_next_token(next);
                    async move {
                        let out = request.send().await.map_err(|e| {
                            lookup_failed("memorydb:DescribeReservedNodesOfferings", &e)
                        })?;
                        let page = out
                            .reserved_nodes_offerings()
                            .iter()
                            .map(|o| {
                                (
                                    o.reserved_nodes_offering_id()
                                        .unwrap_or_default()
                                        .to_owned(),
                                    o.fixed_price(),
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
            &format!("MemoryDB offering {offering_id} x{count}"),
        )
        .await?;

        let result = client
            .purchase_reserved_nodes_offering()
            .reserved_nodes_offering_id(&offering_id)
            .reservation_id(&id)
            .node_count(count)
            .tags(
                Tag::builder()
                    .key(ctx.tag_key())
                    .value(req.token.as_str())
                    .build(),
            )
            .customize()
            .config_override(aws_sdk_memorydb::config::Builder::default().retry_config(no_retry()))
            .send()
            .await;
        match result {
            Ok(out) => match out.reserved_node() {
                Some(r) => Ok(found(r, How::Purchased)),
                None => Err(PurchaseError::transient("memorydb: purchase returned no reservation")),
            },
            Err(e) if code(&e) == Some("ReservedNodeAlreadyExistsFault") => match describe(&client, &id).await? {
                Some(r) => Ok(found(&r, How::Recovered)),
                None => Err(PurchaseError::transient(
                    "memorydb: ReservedNodeAlreadyExistsFault but the reservation is not visible yet",
                )),
            },
            Err(e) => Err(classify("memorydb:PurchaseReservedNodesOffering", &e)),
        }
    }
}
