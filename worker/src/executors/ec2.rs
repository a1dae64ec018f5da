//! EC2 Reserved Instances: no client token, no tag-on-create.
//!
//! Guard: `DescribeReservedInstances` filtered by `tag:<key>=token`, states active and
//! payment-pending; a failed lookup refuses to buy. Backstop for the window "bought, response or
//! tag write lost, process died": the Redshift-style **intent + snapshot**. Under a fleet-wide
//! lock on (account, region, offering), before the first purchase the worker records on the item
//! the IDs of the RIs that already match the offering; a later attempt that finds an RI absent
//! from that snapshot, with the same count, not tagged for another token and not in the ledger
//! for another item, recovers it instead of buying again. Right after a purchase the token tag
//! is written (bounded retries while the new ID is not yet visible); a tag that still fails is
//! recorded as `tag_pending` and retried by the reaper — never silent.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    Filter, InstanceType, OfferingClassType, OfferingTypeValues, ReservedInstances,
    RiProductDescription, Tag, Tenancy,
};
use buyonce_shared::document::OfferingClass;
use buyonce_shared::{IdempotencyToken, Recommendation};
use serde_json::{json, Value};

use super::aws_errors::{classify, code, lookup_failed};
use super::{
    all_pages, exactly_one, offering_key, required, Executor, How, OfferingCache, PurchaseContext,
    PurchaseError, PurchaseRequest, Purchased,
};
use crate::aws::{no_retry, AwsClients};

pub struct Ec2 {
    aws: AwsClients,
    offerings: OfferingCache<Offering>,
}

impl Ec2 {
    pub fn new(aws: AwsClients) -> Self {
        Self {
            aws,
            offerings: OfferingCache::default(),
        }
    }
}

/// The offering attributes an RI carries (the RI itself does not name its offering).
#[derive(Clone)]
struct Offering {
    id: String,
    fixed_price: f64,
    instance_type: String,
    product_description: String,
    duration: i64,
    offering_class: String,
    offering_type: String,
}

const LIVE_STATES: [&str; 2] = ["active", "payment-pending"];

fn ri_cost(ri: &ReservedInstances) -> Option<f64> {
    let price = f64::from(ri.fixed_price()?);
    Some(price * f64::from(ri.instance_count().unwrap_or(1)))
}

fn matches_offering(ri: &ReservedInstances, o: &Offering) -> bool {
    ri.instance_type().map(|t| t.as_str()) == Some(o.instance_type.as_str())
        && ri.product_description().map(|p| p.as_str()) == Some(o.product_description.as_str())
        && ri.duration() == Some(o.duration)
        && ri.offering_class().map(|c| c.as_str()) == Some(o.offering_class.as_str())
        && ri.offering_type().map(|t| t.as_str()) == Some(o.offering_type.as_str())
}

async fn resolve_offering(
    client: &aws_sdk_ec2::Client,
    rec: &Recommendation,
) -> Result<Offering, PurchaseError> {
    let instance_type = required(&rec.resource_type, "resource_type")?;
    let platform = rec
        .platform
        .clone()
        .unwrap_or_else(|| "Linux/UNIX".to_owned());
    let class = rec.offering_class.unwrap_or(OfferingClass::Standard);
    let mut lookup = client
        .describe_reserved_instances_offerings()
        .instance_tenancy(Tenancy::Default)
        .include_marketplace(false);
    if let Some(id) = &rec.offering_id {
        lookup = lookup.reserved_instances_offering_ids(id);
    } else {
        lookup = lookup
            .instance_type(InstanceType::from(instance_type))
            .product_description(RiProductDescription::from(platform.as_str()))
            .offering_class(OfferingClassType::from(class.as_str()))
            .offering_type(OfferingTypeValues::from(rec.payment.aws_offering_type()))
            .min_duration(rec.term.seconds())
            .max_duration(rec.term.seconds());
    }
    let found = all_pages(|next| {
        let request = lookup.clone().set_next_token(next);
        async move {
            let out = request
                .send()
                .await
                .map_err(|e| lookup_failed("ec2:DescribeReservedInstancesOfferings", &e))?;
            let page = out
                .reserved_instances_offerings()
                .iter()
                .filter(|o| o.marketplace() != Some(true))
                .map(|o| Offering {
                    id: o
                        .reserved_instances_offering_id()
                        .unwrap_or_default()
                        .to_owned(),
                    fixed_price: f64::from(o.fixed_price().unwrap_or(0.0)),
                    instance_type: o
                        .instance_type()
                        .map(|t| t.as_str().to_owned())
                        .unwrap_or_default(),
                    product_description: o
                        .product_description()
                        .map(|p| p.as_str().to_owned())
                        .unwrap_or_default(),
                    duration: o.duration().unwrap_or_default(),
                    offering_class: o
                        .offering_class()
                        .map(|c| c.as_str().to_owned())
                        .unwrap_or_default(),
                    offering_type: o
                        .offering_type()
                        .map(|t| t.as_str().to_owned())
                        .unwrap_or_default(),
                })
                .collect();
            Ok((page, out.next_token().map(str::to_owned)))
        }
    })
    .await?;
    exactly_one(found, &rec.describe())
}

