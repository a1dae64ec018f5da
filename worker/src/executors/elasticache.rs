//! ElastiCache reserved nodes: `ReservedCacheNodeId = reservation_id("ec-", token)`.
//!
//! Guard: describe by ID (`ReservedCacheNodeNotFound` → proceed, other failures → refuse).
//! Backstop: HTTP 404 `ReservedCacheNodeAlreadyExists` → recover the existing reservation.

use async_trait::async_trait;
use aws_sdk_elasticache::types::{ReservedCacheNode, Tag};

use super::aws_errors::{classify, code, lookup_failed};
use super::{
    all_pages, exactly_one, offering_key, required, Executor, How, OfferingCache, PurchaseContext,
    PurchaseError, PurchaseRequest, Purchased,
};
use crate::aws::{no_retry, AwsClients};

const MAX_ID: usize = 60;

pub struct ElastiCache {
    aws: AwsClients,
    offerings: OfferingCache<(String, f64)>,
}

impl ElastiCache {
    pub fn new(aws: AwsClients) -> Self {
        Self {
            aws,
            offerings: OfferingCache::default(),
        }
    }
}

fn found(r: &ReservedCacheNode, how: How) -> Purchased {
    Purchased {
        commitment_id: r.reserved_cache_node_id().unwrap_or_default().to_owned(),
        cost_usd: r
            .fixed_price()
            .map(|p| p * f64::from(r.cache_node_count().unwrap_or(1))),
        how,
        tag_pending: false,
    }
}

async fn describe(
    client: &aws_sdk_elasticache::Client,
    id: &str,
) -> Result<Option<ReservedCacheNode>, PurchaseError> {
    match client
        .describe_reserved_cache_nodes()
        .reserved_cache_node_id(id)
        .send()
        .await
    {
        Ok(out) => Ok(out.reserved_cache_nodes().first().cloned()),
        Err(e) if code(&e) == Some("ReservedCacheNodeNotFound") => Ok(None),
        Err(e) => Err(lookup_failed("elasticache:DescribeReservedCacheNodes", &e)),
    }
}

#[async_trait]
impl Executor for ElastiCache {
    async fn purchase(
        &self,
        req: &PurchaseRequest<'_>,
        ctx: &dyn PurchaseContext,
    ) -> Result<Purchased, PurchaseError> {
        let rec = req.rec;
        let region = required(&rec.region, "region")?;
        let client = self.aws.elasticache(&rec.account, region).await?;
        let id = req.token.reservation_id("ec-", MAX_ID);
        let count = rec.units() as i32;

        if let Some(existing) = describe(&client, &id).await? {
            return Ok(found(&existing, How::Guard));
        }

        let (offering_id, price) = self
            .offerings
            .get_or_try(offering_key(rec), || async {
                let mut lookup = client.describe_reserved_cache_nodes_offerings();
                match &rec.offering_id {
                    Some(oid) => lookup = lookup.reserved_cache_nodes_offering_id(oid),
                    None => {
                        lookup = lookup
                            .cache_node_type(required(&rec.resource_type, "resource_type")?)
                            .duration(rec.term.seconds().to_string())
                            .product_description(
                                rec.engine.clone().unwrap_or_else(|| "redis".into()),
                            )
                            .offering_type(rec.payment.aws_offering_type())
                    }
                }
                let offerings = all_pages(|marker| {
                    let request = lookup.clone().set_marker(marker);
                    async move {
                        let out = request.send().await.map_err(|e| {
                            lookup_failed("elasticache:DescribeReservedCacheNodesOfferings", &e)
                        })?;
                        let page = out
                            .reserved_cache_nodes_offerings()
                            .iter()
                            .map(|o| {
                                (
                                    o.reserved_cache_nodes_offering_id()
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
        ctx.authorize_spend(
            upfront,
            &format!("ElastiCache offering {offering_id} x{count}"),
        )
        .await?;

        let result = client
            .purchase_reserved_cache_nodes_offering()
            .reserved_cache_nodes_offering_id(&offering_id)
            .reserved_cache_node_id(&id)
            .cache_node_count(count)
            .tags(
                Tag::builder()
                    .key(ctx.tag_key())
                    .value(req.token.as_str())
                    .build(),
            )
            .customize()
            .config_override(
                aws_sdk_elasticache::config::Builder::default().retry_config(no_retry()),
            )
            .send()
            .await;
        match result {
            Ok(out) => match out.reserved_cache_node() {
                Some(r) => Ok(found(r, How::Purchased)),
                None => Err(PurchaseError::transient("elasticache: purchase returned no reservation")),
            },
            Err(e) if code(&e) == Some("ReservedCacheNodeAlreadyExists") => match describe(&client, &id).await? {
                Some(r) => Ok(found(&r, How::Recovered)),
                None => Err(PurchaseError::transient(
                    "elasticache: ReservedCacheNodeAlreadyExists but the reservation is not visible yet",
                )),
            },
            Err(e) => Err(classify("elasticache:PurchaseReservedCacheNodesOffering", &e)),
        }
    }
}
