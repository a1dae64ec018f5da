//! fakecloud's EC2 Reserved Instances, driven through the real `aws-sdk-ec2` client.

use std::time::Duration;

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{
    Filter, InstanceType, OfferingClassType, OfferingTypeValues, ReservedInstanceLimitPrice,
    ReservedInstancesOffering, RiProductDescription, Scope, Tag, Tenancy,
};
use aws_sdk_ec2::Client;
use buyonce_fakecloud::{sdk, FakeCloud, FakeCloudConfig};

const ONE_YEAR: i64 = 31_536_000;
const THREE_YEARS: i64 = 94_608_000;
const TAG_KEY: &str = "buyonce-idempotency-token";

async fn start(config: FakeCloudConfig) -> (FakeCloud, Client) {
    let fc = FakeCloud::start(config).await.expect("fakecloud starts");
    let client = Client::new(&sdk::config_without_retries(&fc.endpoint(), "us-east-1"));
    (fc, client)
}

/// The lookup exactly as the worker makes it.
async fn offerings(
    ec2: &Client,
    instance_type: InstanceType,
    class: OfferingClassType,
    payment: OfferingTypeValues,
    duration: i64,
) -> Vec<ReservedInstancesOffering> {
    ec2.describe_reserved_instances_offerings()
        .instance_type(instance_type)
        .product_description(RiProductDescription::LinuxUnix)
        .offering_class(class)
        .offering_type(payment)
        .min_duration(duration)
        .max_duration(duration)
        .instance_tenancy(Tenancy::Default)
        .include_marketplace(false)
        // Regional offerings, as the worker asks (without it every zone's is listed too).
        .filters(Filter::builder().name("scope").values("Region").build())
        .send()
        .await
        .expect("offerings lookup succeeds")
        .reserved_instances_offerings
        .unwrap_or_default()
}

async fn m5_large_all_upfront(ec2: &Client) -> ReservedInstancesOffering {
    let mut found = offerings(
        ec2,
        InstanceType::M5Large,
        OfferingClassType::Standard,
        OfferingTypeValues::AllUpfront,
        ONE_YEAR,
    )
    .await;
    assert_eq!(found.len(), 1);
    found.remove(0)
}

async fn buy(ec2: &Client, offering_id: &str, count: i32) -> String {
    ec2.purchase_reserved_instances_offering()
        .reserved_instances_offering_id(offering_id)
        .instance_count(count)
        .send()
        .await
        .expect("purchase succeeds")
        .reserved_instances_id
        .expect("purchase returns an RI ID")
}

fn token_filter(value: &str) -> Filter {
    Filter::builder()
        .name(format!("tag:{TAG_KEY}"))
        .values(value)
        .build()
}

fn live_states() -> Filter {
    Filter::builder()
        .name("state")
        .values("active")
        .values("payment-pending")
        .build()
}

#[tokio::test]
async fn every_worker_lookup_combination_finds_exactly_one_offering() {
    let (_fc, ec2) = start(FakeCloudConfig::default()).await;
    for class in [OfferingClassType::Standard, OfferingClassType::Convertible] {
        for payment in [
            OfferingTypeValues::AllUpfront,
            OfferingTypeValues::PartialUpfront,
            OfferingTypeValues::NoUpfront,
        ] {
            for duration in [ONE_YEAR, THREE_YEARS] {
                let found = offerings(
                    &ec2,
                    InstanceType::M5Large,
                    class.clone(),
                    payment.clone(),
                    duration,
                )
                .await;
                assert_eq!(found.len(), 1, "{class:?} {payment:?} {duration}");
                let o = &found[0];
                assert_eq!(o.instance_type, Some(InstanceType::M5Large));
                assert_eq!(o.duration, Some(duration));
                assert_eq!(o.offering_type.as_ref(), Some(&payment));
                assert_eq!(o.offering_class.as_ref(), Some(&class));
                let fixed = o.fixed_price.expect("fixed price");
                let hourly: f64 = o.recurring_charges().iter().filter_map(|c| c.amount).sum();
                match payment {
                    OfferingTypeValues::AllUpfront => assert!(fixed > 0.0 && hourly == 0.0),
                    OfferingTypeValues::NoUpfront => assert!(fixed == 0.0 && hourly > 0.0),
                    _ => assert!(fixed > 0.0 && hourly > 0.0),
                }
            }
        }
    }
}

