//! Property: N concurrent purchases carrying the same client-chosen identifier create exactly one
//! commitment, for every service that has such an identifier — and EC2, which has none, buys N.

use std::future::Future;
use std::pin::Pin;

use buyonce_fakecloud::{sdk, FakeCloud, FakeCloudConfig};
use proptest::prelude::*;

type Purchase = Pin<Box<dyn Future<Output = bool> + Send>>;

#[derive(Debug, Clone, Copy)]
enum Service {
    ElastiCache,
    MemoryDb,
    OpenSearch,
    Ec2,
}

/// Returns a factory of purchase futures (true = the call succeeded) for one identifier.
async fn purchaser(fc: &FakeCloud, service: Service) -> Box<dyn Fn() -> Purchase> {
    let config = sdk::config_without_retries(&fc.endpoint(), "us-east-1");
    match service {
        Service::ElastiCache => {
            let client = aws_sdk_elasticache::Client::new(&config);
            let offering = client
                .describe_reserved_cache_nodes_offerings()
                .send()
                .await
                .unwrap()
                .reserved_cache_nodes_offerings()[0]
                .reserved_cache_nodes_offering_id
                .clone()
                .unwrap();
            Box::new(move || {
                let call = client
                    .purchase_reserved_cache_nodes_offering()
                    .reserved_cache_nodes_offering_id(&offering)
                    .reserved_cache_node_id("same-id");
                Box::pin(async move { call.send().await.is_ok() })
            })
        }
        Service::MemoryDb => {
            let client = aws_sdk_memorydb::Client::new(&config);
            let offering = client
                .describe_reserved_nodes_offerings()
                .send()
                .await
                .unwrap()
                .reserved_nodes_offerings()[0]
                .reserved_nodes_offering_id
                .clone()
                .unwrap();
            Box::new(move || {
                let call = client
                    .purchase_reserved_nodes_offering()
                    .reserved_nodes_offering_id(&offering)
                    .reservation_id("same-id");
                Box::pin(async move { call.send().await.is_ok() })
            })
        }
        Service::OpenSearch => {
            let client = aws_sdk_opensearch::Client::new(&config);
            let offering = client
                .describe_reserved_instance_offerings()
                .send()
                .await
                .unwrap()
                .reserved_instance_offerings()[0]
                .reserved_instance_offering_id
                .clone()
                .unwrap();
            Box::new(move || {
                let call = client
                    .purchase_reserved_instance_offering()
                    .reserved_instance_offering_id(&offering)
                    .reservation_name("same-name");
                Box::pin(async move { call.send().await.is_ok() })
            })
        }
        Service::Ec2 => {
            let client = aws_sdk_ec2::Client::new(&config);
            let offering = client
                .describe_reserved_instances_offerings()
                .send()
                .await
                .unwrap()
                .reserved_instances_offerings()[0]
                .reserved_instances_offering_id
                .clone()
                .unwrap();
            Box::new(move || {
                let call = client
                    .purchase_reserved_instances_offering()
                    .reserved_instances_offering_id(&offering)
                    .instance_count(1);
                Box::pin(async move { call.send().await.is_ok() })
            })
        }
    }
}

/// Runs `n` purchases at once and returns (successful calls, commitments in the ledger).
fn race(service: Service, n: usize) -> (usize, usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let fc = FakeCloud::start(FakeCloudConfig::default()).await.unwrap();
        let purchase = purchaser(&fc, service).await;
        let tasks: Vec<_> = (0..n).map(|_| tokio::spawn(purchase())).collect();
        let mut ok = 0;
        for task in tasks {
            if task.await.unwrap() {
                ok += 1;
            }
        }
        let commitments = fc.ledger().len();
        fc.shutdown().await;
        (ok, commitments)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn one_identifier_buys_once(n in 2usize..24, which in 0usize..3) {
        let service = [Service::ElastiCache, Service::MemoryDb, Service::OpenSearch][which];
        let (ok, commitments) = race(service, n);
        prop_assert_eq!(ok, 1, "{:?}: exactly one call succeeds", service);
        prop_assert_eq!(commitments, 1, "{:?}: exactly one commitment", service);
    }
}

#[test]
fn ec2_has_no_client_token_so_concurrent_purchases_all_buy() {
    // The emulator is not kinder than EC2: without the tag guard, N calls are N RIs.
    assert_eq!(race(Service::Ec2, 8), (8, 8));
}
