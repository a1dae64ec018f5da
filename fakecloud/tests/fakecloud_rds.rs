//! fakecloud's RDS reserved DB instances, driven through the real `aws-sdk-rds` client.

use std::collections::HashSet;
use std::time::Duration;

use aws_sdk_rds::error::ProvideErrorMetadata;
use aws_sdk_rds::types::{ReservedDbInstancesOffering, Tag};
use aws_sdk_rds::Client;
use buyonce_fakecloud::{sdk, FakeCloud, FakeCloudConfig};

async fn start(config: FakeCloudConfig) -> (FakeCloud, Client) {
    let fc = FakeCloud::start(config).await.expect("fakecloud starts");
    let client = Client::new(&sdk::config_without_retries(&fc.endpoint(), "eu-west-1"));
    (fc, client)
}

/// The lookup exactly as the worker makes it.
async fn lookup(
    rds: &Client,
    duration: &str,
    engine: &str,
    payment: &str,
    multi_az: bool,
) -> Vec<ReservedDbInstancesOffering> {
    rds.describe_reserved_db_instances_offerings()
        .db_instance_class("db.r6g.large")
        .duration(duration)
        .product_description(engine)
        .offering_type(payment)
        .multi_az(multi_az)
        .send()
        .await
        .expect("lookup succeeds")
        .reserved_db_instances_offerings
        .unwrap_or_default()
}

async fn offering_id(rds: &Client) -> String {
    let found = lookup(rds, "31536000", "postgresql", "Partial Upfront", true).await;
    assert_eq!(found.len(), 1);
    found[0].reserved_db_instances_offering_id.clone().unwrap()
}

#[tokio::test]
async fn lookups_find_exactly_one_offering_with_seconds_or_years() {
    let (_fc, rds) = start(FakeCloudConfig::default()).await;
    for engine in ["postgresql", "mysql"] {
        for multi_az in [false, true] {
            for payment in ["All Upfront", "Partial Upfront", "No Upfront"] {
                for (seconds, years) in [("31536000", "1"), ("94608000", "3")] {
                    let by_seconds = lookup(&rds, seconds, engine, payment, multi_az).await;
                    let by_years = lookup(&rds, years, engine, payment, multi_az).await;
                    assert_eq!(
                        by_seconds.len(),
                        1,
                        "{engine} {multi_az} {payment} {seconds}"
                    );
                    assert_eq!(by_seconds, by_years);
                    let o = &by_seconds[0];
                    assert_eq!(o.product_description.as_deref(), Some(engine));
                    assert_eq!(o.multi_az, Some(multi_az));
                    assert_eq!(o.duration.map(|d| d.to_string()).as_deref(), Some(seconds));
                }
            }
        }
    }
    let err = rds
        .describe_reserved_db_instances_offerings()
        .duration("2")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidParameterValue"));
}

#[tokio::test]
async fn offerings_are_paged_with_markers() {
    let (_fc, rds) = start(FakeCloudConfig::default()).await;
    let mut all = Vec::new();
    let mut marker = None;
    loop {
        let out = rds
            .describe_reserved_db_instances_offerings()
            .max_records(20)
            .set_marker(marker)
            .send()
            .await
            .unwrap();
        all.extend(out.reserved_db_instances_offerings.unwrap_or_default());
        marker = out.marker;
        if marker.is_none() {
            break;
        }
    }
    assert_eq!(
        all.len(),
        96,
        "4 classes × 2 engines × 2 AZ modes × 2 terms × 3 payment options"
    );
    let err = rds
        .describe_reserved_db_instances_offerings()
        .max_records(5)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidParameterValue"));
}