#[tokio::test]
async fn without_a_zone_the_regional_offering_and_one_per_zone_are_listed_at_one_price() {
    let (_fc, ec2) = start(FakeCloudConfig::default()).await;
    let all = ec2
        .describe_reserved_instances_offerings()
        .instance_type(InstanceType::M5Large)
        .product_description(RiProductDescription::LinuxUnix)
        .offering_class(OfferingClassType::Standard)
        .offering_type(OfferingTypeValues::AllUpfront)
        .min_duration(ONE_YEAR)
        .max_duration(ONE_YEAR)
        .send()
        .await
        .unwrap()
        .reserved_instances_offerings
        .unwrap_or_default();
    assert_eq!(all.len(), 4, "one regional, three zonal: {all:?}");
    let regional: Vec<_> = all
        .iter()
        .filter(|o| o.scope == Some(Scope::Regional))
        .collect();
    assert_eq!(regional.len(), 1);
    assert!(regional[0].availability_zone.is_none());
    let zones: Vec<_> = all
        .iter()
        .filter(|o| o.scope == Some(Scope::AvailabilityZone))
        .filter_map(|o| o.availability_zone.clone())
        .collect();
    assert_eq!(zones, ["us-east-1a", "us-east-1b", "us-east-1c"]);
    assert!(all.iter().all(|o| o.fixed_price == regional[0].fixed_price));

    // One zone asked for: only its offering.
    let in_b = ec2
        .describe_reserved_instances_offerings()
        .instance_type(InstanceType::M5Large)
        .availability_zone("us-east-1b")
        .send()
        .await
        .unwrap()
        .reserved_instances_offerings
        .unwrap_or_default();
    assert!(!in_b.is_empty());
    assert!(in_b
        .iter()
        .all(|o| o.availability_zone.as_deref() == Some("us-east-1b")));

    // A zonal offering buys a zonal RI.
    let zonal = all
        .iter()
        .find(|o| o.scope == Some(Scope::AvailabilityZone))
        .unwrap();
    let id = buy(
        &ec2,
        zonal.reserved_instances_offering_id.as_deref().unwrap(),
        1,
    )
    .await;
    let ri = ec2
        .describe_reserved_instances()
        .reserved_instances_ids(&id)
        .send()
        .await
        .unwrap()
        .reserved_instances
        .unwrap_or_default()
        .remove(0);
    assert_eq!(ri.scope, Some(Scope::AvailabilityZone));
    assert_eq!(ri.availability_zone.as_deref(), Some("us-east-1a"));
}

#[tokio::test]
async fn offering_ids_are_stable_and_differ_between_regions() {
    let (fc, east) = start(FakeCloudConfig::default()).await;
    let west = Client::new(&sdk::config_without_retries(&fc.endpoint(), "eu-west-1"));
    let a = m5_large_all_upfront(&east).await;
    let b = m5_large_all_upfront(&east).await;
    let c = m5_large_all_upfront(&west).await;
    assert_eq!(
        a.reserved_instances_offering_id,
        b.reserved_instances_offering_id
    );
    assert_ne!(
        a.reserved_instances_offering_id,
        c.reserved_instances_offering_id
    );

    // An offering of another region cannot be bought here.
    let err = east
        .purchase_reserved_instances_offering()
        .reserved_instances_offering_id(c.reserved_instances_offering_id.unwrap())
        .instance_count(1)
        .send()
        .await
        .expect_err("foreign offering is refused");
    assert_eq!(err.code(), Some("InvalidReservedInstancesOfferingId"));
    assert!(fc.ledger().is_empty());
}

#[tokio::test]
async fn offerings_are_paged_with_next_token() {
    let (_fc, ec2) = start(FakeCloudConfig::default()).await;
    let all = ec2
        .describe_reserved_instances_offerings()
        .instance_type(InstanceType::M5Large)
        .send()
        .await
        .unwrap()
        .reserved_instances_offerings
        .unwrap_or_default();
    assert_eq!(
        all.len(),
        96,
        "2 platforms × 2 classes × 2 terms × 3 payment options, regional and in 3 zones"
    );

    let mut paged = Vec::new();
    let mut token = None;
    loop {
        let out = ec2
            .describe_reserved_instances_offerings()
            .instance_type(InstanceType::M5Large)
            .max_results(5)
            .set_next_token(token)
            .send()
            .await
            .unwrap();
        let page = out.reserved_instances_offerings.unwrap_or_default();
        assert!(page.len() <= 5);
        paged.extend(page);
        token = out.next_token;
        if token.is_none() {
            break;
        }
    }
    assert_eq!(paged, all);
}

