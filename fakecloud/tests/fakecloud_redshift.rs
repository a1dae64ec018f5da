//! fakecloud's Redshift reserved nodes, driven through the real `aws-sdk-redshift` client.

use std::time::Duration;

use aws_sdk_redshift::error::ProvideErrorMetadata;
use aws_sdk_redshift::types::Tag;
use aws_sdk_redshift::Client;
use buyonce_fakecloud::{sdk, FakeCloud, FakeCloudConfig};

async fn start(config: FakeCloudConfig) -> (FakeCloud, Client) {
    let fc = FakeCloud::start(config).await.expect("fakecloud starts");
    let client = Client::new(&sdk::config_without_retries(&fc.endpoint(), "us-east-1"));
    (fc, client)
}

/// The worker lists the offerings and filters client-side.
async fn offering_id(rs: &Client) -> String {
    let mut all = Vec::new();
    let mut marker = None;
    loop {
        let out = rs
            .describe_reserved_node_offerings()
            .max_records(20)
            .set_marker(marker)
            .send()
            .await
            .unwrap();
        all.extend(out.reserved_node_offerings.unwrap_or_default());
        marker = out.marker;
        if marker.is_none() {
            break;
        }
    }
    assert_eq!(all.len(), 18);
    let found: Vec<_> = all
        .into_iter()
        .filter(|o| {
            o.node_type.as_deref() == Some("ra3.xlplus")
                && o.duration == Some(94_608_000)
                && o.offering_type.as_deref() == Some("Partial Upfront")
        })
        .collect();
    assert_eq!(found.len(), 1);
    found[0].reserved_node_offering_id.clone().unwrap()
}

#[tokio::test]
async fn purchases_are_pending_payment_then_active_and_found_by_id() {
    let config = FakeCloudConfig {
        ri_activation_delay: Duration::from_millis(300),
        ..Default::default()
    };
    let (fc, rs) = start(config).await;
    let offering = offering_id(&rs).await;
    let node = rs
        .purchase_reserved_node_offering()
        .reserved_node_offering_id(&offering)
        .node_count(2)
        .send()
        .await
        .expect("purchase succeeds")
        .reserved_node
        .unwrap();
    // Redshift spells the pending state differently from the other services.
    assert_eq!(node.state.as_deref(), Some("pending-payment"));
    assert_eq!(node.node_count, Some(2));
    let id = node.reserved_node_id.clone().unwrap();

    tokio::time::sleep(Duration::from_millis(400)).await;
    let found = rs
        .describe_reserved_nodes()
        .reserved_node_id(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(found.reserved_nodes()[0].state.as_deref(), Some("active"));
    assert_eq!(
        found.reserved_nodes()[0]
            .reserved_node_offering_id
            .as_deref(),
        Some(offering.as_str())
    );

    let err = rs
        .describe_reserved_nodes()
        .reserved_node_id("missing")
        .send()
        .await
        .unwrap_err();
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_reserved_node_not_found_fault()),
        "{err:?}"
    );
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(404));

    let entry = &fc.ledger()[0];
    assert_eq!(entry.service, "redshift");
    assert_eq!(
        entry.idempotency_handle, None,
        "Redshift purchases carry no client handle"
    );
}

#[tokio::test]
async fn reserved_nodes_are_paged() {
    let (_fc, rs) = start(FakeCloudConfig::default()).await;
    let offering = offering_id(&rs).await;
    for _ in 0..21 {
        rs.purchase_reserved_node_offering()
            .reserved_node_offering_id(&offering)
            .send()
            .await
            .unwrap();
    }
    let first = rs
        .describe_reserved_nodes()
        .max_records(20)
        .send()
        .await
        .unwrap();
    assert_eq!(first.reserved_nodes().len(), 20);
    let second = rs
        .describe_reserved_nodes()
        .max_records(20)
        .marker(first.marker.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(second.reserved_nodes().len(), 1);
    assert!(second.marker.is_none());
}

#[tokio::test]
async fn reserved_nodes_cannot_be_tagged() {
    let (fc, rs) = start(FakeCloudConfig::default()).await;
    let offering = offering_id(&rs).await;
    let id = rs
        .purchase_reserved_node_offering()
        .reserved_node_offering_id(&offering)
        .send()
        .await
        .unwrap()
        .reserved_node
        .unwrap()
        .reserved_node_id
        .unwrap();
    let arn = format!("arn:aws:redshift:us-east-1:000000000000:reservednode:{id}");
    let err = rs
        .create_tags()
        .resource_name(&arn)
        .tags(
            Tag::builder()
                .key("buyonce-idempotency-token")
                .value("tok")
                .build(),
        )
        .send()
        .await
        .expect_err("reserved nodes are not taggable");
    assert_eq!(err.code(), Some("InvalidParameterValue"));
    let err = rs
        .describe_tags()
        .resource_name(&arn)
        .send()
        .await
        .expect_err("nor describable by tag");
    assert_eq!(err.code(), Some("InvalidParameterValue"));
    let err = rs
        .describe_tags()
        .resource_type("reservednode")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidParameterValue"));
    assert!(fc.ledger()[0].tags.is_empty());

    let err = rs
        .purchase_reserved_node_offering()
        .reserved_node_offering_id("missing")
        .send()
        .await
        .unwrap_err();
    assert!(err
        .as_service_error()
        .is_some_and(|e| e.is_reserved_node_offering_not_found_fault()));
}