/// Live RIs carrying the token tag.
async fn find_by_token(
    client: &aws_sdk_ec2::Client,
    tag_key: &str,
    token: &IdempotencyToken,
) -> Result<Option<ReservedInstances>, PurchaseError> {
    let out = client
        .describe_reserved_instances()
        .filters(
            Filter::builder()
                .name(format!("tag:{tag_key}"))
                .values(token.as_str())
                .build(),
        )
        .filters(
            Filter::builder()
                .name("state")
                .set_values(Some(LIVE_STATES.iter().map(|s| s.to_string()).collect()))
                .build(),
        )
        .send()
        .await
        .map_err(|e| lookup_failed("ec2:DescribeReservedInstances (token tag)", &e))?;
    Ok(out.reserved_instances().first().cloned())
}

/// Live RIs that match the offering's attributes.
async fn list_matching(
    client: &aws_sdk_ec2::Client,
    o: &Offering,
) -> Result<Vec<ReservedInstances>, PurchaseError> {
    let out = client
        .describe_reserved_instances()
        .filters(
            Filter::builder()
                .name("instance-type")
                .values(&o.instance_type)
                .build(),
        )
        .filters(
            Filter::builder()
                .name("product-description")
                .values(&o.product_description)
                .build(),
        )
        .filters(
            Filter::builder()
                .name("duration")
                .values(o.duration.to_string())
                .build(),
        )
        .filters(
            Filter::builder()
                .name("state")
                .set_values(Some(LIVE_STATES.iter().map(|s| s.to_string()).collect()))
                .build(),
        )
        .send()
        .await
        .map_err(|e| lookup_failed("ec2:DescribeReservedInstances (snapshot)", &e))?;
    Ok(out
        .reserved_instances()
        .iter()
        .filter(|ri| matches_offering(ri, o))
        .cloned()
        .collect())
}

/// Writes the token tag, retrying briefly while a fresh RI ID is not yet visible to CreateTags.
async fn tag(
    client: &aws_sdk_ec2::Client,
    ri_id: &str,
    tag_key: &str,
    token: &IdempotencyToken,
) -> Result<(), PurchaseError> {
    let mut last = None;
    for attempt in 0..5u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        }
        match client
            .create_tags()
            .resources(ri_id)
            .tags(Tag::builder().key(tag_key).value(token.as_str()).build())
            // This loop is the retry policy; the SDK's own retries would multiply it.
            .customize()
            .config_override(aws_sdk_ec2::config::Builder::default().retry_config(no_retry()))
            .send()
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(classify("ec2:CreateTags", &e)),
        }
    }
    Err(last.unwrap_or_else(|| PurchaseError::transient("ec2:CreateTags failed")))
}

fn snapshot_of(intent: Option<&Value>, offering_id: &str) -> Option<Vec<String>> {
    let ec2 = intent?.get("ec2")?;
    if ec2.get("offering_id")?.as_str()? != offering_id {
        return None;
    }
    Some(
        ec2.get("snapshot")?
            .as_array()?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
    )
}

