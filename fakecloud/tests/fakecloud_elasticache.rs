//! fakecloud's ElastiCache reserved cache nodes, driven through the real `aws-sdk-elasticache`
//! client.

use std::time::Duration;

use aws_sdk_elasticache::error::ProvideErrorMetadata;
use aws_sdk_elasticache::Client;
use buyonce_fakecloud::{sdk, FakeCloud, FakeCloudConfig};

async fn start(config: FakeCloudConfig) -> (FakeCloud, Client) {
    let fc = FakeCloud::start(config).await.expect("fakecloud starts");
    let client = Client::new(&sdk::config_without_retries(&fc.endpoint(), "us-west-2"));
    (fc, client)
}

async fn offering_id(ec: &Client, engine: &str, duration: &str, payment: &str) -> String {
    let found = ec
        .describe_reserved_cache_nodes_offerings()
        .cache_node_type("cache.r6g.large")
        .duration(duration)
        .product_description(engine)
        .offering_type(payment)
        .send()
        .await
        .expect("lookup succeeds")
        .reserved_cache_nodes_offerings
        .unwrap_or_default();
    assert_eq!(found.len(), 1, "{engine} {duration} {payment}");
    found[0].reserved_cache_nodes_offering_id.clone().unwrap()
}

#[tokio::test]
async fn lookups_find_exactly_one_offering_per_engine_term_and_payment() {
    let (_fc, ec) = start(FakeCloudConfig::default()).await;
    for engine in ["redis", "valkey", "memcached"] {
        for payment in ["All Upfront", "Partial Upfront", "No Upfront"] {
            let by_years = offering_id(&ec, engine, "3", payment).await;
            assert_eq!(
                by_years,
                offering_id(&ec, engine, "94608000", payment).await
            );
        }
    }
}

#[tokio::test]
async fn purchase_describe_duplicate_and_not_found() {
    let config = FakeCloudConfig {
        ri_activation_delay: Duration::ZERO,
        ..Default::default()
    };
    let (fc, ec) = start(config).await;
    let offering = offering_id(&ec, "redis", "1", "No Upfront").await;
    let purchase = || {
        ec.purchase_reserved_cache_nodes_offering()
            .reserved_cache_nodes_offering_id(&offering)
            .reserved_cache_node_id("ec-tok-1")
            .cache_node_count(2)
            .send()
    };
    let node = purchase()
        .await
        .expect("purchase succeeds")
        .reserved_cache_node
        .unwrap();
    assert_eq!(node.reserved_cache_node_id.as_deref(), Some("ec-tok-1"));
    assert_eq!(node.cache_node_count, Some(2));
    assert_eq!(
        node.state.as_deref(),
        Some("active"),
        "no activation delay configured"
    );
    assert!(node
        .reservation_arn
        .as_deref()
        .unwrap()
        .contains(":reserved-instance:ec-tok-1"));

    let err = purchase().await.expect_err("duplicate ID is refused");
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_reserved_cache_node_already_exists_fault()),
        "{err:?}"
    );
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(404));

    let described = ec
        .describe_reserved_cache_nodes()
        .reserved_cache_node_id("ec-tok-1")
        .send()
        .await
        .unwrap();
    assert_eq!(described.reserved_cache_nodes().len(), 1);
    assert_eq!(
        described.reserved_cache_nodes()[0].recurring_charges(),
        node.recurring_charges()
    );

    let err = ec
        .describe_reserved_cache_nodes()
        .reserved_cache_node_id("ec-missing")
        .send()
        .await
        .unwrap_err();
    assert!(err
        .as_service_error()
        .is_some_and(|e| e.is_reserved_cache_node_not_found_fault()));
    assert_eq!(err.code(), Some("ReservedCacheNodeNotFound"));

    let err = ec
        .purchase_reserved_cache_nodes_offering()
        .reserved_cache_nodes_offering_id("missing-offering")
        .send()
        .await
        .unwrap_err();
    assert!(err
        .as_service_error()
        .is_some_and(|e| e.is_reserved_cache_nodes_offering_not_found_fault()));

    let ledger = fc.ledger();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].service, "elasticache");
    assert_eq!(ledger[0].idempotency_handle.as_deref(), Some("ec-tok-1"));
    assert_eq!(ledger[0].price.upfront, 0.0);
    assert!(ledger[0].price.recurring_hourly > 0.0);
}

#[tokio::test]
async fn reserved_nodes_are_paged() {
    let (_fc, ec) = start(FakeCloudConfig::default()).await;
    let offering = offering_id(&ec, "valkey", "1", "All Upfront").await;
    for i in 0..25 {
        ec.purchase_reserved_cache_nodes_offering()
            .reserved_cache_nodes_offering_id(&offering)
            .reserved_cache_node_id(format!("node-{i:02}"))
            .send()
            .await
            .unwrap();
    }
    let first = ec
        .describe_reserved_cache_nodes()
        .max_records(20)
        .send()
        .await
        .unwrap();
    assert_eq!(first.reserved_cache_nodes().len(), 20);
    let second = ec
        .describe_reserved_cache_nodes()
        .max_records(20)
        .marker(first.marker.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(second.reserved_cache_nodes().len(), 5);
    assert!(second.marker.is_none());
}