#[tokio::test]
async fn a_purchase_is_payment_pending_then_active_and_priced_per_unit() {
    let config = FakeCloudConfig {
        ri_activation_delay: Duration::from_millis(300),
        ..Default::default()
    };
    let (fc, ec2) = start(config).await;
    let offering = m5_large_all_upfront(&ec2).await;
    let id = buy(
        &ec2,
        offering.reserved_instances_offering_id.as_deref().unwrap(),
        3,
    )
    .await;

    let described = ec2
        .describe_reserved_instances()
        .reserved_instances_ids(&id)
        .send()
        .await
        .unwrap();
    let ri = &described.reserved_instances()[0];
    assert_eq!(
        ri.state.as_ref().map(|s| s.as_str()),
        Some("payment-pending")
    );
    assert_eq!(ri.instance_count, Some(3));
    assert_eq!(ri.fixed_price, offering.fixed_price);
    assert_eq!(ri.instance_type, Some(InstanceType::M5Large));
    assert!(ri.start.is_some() && ri.end.is_some());

    tokio::time::sleep(Duration::from_millis(400)).await;
    let described = ec2
        .describe_reserved_instances()
        .reserved_instances_ids(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        described.reserved_instances()[0]
            .state
            .as_ref()
            .map(|s| s.as_str()),
        Some("active")
    );

    let ledger = fc.ledger();
    assert_eq!(ledger.len(), 1);
    let entry = &ledger[0];
    assert_eq!(
        (entry.provider.as_str(), entry.service.as_str()),
        ("aws", "ec2")
    );
    assert_eq!(
        (entry.account.as_str(), entry.region.as_str()),
        ("000000000000", "us-east-1")
    );
    assert_eq!(entry.commitment_id, id);
    assert_eq!(entry.count, 3);
    assert_eq!(entry.state, "active");
    let unit = f64::from(offering.fixed_price.unwrap());
    assert!(
        (entry.price.upfront - unit * 3.0).abs() < 0.01,
        "{} vs {}",
        entry.price.upfront,
        unit * 3.0
    );
    assert_eq!(fc.call_count("ec2:PurchaseReservedInstancesOffering"), 1);
}

#[tokio::test]
async fn dry_run_answers_dry_run_operation_and_buys_nothing() {
    let (fc, ec2) = start(FakeCloudConfig::default()).await;
    let offering = m5_large_all_upfront(&ec2).await;
    let err = ec2
        .purchase_reserved_instances_offering()
        .reserved_instances_offering_id(offering.reserved_instances_offering_id.unwrap())
        .instance_count(1)
        .dry_run(true)
        .limit_price(
            ReservedInstanceLimitPrice::builder()
                .amount(1.0)
                .currency_code("USD".into())
                .build(),
        )
        .send()
        .await
        .expect_err("dry run never succeeds");
    assert_eq!(err.code(), Some("DryRunOperation"));
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(412));
    assert!(fc.ledger().is_empty());
}

#[tokio::test]
async fn invalid_purchase_parameters_are_validation_errors() {
    let (fc, ec2) = start(FakeCloudConfig::default()).await;
    let offering = m5_large_all_upfront(&ec2).await;
    let id = offering.reserved_instances_offering_id.unwrap();
    let err = ec2
        .purchase_reserved_instances_offering()
        .reserved_instances_offering_id(&id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("MissingParameter"));
    let err = ec2
        .purchase_reserved_instances_offering()
        .reserved_instances_offering_id(&id)
        .instance_count(0)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidParameterValue"));
    let err = ec2
        .describe_reserved_instances_offerings()
        .filters(Filter::builder().name("no-such-filter").values("x").build())
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidParameterValue"));
    assert!(fc.ledger().is_empty());
}