#[async_trait]
impl Executor for Ec2 {
    async fn purchase(
        &self,
        req: &PurchaseRequest<'_>,
        ctx: &dyn PurchaseContext,
    ) -> Result<Purchased, PurchaseError> {
        let rec = req.rec;
        let region = required(&rec.region, "region")?;
        let count = rec.units() as i32;
        let client = self.aws.ec2(&rec.account, region).await?;
        let tag_key = ctx.tag_key();

        if let Some(ri) = find_by_token(&client, tag_key, req.token).await? {
            return Ok(Purchased {
                commitment_id: ri.reserved_instances_id().unwrap_or_default().to_owned(),
                cost_usd: ri_cost(&ri),
                how: How::Guard,
                tag_pending: false,
            });
        }

        let offering = self
            .offerings
            .get_or_try(offering_key(rec), || resolve_offering(&client, rec))
            .await?;
        let upfront = offering.fixed_price * f64::from(count);
        let what = format!("EC2 RI offering {} x{count}", offering.id);

        if ctx.dry_run() {
            // EC2's native dry run checks permissions and the offering without buying.
            let result = client
                .purchase_reserved_instances_offering()
                .reserved_instances_offering_id(&offering.id)
                .instance_count(count)
                .dry_run(true)
                .send()
                .await;
            match result {
                Err(e) if code(&e) == Some("DryRunOperation") => {}
                Err(e) => {
                    return Err(classify(
                        "ec2:PurchaseReservedInstancesOffering (dry run)",
                        &e,
                    ))
                }
                Ok(_) => {
                    return Err(PurchaseError::transient(
                        "ec2: dry-run purchase returned success instead of DryRunOperation",
                    ))
                }
            }
        }
        ctx.authorize_spend(upfront, &what).await?;

        // Serialise purchases of this offering so the snapshot attribution is unambiguous.
        ctx.lock_offering(&format!("ec2:{}:{region}:{}", rec.account, offering.id))
            .await?;

        match snapshot_of(req.intent, &offering.id) {
            Some(snapshot) => {
                // An earlier attempt may have bought without learning the RI ID.
                let fresh: Vec<ReservedInstances> = list_matching(&client, &offering)
                    .await?
                    .into_iter()
                    .filter(|ri| {
                        let id = ri.reserved_instances_id().unwrap_or_default();
                        let tagged_for_other = ri.tags().iter().any(|t| {
                            t.key() == Some(tag_key) && t.value() != Some(req.token.as_str())
                        });
                        !snapshot.iter().any(|s| s == id)
                            && ri.instance_count() == Some(count)
                            && !tagged_for_other
                    })
                    .collect();
                let ids: Vec<String> = fresh
                    .iter()
                    .filter_map(|ri| ri.reserved_instances_id().map(str::to_owned))
                    .collect();
                let taken = ctx.attributed_elsewhere(&ids).await?;
                let mut candidates: Vec<ReservedInstances> = fresh
                    .into_iter()
                    .filter(|ri| {
                        !taken
                            .iter()
                            .any(|t| Some(t.as_str()) == ri.reserved_instances_id())
                    })
                    .collect();
                // Purchases of the offering are serialised, so the earliest new RI is the first
                // purchase made after this item's snapshot.
                candidates.sort_by_key(|ri| ri.start().map(|s| (s.secs(), s.subsec_nanos())));
                if let Some(ri) = candidates.first() {
                    let id = ri.reserved_instances_id().unwrap_or_default().to_owned();
                    let tag_pending = match tag(&client, &id, tag_key, req.token).await {
                        Ok(()) => false,
                        Err(e) => {
                            tracing::warn!(commitment.id = %id, error = %e, "recovered the RI but could not tag it; recorded as tag_pending for the reaper");
                            true
                        }
                    };
                    return Ok(Purchased {
                        cost_usd: ri_cost(ri),
                        commitment_id: id,
                        how: How::Recovered,
                        tag_pending,
                    });
                }
            }
            None => {
                // Only untagged RIs can ever be mistaken for this purchase (a tagged one is the
                // guard's, or another item's), so only they go in the snapshot: it stays small
                // however many RIs the account holds.
                let existing: Vec<String> = list_matching(&client, &offering)
                    .await?
                    .iter()
                    .filter(|ri| !ri.tags().iter().any(|t| t.key() == Some(tag_key)))
                    .filter_map(|ri| ri.reserved_instances_id().map(str::to_owned))
                    .collect();
                ctx.save_intent(&json!({
                    "ec2": {
                        "offering_id": offering.id,
                        "snapshot": existing,
                        "taken_at": chrono::Utc::now().to_rfc3339(),
                    }
                }))
                .await?;
            }
        }

        let bought = client
            .purchase_reserved_instances_offering()
            .reserved_instances_offering_id(&offering.id)
            .instance_count(count)
            .customize()
            .config_override(aws_sdk_ec2::config::Builder::default().retry_config(no_retry()))
            .send()
            .await
            .map_err(|e| classify("ec2:PurchaseReservedInstancesOffering", &e))?;
        let ri_id = bought
            .reserved_instances_id()
            .unwrap_or_default()
            .to_owned();
        if ri_id.is_empty() {
            return Err(PurchaseError::transient(
                "ec2:PurchaseReservedInstancesOffering returned no reservedInstancesId",
            ));
        }
        // Tag before recording; a failure is reported as tag_pending, never ignored.
        let tag_pending = match tag(&client, &ri_id, tag_key, req.token).await {
            Ok(()) => false,
            Err(e) => {
                tracing::warn!(commitment.id = %ri_id, error = %e, "bought but could not tag the RI; recorded as tag_pending for the reaper");
                true
            }
        };
        Ok(Purchased {
            commitment_id: ri_id,
            cost_usd: Some(upfront),
            how: How::Purchased,
            tag_pending,
        })
    }

    async fn retag(
        &self,
        rec: &Recommendation,
        token: &IdempotencyToken,
        commitment_id: &str,
        tag_key: &str,
    ) -> Result<bool, PurchaseError> {
        let region = required(&rec.region, "region")?;
        let client = self.aws.ec2(&rec.account, region).await?;
        tag(&client, commitment_id, tag_key, token).await?;
        Ok(true)
    }
}
