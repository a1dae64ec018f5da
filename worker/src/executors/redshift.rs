//! Redshift reserved nodes: no client ID, no tags (reserved nodes cannot be tagged and
//! `DescribeTags` refuses reserved-node ARNs), so neither a handle nor a tag can guard a retry.
//!
//! **Intent + snapshot** (DESIGN §3): purchases of one (account, region, offering) are serialised
//! by a fleet-wide lock; before the first purchase the worker records on the item the IDs of the
//! account/region's reserved nodes for the offering. On any retry, a reserved node absent from
//! the snapshot, of the same offering and count, and not already in the ledger for another item
//! is this item's purchase and is recovered. A node bought by hand in that window makes buyonce
//! under-buy (the safe direction), never double-buy.

use async_trait::async_trait;
use aws_sdk_redshift::types::ReservedNode;
use serde_json::{json, Value};

use super::aws_errors::{classify, lookup_failed};
use super::{
    all_pages, exactly_one, offering_key, required, Executor, How, OfferingCache, PurchaseContext,
    PurchaseError, PurchaseRequest, Purchased,
};
use crate::aws::{no_retry, AwsClients};

pub struct Redshift {
    aws: AwsClients,
    offerings: OfferingCache<(String, f64)>,
}

impl Redshift {
    pub fn new(aws: AwsClients) -> Self {
        Self {
            aws,
            offerings: OfferingCache::default(),
        }
    }
}

const LIVE_STATES: [&str; 3] = ["active", "payment-pending", "pending-payment"];

fn cost(r: &ReservedNode) -> Option<f64> {
    r.fixed_price()
        .map(|p| p * f64::from(r.node_count().unwrap_or(1)))
}

/// Live reserved nodes of the offering (all pages).
async fn nodes_of(
    client: &aws_sdk_redshift::Client,
    offering_id: &str,
) -> Result<Vec<ReservedNode>, PurchaseError> {
    all_pages(|marker| {
        let request = client
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
                .filter(|n| n.reserved_node_offering_id() == Some(offering_id))
                .filter(|n| n.state().is_none_or(|s| LIVE_STATES.contains(&s)))
                .cloned()
                .collect();
            Ok((page, out.marker().map(str::to_owned)))
        }
    })
    .await
}

fn snapshot_of(intent: Option<&Value>, offering_id: &str) -> Option<Vec<String>> {
    let r = intent?.get("redshift")?;
    if r.get("offering_id")?.as_str()? != offering_id {
        return None;
    }
    Some(
        r.get("snapshot")?
            .as_array()?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
    )
}

#[async_trait]
impl Executor for Redshift {
    async fn purchase(
        &self,
        req: &PurchaseRequest<'_>,
        ctx: &dyn PurchaseContext,
    ) -> Result<Purchased, PurchaseError> {
        let rec = req.rec;
        let region = required(&rec.region, "region")?;
        let client = self.aws.redshift(&rec.account, region).await?;
        let count = rec.units() as i32;
        let node_type = required(&rec.resource_type, "resource_type")?;

        let (offering_id, price) = self
            .offerings
            .get_or_try(offering_key(rec), || async {
                let offerings = all_pages(|marker| {
                    let mut lookup = client.describe_reserved_node_offerings().max_records(100);
                    if let Some(oid) = &rec.offering_id {
                        lookup = lookup.reserved_node_offering_id(oid);
                    }
                    let request = lookup.set_marker(marker);
                    async move {
                        let out = request.send().await.map_err(|e| {
                            lookup_failed("redshift:DescribeReservedNodeOfferings", &e)
                        })?;
                        let page = out
                            .reserved_node_offerings()
                            .iter()
                            .filter(|o| {
                                rec.offering_id.is_some()
                                    || (o.node_type() == Some(node_type)
                                        && o.duration().map(i64::from) == Some(rec.term.seconds())
                                        && o.offering_type()
                                            == Some(rec.payment.aws_offering_type()))
                            })
                            .map(|o| {
                                (
                                    o.reserved_node_offering_id().unwrap_or_default().to_owned(),
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
            &format!("Redshift offering {offering_id} x{count}"),
        )
        .await?;

        // One purchase of this offering at a time in the whole fleet.
        ctx.lock_offering(&format!("redshift:{}:{region}:{offering_id}", rec.account))
            .await?;

        match snapshot_of(req.intent, &offering_id) {
            Some(snapshot) => {
                let nodes: Vec<ReservedNode> = nodes_of(&client, &offering_id)
                    .await?
                    .into_iter()
                    .filter(|n| {
                        let id = n.reserved_node_id().unwrap_or_default();
                        !snapshot.iter().any(|s| s == id) && n.node_count() == Some(count)
                    })
                    .collect();
                let ids: Vec<String> = nodes
                    .iter()
                    .filter_map(|n| n.reserved_node_id().map(str::to_owned))
                    .collect();
                let taken = ctx.attributed_elsewhere(&ids).await?;
                let mut candidates: Vec<ReservedNode> = nodes
                    .into_iter()
                    .filter(|n| {
                        !taken
                            .iter()
                            .any(|t| Some(t.as_str()) == n.reserved_node_id())
                    })
                    .collect();
                candidates.sort_by_key(|n| n.start_time().map(|s| (s.secs(), s.subsec_nanos())));
                if let Some(node) = candidates.first() {
                    return Ok(Purchased {
                        commitment_id: node.reserved_node_id().unwrap_or_default().to_owned(),
                        cost_usd: cost(node),
                        how: How::Recovered,
                        tag_pending: false,
                    });
                }
            }
            None => {
                // Nodes already in the ledger can never be candidates (another item owns them),
                // so only unattributed ones go in the snapshot: it stays small.
                let all: Vec<String> = nodes_of(&client, &offering_id)
                    .await?
                    .iter()
                    .filter_map(|n| n.reserved_node_id().map(str::to_owned))
                    .collect();
                let taken = ctx.attributed_elsewhere(&all).await?;
                let existing: Vec<String> =
                    all.into_iter().filter(|id| !taken.contains(id)).collect();
                ctx.save_intent(&json!({
                    "redshift": {
                        "offering_id": offering_id,
                        "snapshot": existing,
                        "taken_at": chrono::Utc::now().to_rfc3339(),
                    }
                }))
                .await?;
            }
        }

        let out = client
            .purchase_reserved_node_offering()
            .reserved_node_offering_id(&offering_id)
            .node_count(count)
            .customize()
            .config_override(aws_sdk_redshift::config::Builder::default().retry_config(no_retry()))
            .send()
            .await
            .map_err(|e| classify("redshift:PurchaseReservedNodeOffering", &e))?;
        let node = out.reserved_node().ok_or_else(|| {
            PurchaseError::transient("redshift: purchase returned no reserved node")
        })?;
        Ok(Purchased {
            commitment_id: node.reserved_node_id().unwrap_or_default().to_owned(),
            cost_usd: cost(node).or(Some(upfront)),
            how: How::Purchased,
            tag_pending: false,
        })
    }
}
