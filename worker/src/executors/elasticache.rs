//! ElastiCache reserved nodes: `ReservedCacheNodeId = reservation_id("ec-", token)`.
//!
//! Guard: describe by ID (`ReservedCacheNodeNotFound` → proceed, other failures → refuse).
//! Backstop: the model's `ReservedCacheNodeAlreadyExistsFault` ("You already have a reservation
//! with the given identifier", HTTP 404) → recover the existing reservation. The flow is
//! [`super::by_handle`].

use async_trait::async_trait;
use aws_sdk_elasticache::types::{ReservedCacheNode, Tag};
use buyonce_shared::{IdempotencyToken, Recommendation};

use super::by_handle::{purchase_answer, Bought, ByHandle, HandleService, Offering, Reservation};
use super::{all_pages, required, PurchaseError};
use crate::clients::aws::errors::{code, lookup_failed, offering_lookup_failed};
use crate::clients::aws::Clients;

const MAX_ID: usize = 60;

/// The ElastiCache executor.
pub type ElastiCache = ByHandle<ElastiCacheService>;

pub struct ElastiCacheService;

fn reservation(r: &ReservedCacheNode) -> Reservation {
    let count = r.cache_node_count();
    Reservation {
        id: r.reserved_cache_node_id().unwrap_or_default().to_owned(),
        state: r.state().map(str::to_owned),
        count,
        cost_usd: r.fixed_price().map(|p| p * f64::from(count.unwrap_or(1))),
        matches_recommendation: true,
    }
}

#[async_trait]
impl HandleService for ElastiCacheService {
    const NAME: &'static str = "elasticache";
    const UNIQUE_HANDLE: bool = true;
    type Sdk = aws_sdk_elasticache::Client;

    fn handle(token: &IdempotencyToken) -> Result<String, PurchaseError> {
        Ok(token.reservation_id("ec-", MAX_ID))
    }

    #[tracing::instrument(
        name = "provider_call",
        level = "debug",
        skip_all,
        fields(op = "elasticache:DescribeReservedCacheNodes")
    )]
    async fn find(
        client: &Clients<Self::Sdk>,
        handle: &str,
        _rec: &Recommendation,
    ) -> Result<Vec<Reservation>, PurchaseError> {
        match client
            .lookup
            .describe_reserved_cache_nodes()
            .reserved_cache_node_id(handle)
            .send()
            .await
        {
            Ok(out) => Ok(out.reserved_cache_nodes().iter().map(reservation).collect()),
            Err(e) if code(&e) == Some("ReservedCacheNodeNotFound") => Ok(Vec::new()),
            Err(e) => Err(lookup_failed("elasticache:DescribeReservedCacheNodes", &e)),
        }
    }

    #[tracing::instrument(
        name = "provider_call",
        level = "debug",
        skip_all,
        fields(op = "elasticache:DescribeReservedCacheNodesOfferings")
    )]
    async fn offerings(
        client: &Clients<Self::Sdk>,
        rec: &Recommendation,
    ) -> Result<Vec<Offering>, PurchaseError> {
        let mut lookup = client.lookup.describe_reserved_cache_nodes_offerings();
        match &rec.offering_id {
            Some(oid) => lookup = lookup.reserved_cache_nodes_offering_id(oid),
            None => {
                lookup = lookup
                    .cache_node_type(required(&rec.resource_type, "resource_type")?)
                    .duration(rec.term.seconds().to_string())
                    .product_description(rec.engine.clone().unwrap_or_else(|| "redis".into()))
                    .offering_type(rec.payment.aws_offering_type())
            }
        }
        all_pages(|marker| {
            let request = lookup.clone().set_marker(marker);
            async move {
                let out = request.send().await.map_err(|e| {
                    offering_lookup_failed("elasticache:DescribeReservedCacheNodesOfferings", &e)
                })?;
                let page = out
                    .reserved_cache_nodes_offerings()
                    .iter()
                    .map(|o| Offering {
                        id: o
                            .reserved_cache_nodes_offering_id()
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
        fields(op = "elasticache:PurchaseReservedCacheNodesOffering")
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
            .purchase_reserved_cache_nodes_offering()
            .reserved_cache_nodes_offering_id(&offering.id)
            .reserved_cache_node_id(handle)
            .cache_node_count(count)
            .tags(Tag::builder().key(tag_key).value(token).build())
            .send()
            .await;
        purchase_answer(
            "elasticache:PurchaseReservedCacheNodesOffering",
            result,
            "ReservedCacheNodeAlreadyExists",
            |out| out.reserved_cache_node().map(reservation),
        )
    }
}
