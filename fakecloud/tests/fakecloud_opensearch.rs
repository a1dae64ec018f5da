//! fakecloud's OpenSearch reserved instances (restJson1), driven through the real
//! `aws-sdk-opensearch` client.

use std::collections::HashSet;

use aws_sdk_opensearch::error::ProvideErrorMetadata;
use aws_sdk_opensearch::types::{ReservedInstanceOffering, ReservedInstancePaymentOption};
use aws_sdk_opensearch::Client;
use buyonce_fakecloud::{sdk, FakeCloud, FakeCloudConfig};

async fn start() -> (FakeCloud, Client) {
    let fc = FakeCloud::start(FakeCloudConfig::default())
        .await
        .expect("fakecloud starts");
    let client = Client::new(&sdk::config_without_retries(&fc.endpoint(), "us-east-1"));
    (fc, client)
}

async fn all_offerings(os: &Client) -> Vec<ReservedInstanceOffering> {
    let mut all = Vec::new();
    let mut token = None;
    loop {
        let out = os
            .describe_reserved_instance_offerings()
            .max_results(5)
            .set_next_token(token)
            .send()
            .await
            .unwrap();
        all.extend(out.reserved_instance_offerings.unwrap_or_default());
        token = out.next_token;
        if token.is_none() {
            return all;
        }
    }
}

/// The worker lists the offerings and filters client-side.
async fn offering_id(os: &Client) -> String {
    let found: Vec<_> = all_offerings(os)
        .await
        .into_iter()
        .filter(|o| {
            o.instance_type.as_ref().map(|t| t.as_str()) == Some("r6g.large.search")
                && o.duration == 31_536_000
                && o.payment_option == Some(ReservedInstancePaymentOption::AllUpfront)
        })
        .collect();
    assert_eq!(found.len(), 1);
    found[0].reserved_instance_offering_id.clone().unwrap()
}

#[tokio::test]
async fn offerings_are_listed_in_pages_with_every_payment_option() {
    let (_fc, os) = start().await;
    let all = all_offerings(&os).await;
    assert_eq!(
        all.len(),
        18,
        "3 instance types × 2 terms × 3 payment options"
    );
    let payments: HashSet<_> = all
        .iter()
        .filter_map(|o| o.payment_option.clone())
        .collect();
    assert_eq!(payments.len(), 3);
    let err = os
        .describe_reserved_instance_offerings()
        .max_results(101)
        .send()
        .await
        .unwrap_err();
    assert!(err
        .as_service_error()
        .is_some_and(|e| e.is_validation_exception()));
}

#[tokio::test]
async fn a_reservation_is_found_by_name_and_a_duplicate_name_is_409() {
    let (fc, os) = start().await;
    let offering = offering_id(&os).await;
    let purchase = |name: &'static str| {
        os.purchase_reserved_instance_offering()
            .reserved_instance_offering_id(&offering)
            .reservation_name(name)
            .instance_count(2)
            .send()
    };
    let bought = purchase("os-tok-1").await.expect("purchase succeeds");
    assert_eq!(bought.reservation_name.as_deref(), Some("os-tok-1"));
    let id = bought.reserved_instance_id.unwrap();

    let err = purchase("os-tok-1")
        .await
        .expect_err("duplicate name is refused");
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_resource_already_exists_exception()),
        "{err:?}"
    );
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(409));

    let listed = os.describe_reserved_instances().send().await.unwrap();
    let mine: Vec<_> = listed
        .reserved_instances()
        .iter()
        .filter(|r| r.reservation_name.as_deref() == Some("os-tok-1"))
        .collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].reserved_instance_id.as_deref(), Some(id.as_str()));
    assert_eq!(mine[0].instance_count, 2);
    assert_eq!(mine[0].state.as_deref(), Some("payment-pending"));
    assert_eq!(
        mine[0].payment_option,
        Some(ReservedInstancePaymentOption::AllUpfront)
    );

    let by_id = os
        .describe_reserved_instances()
        .reserved_instance_id(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(by_id.reserved_instances().len(), 1);
    let err = os
        .describe_reserved_instances()
        .reserved_instance_id("missing")
        .send()
        .await
        .unwrap_err();
    assert!(err
        .as_service_error()
        .is_some_and(|e| e.is_resource_not_found_exception()));
    assert_eq!(
        err.raw_response().map(|r| r.status().as_u16()),
        Some(409),
        "OpenSearch answers 409 here too"
    );

    let entry = &fc.ledger()[0];
    assert_eq!(entry.service, "opensearch");
    assert_eq!(entry.idempotency_handle.as_deref(), Some("os-tok-1"));
}