#[tokio::test]
async fn a_purchase_is_found_by_its_reservation_id() {
    let config = FakeCloudConfig {
        ri_activation_delay: Duration::from_millis(300),
        ..Default::default()
    };
    let (fc, rds) = start(config).await;
    let offering_id = offering_id(&rds).await;
    let bought = rds
        .purchase_reserved_db_instances_offering()
        .reserved_db_instances_offering_id(&offering_id)
        .reserved_db_instance_id("rds-4a667998cddd36583ee6f92b4e1f9fe36aeef04b")
        .db_instance_count(2)
        .tags(
            Tag::builder()
                .key("buyonce-idempotency-token")
                .value("tok")
                .build(),
        )
        .send()
        .await
        .expect("purchase succeeds")
        .reserved_db_instance
        .unwrap();
    assert_eq!(
        bought.reserved_db_instance_id.as_deref(),
        Some("rds-4a667998cddd36583ee6f92b4e1f9fe36aeef04b")
    );
    assert_eq!(bought.state.as_deref(), Some("payment-pending"));
    assert_eq!(bought.db_instance_count, Some(2));
    assert!(bought
        .reserved_db_instance_arn
        .as_deref()
        .unwrap()
        .starts_with("arn:aws:rds:eu-west-1:000000000000:ri:"));

    tokio::time::sleep(Duration::from_millis(400)).await;
    let described = rds
        .describe_reserved_db_instances()
        .reserved_db_instance_id("rds-4a667998cddd36583ee6f92b4e1f9fe36aeef04b")
        .send()
        .await
        .unwrap();
    let found = &described.reserved_db_instances()[0];
    assert_eq!(found.state.as_deref(), Some("active"));
    assert_eq!(found.fixed_price, bought.fixed_price);
    assert_eq!(found.recurring_charges(), bought.recurring_charges());

    let entry = &fc.ledger()[0];
    assert_eq!(
        (entry.service.as_str(), entry.region.as_str()),
        ("rds", "eu-west-1")
    );
    assert_eq!(
        entry.idempotency_handle.as_deref(),
        Some("rds-4a667998cddd36583ee6f92b4e1f9fe36aeef04b")
    );
    assert_eq!(
        entry
            .tags
            .get("buyonce-idempotency-token")
            .map(String::as_str),
        Some("tok")
    );
    assert!((entry.price.upfront - bought.fixed_price.unwrap() * 2.0).abs() < 1e-6);
}

#[tokio::test]
async fn a_duplicate_reservation_id_is_already_exists_with_404() {
    let (fc, rds) = start(FakeCloudConfig::default()).await;
    let offering_id = offering_id(&rds).await;
    let purchase = || {
        rds.purchase_reserved_db_instances_offering()
            .reserved_db_instances_offering_id(&offering_id)
            .reserved_db_instance_id("rds-dup")
            .send()
    };
    purchase().await.expect("first purchase succeeds");
    let err = purchase().await.expect_err("second purchase is refused");
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_reserved_db_instance_already_exists_fault()),
        "{err:?}"
    );
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(404));
    assert_eq!(fc.ledger().len(), 1);

    // The same ID in another region is another reservation.
    let west = Client::new(&sdk::config_without_retries(&fc.endpoint(), "us-west-2"));
    let west_offering = west
        .describe_reserved_db_instances_offerings()
        .db_instance_class("db.r6g.large")
        .send()
        .await
        .unwrap()
        .reserved_db_instances_offerings()[0]
        .reserved_db_instances_offering_id
        .clone()
        .unwrap();
    west.purchase_reserved_db_instances_offering()
        .reserved_db_instances_offering_id(west_offering)
        .reserved_db_instance_id("rds-dup")
        .send()
        .await
        .expect("same ID, other region");
    assert_eq!(fc.ledger().len(), 2);
}

#[tokio::test]
async fn describing_an_unknown_id_is_not_found() {
    let (_fc, rds) = start(FakeCloudConfig::default()).await;
    let err = rds
        .describe_reserved_db_instances()
        .reserved_db_instance_id("rds-missing")
        .send()
        .await
        .unwrap_err();
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_reserved_db_instance_not_found_fault()),
        "{err:?}"
    );
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(404));
    let err = rds
        .purchase_reserved_db_instances_offering()
        .reserved_db_instances_offering_id("no-such-offering")
        .send()
        .await
        .unwrap_err();
    assert!(err
        .as_service_error()
        .is_some_and(|e| e.is_reserved_db_instances_offering_not_found_fault()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_purchases_with_one_id_make_one_reservation() {
    let (fc, rds) = start(FakeCloudConfig::default()).await;
    let offering_id = offering_id(&rds).await;
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let rds = rds.clone();
            let offering_id = offering_id.clone();
            tokio::spawn(async move {
                rds.purchase_reserved_db_instances_offering()
                    .reserved_db_instances_offering_id(offering_id)
                    .reserved_db_instance_id("rds-race")
                    .send()
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    let mut codes = HashSet::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => {
                codes.insert(e.code().map(str::to_string));
            }
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(
        codes,
        HashSet::from([Some("ReservedDBInstanceAlreadyExists".to_string())])
    );
    assert_eq!(fc.ledger().len(), 1);
}

#[tokio::test]
async fn a_wrong_secret_is_signature_does_not_match() {
    let (fc, _) = start(FakeCloudConfig::default()).await;
    let config = sdk::config_with(
        &fc.endpoint(),
        "eu-west-1",
        sdk::credentials("test", "wrong", None),
        aws_smithy_types::retry::RetryConfig::disabled(),
    );
    let err = Client::new(&config)
        .describe_reserved_db_instances()
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("SignatureDoesNotMatch"));
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(403));
}
