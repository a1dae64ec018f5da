//! EC2 Reserved Instances: `PurchaseReservedInstancesOffering` has no `ClientToken` and no
//! `TagSpecifications` (botocore's EC2 model), so the token is written with `CreateTags` right
//! after the purchase.
//!
//! Guard: `DescribeReservedInstances` filtered by `tag:<key>=token`; a failed lookup refuses to
//! buy. Backstop for the window "bought, response or tag write lost, process died": the
//! **intent + snapshot** flow of [`super::snapshot`]. A tag write that still fails after a few
//! tries is recorded as `tag_pending` and retried by the reaper — never silent.
//!
//! Offerings are looked up with the filter `scope=Region`: without an Availability Zone,
//! `DescribeReservedInstancesOfferings` lists the regional offering and one per zone (the model's
//! `scope` enum is `Region | Availability Zone`), and buyonce buys regional reservations.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    Filter, InstanceType, OfferingClassType, OfferingTypeValues, ReservedInstances,
    RiProductDescription, Scope, Tag, Tenancy,
};
use buyonce_shared::document::OfferingClass;
use buyonce_shared::{IdempotencyToken, Recommendation};

use super::snapshot::{BySnapshot, Commitment, OfferingInfo, SnapshotService};
use super::{all_pages, exactly_one, required, PurchaseError};
use crate::clients::aws::errors::{
    classify, classify_purchase, code, lookup_failed, offering_lookup_failed,
};
use crate::clients::aws::Clients;

/// The EC2 executor.
pub type Ec2 = BySnapshot<Ec2Service>;

pub struct Ec2Service;

/// The offering attributes an RI carries (the RI itself does not name its offering).
#[derive(Clone)]
pub struct Offering {
    id: String,
    fixed_price: f64,
    instance_type: String,
    product_description: String,
    duration: i64,
    offering_class: String,
    offering_type: String,
}

impl OfferingInfo for Offering {
    fn id(&self) -> &str {
        &self.id
    }
    fn fixed_price(&self) -> f64 {
        self.fixed_price
    }
}

/// States listed for the guard and the snapshot: live ones, and `payment-failed` so that a
/// failed purchase is reported, not bought again unseen. (`retired` RIs are years old.)
const LISTED_STATES: [&str; 4] = ["active", "payment-pending", "payment-failed", "queued"];

/// Regional reservations only (see the module doc).
const REGION_SCOPE: &str = "Region";

fn commitment(ri: &ReservedInstances, tag_key: &str, token: &IdempotencyToken) -> Commitment {
    let count = ri.instance_count();
    let tag = ri
        .tags()
        .iter()
        .find(|t| t.key() == Some(tag_key))
        .and_then(|t| t.value());
    Commitment {
        id: ri.reserved_instances_id().unwrap_or_default().to_owned(),
        count,
        state: ri.state().map(|s| s.as_str().to_owned()),
        start: ri.start().map(|s| (s.secs(), s.subsec_nanos())),
        cost_usd: ri
            .fixed_price()
            .map(|p| f64::from(p) * f64::from(count.unwrap_or(1))),
        tagged: tag.is_some(),
        tagged_for_other: tag.is_some_and(|v| v != token.as_str()),
    }
}

fn matches_offering(ri: &ReservedInstances, o: &Offering) -> bool {
    ri.instance_type().map(|t| t.as_str()) == Some(o.instance_type.as_str())
        && ri.product_description().map(|p| p.as_str()) == Some(o.product_description.as_str())
        && ri.duration() == Some(o.duration)
        && ri.offering_class().map(|c| c.as_str()) == Some(o.offering_class.as_str())
        && ri.offering_type().map(|t| t.as_str()) == Some(o.offering_type.as_str())
        && ri.scope().map(|s| s.as_str()) == Some(REGION_SCOPE)
}

fn states_filter() -> Filter {
    Filter::builder()
        .name("state")
        .set_values(Some(LISTED_STATES.iter().map(|s| s.to_string()).collect()))
        .build()
}

/// Writes the token tag, retrying briefly while a fresh RI ID is not yet visible to CreateTags
/// (EC2 is eventually consistent right after a create).
#[tracing::instrument(
    name = "provider_call",
    level = "debug",
    skip_all,
    fields(op = "ec2:CreateTags")
)]
async fn tag(
    client: &Clients<aws_sdk_ec2::Client>,
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
            .once
            .create_tags()
            .resources(ri_id)
            .tags(Tag::builder().key(tag_key).value(token.as_str()).build())
            // This loop is the retry policy; the SDK's own retries would multiply it.
            .send()
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(classify("ec2:CreateTags", &e)),
        }
    }
    Err(last.unwrap_or_else(|| PurchaseError::transient("ec2:CreateTags failed")))
}

#[async_trait]
impl SnapshotService for Ec2Service {
    const NAME: &'static str = "ec2";
    type Sdk = aws_sdk_ec2::Client;
    type Offering = Offering;

