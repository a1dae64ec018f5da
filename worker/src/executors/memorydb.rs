//! MemoryDB reserved nodes: `ReservationId = reservation_id("mdb-", token)`.
//!
//! Guard: describe by reservation ID (`ReservedNodeNotFoundFault` → proceed, other failures →
//! refuse). Backstop: the model's `ReservedNodeAlreadyExistsFault` ("You already have a
//! reservation with the given identifier"; MemoryDB's model gives its faults no code or status,
//! so the wire type is the shape name) → recover. The flow is [`super::by_handle`].
//!
//! botocore (1.44) lists `smithy-rpc-v2-cbor` before `json` as MemoryDB's protocols; the SDK
//! pinned here speaks awsJson1_1, which the model still lists.

use async_trait::async_trait;
use aws_sdk_memorydb::types::{ReservedNode, Tag};
use buyonce_shared::{IdempotencyToken, Recommendation};

use super::by_handle::{purchase_answer, Bought, ByHandle, HandleService, Offering, Reservation};
use super::{all_pages, required, PurchaseError};
use crate::clients::aws::errors::{code, lookup_failed, offering_lookup_failed};
use crate::clients::aws::Clients;

const MAX_ID: usize = 60;

/// The MemoryDB executor.
pub type MemoryDb = ByHandle<MemoryDbService>;

pub struct MemoryDbService;

fn reservation(r: &ReservedNode) -> Reservation {
    Reservation {
        id: r.reservation_id().unwrap_or_default().to_owned(),
        state: r.state().map(str::to_owned),
        count: Some(r.node_count()),
        cost_usd: Some(r.fixed_price() * f64::from(r.node_count().max(1))),
        matches_recommendation: true,
    }
}

#[async_trait]
impl HandleService for MemoryDbService {
    const NAME: &'static str = "memorydb";
    const UNIQUE_HANDLE: bool = true;
    type Sdk = aws_sdk_memorydb::Client;

    fn handle(token: &IdempotencyToken) -> Result<String, PurchaseError> {
        Ok(token.reservation_id("mdb-", MAX_ID))
    }

    #[tracing::instrument(
        name = "provider_call",
        level = "debug",
        skip_all,
        fields(op = "memorydb:DescribeReservedNodes")
    )]
    async fn find(
        client: &Clients<Self::Sdk>,
        handle: &str,
        _rec: &Recommendation,
    ) -> Result<Vec<Reservation>, PurchaseError> {
        match client
            .lookup
            .describe_reserved_nodes()
            .reservation_id(handle)
            .send()
            .await
        {
            Ok(out) => Ok(out.reserved_nodes().iter().map(reservation).collect()),
            Err(e) if code(&e) == Some("ReservedNodeNotFoundFault") => Ok(Vec::new()),
            Err(e) => Err(lookup_failed("memorydb:DescribeReservedNodes", &e)),
        }
    }

    #[tracing::instrument(
        name = "provider_call",
        level = "debug",
        skip_all,
        fields(op = "memorydb:DescribeReservedNodesOfferings")
    )]
    async fn offerings(
        client: &Clients<Self::Sdk>,
        rec: &Recommendation,
    ) -> Result<Vec<Offering>, PurchaseError> {
        let mut lookup = client.lookup.describe_reserved_nodes_offerings();
        match &rec.offering_id {
            Some(oid) => lookup = lookup.reserved_nodes_offering_id(oid),
            None => {
                lookup = lookup
                    .node_type(required(&rec.resource_type, "resource_type")?)
                    .duration(rec.term.seconds().to_string())
                    .offering_type(rec.payment.aws_offering_type())
            }
        }
        all_pages(|next| {
            let request = lookup.clone().set_next_token(next);
            async move {
                let out = request.send().await.map_err(|e| {
                    offering_lookup_failed("memorydb:DescribeReservedNodesOfferings", &e)
                })?;
                let page = out
                    .reserved_nodes_offerings()
                    .iter()
                    .map(|o| Offering {
                        id: o
                            .reserved_nodes_offering_id()
                            .unwrap_or_default()
                            .to_owned(),
                        fixed_price: o.fixed_price(),
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
        fields(op = "memorydb:PurchaseReservedNodesOffering")
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
            .purchase_reserved_nodes_offering()
            .reserved_nodes_offering_id(&offering.id)
            .reservation_id(handle)
            .node_count(count)
            .tags(Tag::builder().key(tag_key).value(token).build())
            .send()
            .await;
        purchase_answer(
            "memorydb:PurchaseReservedNodesOffering",
            result,
            "ReservedNodeAlreadyExistsFault",
            |out| out.reserved_node().map(reservation),
        )
    }
}
