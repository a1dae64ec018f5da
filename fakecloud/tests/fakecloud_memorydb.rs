//! fakecloud's MemoryDB reserved nodes (awsJson1_1), driven through the real `aws-sdk-memorydb`
//! client.

use aws_sdk_memorydb::error::ProvideErrorMetadata;
use aws_sdk_memorydb::types::Tag;
use aws_sdk_memorydb::Client;
use buyonce_fakecloud::{sdk, FakeCloud, FakeCloudConfig};

async fn start() -> (FakeCloud, Client) {
    let fc = FakeCloud::start(FakeCloudConfig::default())
        .await
        .expect("fakecloud starts");
    let client = Client::new(&sdk::config_without_retries(&fc.endpoint(), "us-east-1"));
    (fc, client)
}

async fn offering_id(db: &Client, duration: &str, payment: &str) -> String {
    let found = db
        .describe_reserved_nodes_offerings()
        .node_type("db.r6g.large")
        .duration(duration)
        .offering_type(payment)
        .send()
        .await
        .expect("lookup succeeds")
        .reserved_nodes_offerings
        .unwrap_or_default();
    assert_eq!(found.len(), 1, "{duration} {payment}");
    assert_eq!(found[0].node_type.as_deref(), Some("db.r6g.large"));
    found[0].reserved_nodes_offering_id.clone().unwrap()
}

#[tokio::test]
async fn lookups_find_exactly_one_offering() {
    let (_fc, db) = start().await;
    for payment in ["All Upfront", "Partial Upfront", "No Upfront"] {
        assert_eq!(
            offering_id(&db, "1", payment).await,
            offering_id(&db, "31536000", payment).await
        );
        offering_id(&db, "94608000", payment).await;
    }
    let err = db
        .describe_reserved_nodes_offerings()
        .duration("7")
        .send()
        .await
        .unwrap_err();
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_invalid_parameter_value_exception()),
        "{err:?}"
    );
}

#[tokio::test]
async fn offerings_are_paged() {
    let (_fc, db) = start().await;
    let mut count = 0;
    let mut token = None;
    loop {
        let out = db
            .describe_reserved_nodes_offerings()
            .max_results(7)
            .set_next_token(token)
            .send()
            .await
            .unwrap();
        count += out.reserved_nodes_offerings().len();
        token = out.next_token;
        if token.is_none() {
            break;
        }
    }
    assert_eq!(count, 18, "3 node types × 2 terms × 3 payment options");
}

#[tokio::test]
async fn purchase_describe_duplicate_and_not_found() {
    let (fc, db) = start().await;
    let offering = offering_id(&db, "1", "All Upfront").await;
    let purchase = || {
        db.purchase_reserved_nodes_offering()
            .reserved_nodes_offering_id(&offering)
            .reservation_id("mdb-tok-1")
            .node_count(3)
            .tags(
                Tag::builder()
                    .key("buyonce-idempotency-token")
                    .value("tok-1")
                    .build(),
            )
            .send()
    };
    let node = purchase()
        .await
        .expect("purchase succeeds")
        .reserved_node
        .unwrap();
    assert_eq!(node.reservation_id.as_deref(), Some("mdb-tok-1"));
    assert_eq!(node.node_count, 3);
    assert_eq!(node.state.as_deref(), Some("payment-pending"));
    assert!(node.start_time.is_some());
    assert!(node
        .arn
        .as_deref()
        .unwrap()
        .ends_with(":reservednode/mdb-tok-1"));

    let err = purchase().await.expect_err("duplicate is refused");
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_reserved_node_already_exists_fault()),
        "{err:?}"
    );
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));

    let found = db
        .describe_reserved_nodes()
        .reservation_id("mdb-tok-1")
        .send()
        .await
        .unwrap();
    assert_eq!(found.reserved_nodes().len(), 1);
    assert_eq!(found.reserved_nodes()[0].fixed_price, node.fixed_price);

    let err = db
        .describe_reserved_nodes()
        .reservation_id("mdb-missing")
        .send()
        .await
        .unwrap_err();
    assert!(err
        .as_service_error()
        .is_some_and(|e| e.is_reserved_node_not_found_fault()));
    let err = db
        .purchase_reserved_nodes_offering()
        .reserved_nodes_offering_id("missing")
        .send()
        .await
        .unwrap_err();
    assert!(err
        .as_service_error()
        .is_some_and(|e| e.is_reserved_nodes_offering_not_found_fault()));

    let ledger = fc.ledger();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].service, "memorydb");
    assert_eq!(
        ledger[0]
            .tags
            .get("buyonce-idempotency-token")
            .map(String::as_str),
        Some("tok-1")
    );
    assert!((ledger[0].price.upfront - node.fixed_price * 3.0).abs() < 1e-6);
}

#[tokio::test]
async fn a_wrong_secret_or_unknown_key_is_refused_as_awsjson_does() {
    let (fc, _) = start().await;
    let retry = aws_smithy_types::retry::RetryConfig::disabled();
    let cases = [
        ("test", "wrong", "InvalidSignatureException"),
        ("AKIANOBODY", "test", "UnrecognizedClientException"),
    ];
    for (key, secret, code) in cases {
        let config = sdk::config_with(
            &fc.endpoint(),
            "us-east-1",
            sdk::credentials(key, secret, None),
            retry.clone(),
        );
        let err = Client::new(&config)
            .describe_reserved_nodes()
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(code));
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));
    }
}