    #[tracing::instrument(
        name = "provider_call",
        level = "debug",
        skip_all,
        fields(op = "ec2:DescribeReservedInstances")
    )]
    async fn find_by_token(
        client: &Clients<Self::Sdk>,
        tag_key: &str,
        token: &IdempotencyToken,
    ) -> Result<Option<Commitment>, PurchaseError> {
        let out = client
            .lookup
            .describe_reserved_instances()
            .filters(
                Filter::builder()
                    .name(format!("tag:{tag_key}"))
                    .values(token.as_str())
                    .build(),
            )
            .filters(states_filter())
            .send()
            .await
            .map_err(|e| lookup_failed("ec2:DescribeReservedInstances (token tag)", &e))?;
        let mut found: Vec<Commitment> = out
            .reserved_instances()
            .iter()
            .map(|ri| commitment(ri, tag_key, token))
            .collect();
        // A live one wins over a failed one.
        found.sort_by_key(|c| super::aws_liveness(c.state.as_deref()) != super::Liveness::Live);
        Ok(found.into_iter().next())
    }

    #[tracing::instrument(
        name = "provider_call",
        level = "debug",
        skip_all,
        fields(op = "ec2:DescribeReservedInstancesOfferings")
    )]
    async fn resolve_offering(
        client: &Clients<Self::Sdk>,
        rec: &Recommendation,
    ) -> Result<Offering, PurchaseError> {
        let instance_type = required(&rec.resource_type, "resource_type")?;
        let platform = rec
            .platform
            .clone()
            .unwrap_or_else(|| "Linux/UNIX".to_owned());
        let class = rec.offering_class.unwrap_or(OfferingClass::Standard);
        let mut lookup = client
            .lookup
            .describe_reserved_instances_offerings()
            .instance_tenancy(Tenancy::Default)
            .include_marketplace(false)
            .filters(Filter::builder().name("scope").values(REGION_SCOPE).build());
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
                let out = request.send().await.map_err(|e| {
                    offering_lookup_failed("ec2:DescribeReservedInstancesOfferings", &e)
                })?;
                let page = out
                    .reserved_instances_offerings()
                    .iter()
                    // The filter asked for regional ones; checked again, because an offering of
                    // the wrong scope would buy a zonal reservation.
                    .filter(|o| {
                        o.marketplace() != Some(true) && o.scope() == Some(&Scope::Regional)
                    })
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

    #[tracing::instrument(
        name = "provider_call",
        level = "debug",
        skip_all,
        fields(op = "ec2:PurchaseReservedInstancesOffering (dry run)")
    )]
    async fn dry_run(
        client: &Clients<Self::Sdk>,
        offering: &Offering,
        count: i32,
    ) -> Result<(), PurchaseError> {
        // EC2's native dry run checks permissions and the offering without buying.
        let result = client
            .lookup
            .purchase_reserved_instances_offering()
            .reserved_instances_offering_id(&offering.id)
            .instance_count(count)
            .dry_run(true)
            .send()
            .await;
        match result {
            Err(e) if code(&e) == Some("DryRunOperation") => Ok(()),
            Err(e) => Err(classify(
                "ec2:PurchaseReservedInstancesOffering (dry run)",
                &e,
            )),
            Ok(_) => Err(PurchaseError::transient(
                "ec2: dry-run purchase returned success instead of DryRunOperation",
            )),
        }
    }

    #[tracing::instrument(
        name = "provider_call",
        level = "debug",
        skip_all,
        fields(op = "ec2:DescribeReservedInstances")
    )]
    async fn list_matching(
        client: &Clients<Self::Sdk>,
        o: &Offering,
        tag_key: &str,
        token: &IdempotencyToken,
    ) -> Result<Vec<Commitment>, PurchaseError> {
        // DescribeReservedInstances is not paginated (no NextToken in the model).
        let out = client
            .lookup
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
            .filters(Filter::builder().name("scope").values(REGION_SCOPE).build())
            .filters(states_filter())
            .send()
            .await
            .map_err(|e| lookup_failed("ec2:DescribeReservedInstances (snapshot)", &e))?;
        Ok(out
            .reserved_instances()
            .iter()
            .filter(|ri| matches_offering(ri, o))
            .map(|ri| commitment(ri, tag_key, token))
            .collect())
    }

    #[tracing::instrument(
        name = "provider_call",
        level = "debug",
        skip_all,
        fields(op = "ec2:PurchaseReservedInstancesOffering")
    )]
    async fn buy(
        client: &Clients<Self::Sdk>,
        offering: &Offering,
        count: i32,
    ) -> Result<String, PurchaseError> {
        let bought = client
            .once
            .purchase_reserved_instances_offering()
            .reserved_instances_offering_id(&offering.id)
            .instance_count(count)
            .send()
            .await
            .map_err(|e| classify_purchase("ec2:PurchaseReservedInstancesOffering", &e))?;
        match bought.reserved_instances_id() {
            Some(id) if !id.is_empty() => Ok(id.to_owned()),
            _ => Err(PurchaseError::ambiguous(
                "ec2:PurchaseReservedInstancesOffering answered without a reservedInstancesId",
            )),
        }
    }

    async fn mark(
        client: &Clients<Self::Sdk>,
        id: &str,
        tag_key: &str,
        token: &IdempotencyToken,
    ) -> bool {
        match tag(client, id, tag_key, token).await {
            Ok(()) => false,
            Err(e) => {
                tracing::warn!(commitment.id = %id, error = %e, "could not tag the RI; recorded as tag_pending for the reaper");
                true
            }
        }
    }

    async fn remark(
        client: &Clients<Self::Sdk>,
        id: &str,
        tag_key: &str,
        token: &IdempotencyToken,
    ) -> Result<bool, PurchaseError> {
        tag(client, id, tag_key, token).await?;
        Ok(true)
    }
}