#[tokio::test]
async fn the_tag_and_state_filters_find_only_the_tagged_live_ri() {
    let (fc, ec2) = start(FakeCloudConfig::default()).await;
    let offering_id = m5_large_all_upfront(&ec2)
        .await
        .reserved_instances_offering_id
        .unwrap();
    let tagged = buy(&ec2, &offering_id, 1).await;
    let untagged = buy(&ec2, &offering_id, 1).await;

    // The guard lookup before tagging finds nothing.
    let before = ec2
        .describe_reserved_instances()
        .filters(token_filter("tok-1"))
        .filters(live_states())
        .send()
        .await
        .unwrap();
    assert!(before.reserved_instances().is_empty());

    ec2.create_tags()
        .resources(&tagged)
        .tags(Tag::builder().key(TAG_KEY).value("tok-1").build())
        .send()
        .await
        .expect("tagging an RI succeeds");

    let found = ec2
        .describe_reserved_instances()
        .filters(token_filter("tok-1"))
        .filters(live_states())
        .send()
        .await
        .unwrap();
    let ids: Vec<_> = found
        .reserved_instances()
        .iter()
        .filter_map(|r| r.reserved_instances_id.clone())
        .collect();
    assert_eq!(ids, vec![tagged.clone()]);
    assert_eq!(
        found.reserved_instances()[0].tags()[0].value.as_deref(),
        Some("tok-1")
    );

    // tag-key and wildcard values work as in EC2; a retired RI no longer matches the state filter.
    let by_key = ec2
        .describe_reserved_instances()
        .filters(Filter::builder().name("tag-key").values(TAG_KEY).build())
        .send()
        .await
        .unwrap();
    assert_eq!(by_key.reserved_instances().len(), 1);
    let wildcard = ec2
        .describe_reserved_instances()
        .filters(token_filter("tok-*"))
        .send()
        .await
        .unwrap();
    assert_eq!(wildcard.reserved_instances().len(), 1);
    fc.set_state(&tagged, "retired").expect("known commitment");
    let live = ec2
        .describe_reserved_instances()
        .filters(token_filter("tok-1"))
        .filters(live_states())
        .send()
        .await
        .unwrap();
    assert!(live.reserved_instances().is_empty());

    // Tags are per account and region: another region does not see either RI.
    let west = Client::new(&sdk::config_without_retries(&fc.endpoint(), "us-west-2"));
    assert!(west
        .describe_reserved_instances()
        .send()
        .await
        .unwrap()
        .reserved_instances()
        .is_empty());

    let ledger = fc.ledger();
    let handle = |id: &str| {
        ledger
            .iter()
            .find(|e| e.commitment_id == id)
            .unwrap()
            .idempotency_handle
            .clone()
    };
    assert_eq!(handle(&tagged).as_deref(), Some("tok-1"));
    assert_eq!(handle(&untagged), None);
}

#[tokio::test]
async fn create_tags_refuses_unknown_ids_and_reserved_keys() {
    let (fc, ec2) = start(FakeCloudConfig::default()).await;
    let offering_id = m5_large_all_upfront(&ec2)
        .await
        .reserved_instances_offering_id
        .unwrap();
    let id = buy(&ec2, &offering_id, 1).await;
    let err = ec2
        .create_tags()
        .resources(&id)
        .resources("00000000-0000-0000-0000-000000000000")
        .tags(Tag::builder().key(TAG_KEY).value("x").build())
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidID"));
    let err = ec2
        .create_tags()
        .resources(&id)
        .tags(Tag::builder().key("aws:x").value("x").build())
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidParameterValue"));
    // All or nothing: the valid ID was not tagged either.
    assert!(fc.ledger()[0].tags.is_empty());
}

#[tokio::test]
async fn a_wrong_secret_or_unknown_key_is_an_auth_failure() {
    let (fc, _) = start(FakeCloudConfig::default()).await;
    let retry = aws_smithy_types::retry::RetryConfig::disabled();
    for (key, secret) in [("test", "wrong-secret"), ("AKIAUNKNOWN", "test")] {
        let config = sdk::config_with(
            &fc.endpoint(),
            "us-east-1",
            sdk::credentials(key, secret, None),
            retry.clone(),
        );
        let err = Client::new(&config)
            .describe_reserved_instances()
            .send()
            .await
            .expect_err("must not authenticate");
        assert_eq!(err.code(), Some("AuthFailure"), "{key}/{secret}");
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(401));
    }
    // Counted, but nothing executed.
    assert_eq!(fc.call_count("ec2:DescribeReservedInstances"), 2);
}
