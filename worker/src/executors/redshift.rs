//! Redshift reserved nodes: `PurchaseReservedNodeOffering` takes only the offering and a node
//! count, reserved nodes cannot be tagged, and `DescribeTags` does not list reserved nodes among
//! its resource types (botocore's Redshift model), so neither a handle nor a tag can guard a
//! retry: the **intent + snapshot** flow of [`super::snapshot`] attributes them.
//!
//! States, from the model's `ReservedNode.State` documentation: `pending-payment`, `active`,
//! `payment-failed`, `retired`, `exchanging`.

use async_trait::async_trait;
use aws_sdk_redshift::types::ReservedNode;
use buyonce_shared::{IdempotencyToken, Recommendation};

use super::snapshot::{BySnapshot, Commitment, OfferingInfo, SnapshotService};
use super::{all_pages, exactly_one, required, PurchaseError};
use crate::clients::aws::errors::{classify_purchase, lookup_failed, offering_lookup_failed};
use crate::clients::aws::Clients;

/// The Redshift executor.
pub type Redshift = BySnapshot<RedshiftService>;

pub struct RedshiftService;

#[derive(Clone)]
pub struct Offering {
    id: String,
    fixed_price: f64,
}

impl OfferingInfo for Offering {
    fn id(&self) -> &str {
        &self.id
    }
    fn fixed_price(&self) -> f64 {
        self.fixed_price
    }
}

fn commitment(n: &ReservedNode) -> Commitment {
    let count = n.node_count();
    Commitment {
        id: n.reserved_node_id().unwrap_or_default().to_owned(),
        count,
        state: n.state().map(str::to_owned),
        start: n.start_time().map(|s| (s.secs(), s.subsec_nanos())),
        cost_usd: n.fixed_price().map(|p| p * f64::from(count.unwrap_or(1))),
        tagged: false,
        tagged_for_other: false,
    }
}

#[async_trait]
impl SnapshotService for RedshiftService {
    const NAME: &'static str = "redshift";
    type Sdk = aws_sdk_redshift::Client;
    type Offering = Offering;

    #[tracing::instrument(
        name = "provider_call",
        level = "debug",
        skip_all,
        fields(op = "redshift:DescribeReservedNodeOfferings")
    )]
    async fn resolve_offering(
        client: &Clients<Self::Sdk>,
        rec: &Recommendation,
    ) -> Result<Offering, PurchaseError> {
        let node_type = required(&rec.resource_type, "resource_type")?;
        let offerings = all_pages(|marker| {
            let mut lookup = client
                .lookup
                .describe_reserved_node_offerings()
                .max_records(100);
            if let Some(oid) = &rec.offering_id {
                lookup = lookup.reserved_node_offering_id(oid);
            }
            let request = lookup.set_marker(marker);
            async move {
                let out = request.send().await.map_err(|e| {
                    offering_lookup_failed("redshift:DescribeReservedNodeOfferings", &e)
                })?;
                let page = out
                    .reserved_node_offerings()
                    .iter()
                    .filter(|o| {
                        rec.offering_id.is_some()
                            || (o.node_type() == Some(node_type)
                                && o.duration().map(i64::from) == Some(rec.term.seconds())
                                && o.offering_type() == Some(rec.payment.aws_offering_type()))
                    })
                    .map(|o| Offering {
                        id: o.reserved_node_offering_id().unwrap_or_default().to_owned(),
                        fixed_price: o.fixed_price().unwrap_or(0.0),
                    })
                    .collect();
                Ok((page, out.marker().map(str::to_owned)))
            }
        })
        .await?;
        exactly_one(offerings, &rec.describe())
    }

    #[tracing::instrument(
        name = "provider_call",
        level = "debug",
        skip_all,
        fields(op = "redshift:DescribeReservedNodes")
    )]
    async fn list_matching(
        client: &Clients<Self::Sdk>,
        offering: &Offering,
        _tag_key: &str,
        _token: &IdempotencyToken,
    ) -> Result<Vec<Commitment>, PurchaseError> {
        all_pages(|marker| {
            let request = client
                .lookup
                .describe_reserved_nodes()
                .set_marker(marker)
                .max_records(100);
            async move {
                let out = request
                    .send()
                    .await
                    .map_err(|e| lookup_failed("redshift:DescribeReservedNodes", &e))?;
                let page = out
                    .reserved_nodes()
                    .iter()
                    .filter(|n| n.reserved_node_offering_id() == Some(offering.id.as_str()))
                    // Retired nodes are years old: never this purchase.
                    .filter(|n| n.state() != Some("retired"))
                    .map(commitment)
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
        fields(op = "redshift:PurchaseReservedNodeOffering")
    )]
    async fn buy(
        client: &Clients<Self::Sdk>,
        offering: &Offering,
        count: i32,
    ) -> Result<String, PurchaseError> {
        let out = client
            .once
            .purchase_reserved_node_offering()
            .reserved_node_offering_id(&offering.id)
            .node_count(count)
            .send()
            .await
            .map_err(|e| classify_purchase("redshift:PurchaseReservedNodeOffering", &e))?;
        match out.reserved_node().and_then(|n| n.reserved_node_id()) {
            Some(id) if !id.is_empty() => Ok(id.to_owned()),
            _ => Err(PurchaseError::ambiguous(
                "redshift: the purchase answered without a reserved node ID",
            )),
        }
    }
}