#[tokio::test]
async fn the_reservation_name_must_have_5_to_64_characters() {
    let (fc, os) = start().await;
    let offering = offering_id(&os).await;
    for name in ["abcd".to_string(), "x".repeat(65)] {
        let err = os
            .purchase_reserved_instance_offering()
            .reserved_instance_offering_id(&offering)
            .reservation_name(name)
            .send()
            .await
            .expect_err("the SDK does not check the length; the service does");
        assert!(
            err.as_service_error()
                .is_some_and(|e| e.is_validation_exception()),
            "{err:?}"
        );
    }
    assert!(fc.ledger().is_empty());
}

#[tokio::test]
async fn reservations_are_paged() {
    let (_fc, os) = start().await;
    let offering = offering_id(&os).await;
    for i in 0..5 {
        os.purchase_reserved_instance_offering()
            .reserved_instance_offering_id(&offering)
            .reservation_name(format!("reservation-{i}"))
            .send()
            .await
            .unwrap();
    }
    let first = os
        .describe_reserved_instances()
        .max_results(2)
        .send()
        .await
        .unwrap();
    assert_eq!(first.reserved_instances().len(), 2);
    let mut names: Vec<_> = first
        .reserved_instances()
        .iter()
        .filter_map(|r| r.reservation_name.clone())
        .collect();
    let mut token = first.next_token;
    while let Some(t) = token {
        let page = os
            .describe_reserved_instances()
            .max_results(2)
            .next_token(t)
            .send()
            .await
            .unwrap();
        names.extend(
            page.reserved_instances()
                .iter()
                .filter_map(|r| r.reservation_name.clone()),
        );
        token = page.next_token;
    }
    assert_eq!(
        names,
        (0..5)
            .map(|i| format!("reservation-{i}"))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn an_unknown_offering_is_resource_not_found() {
    let (_fc, os) = start().await;
    let err = os
        .purchase_reserved_instance_offering()
        .reserved_instance_offering_id("00000000-0000-4000-8000-000000000000")
        .reservation_name("valid-name")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ResourceNotFoundException"));
}

#[tokio::test]
async fn strict_realism_sells_a_second_reservation_under_a_name_in_use() {
    let fc = FakeCloud::start(FakeCloudConfig {
        realism: buyonce_fakecloud::Realism {
            opensearch_duplicate_names: true,
            ..buyonce_fakecloud::Realism::friendly()
        },
        ..FakeCloudConfig::default()
    })
    .await
    .unwrap();
    let os = Client::new(&sdk::config_without_retries(&fc.endpoint(), "us-east-1"));
    let id = offering_id(&os).await;
    for _ in 0..2 {
        os.purchase_reserved_instance_offering()
            .reserved_instance_offering_id(&id)
            .reservation_name("buyonce-same-name")
            .instance_count(1)
            .send()
            .await
            .expect("the model does not say names are unique");
    }
    assert_eq!(fc.ledger().len(), 2);
}

#[tokio::test]
async fn an_offering_id_that_is_not_a_guid_is_a_validation_error() {
    let (fc, os) = start().await;
    let e = os
        .purchase_reserved_instance_offering()
        .reserved_instance_offering_id("not-a-guid")
        .reservation_name("buyonce-x1234")
        .send()
        .await
        .expect_err("the model's GUID pattern");
    assert_eq!(e.code(), Some("ValidationException"));
    assert!(fc.ledger().is_empty());
}
