//! fakecloud's fault injection, observed through the real SDK clients (retries disabled unless a
//! test is about retries, so that the fault reaches the caller as it happened).

use std::time::{Duration, Instant};

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    Filter, InstanceType, OfferingClassType, OfferingTypeValues, RiProductDescription, Tag,
};
use aws_smithy_types::retry::RetryConfig;
use buyonce_fakecloud::{
    sdk, AdminClient, CommitFailure, FakeCloud, FakeCloudConfig, FaultRule, Faults, InjectedError,
};

async fn start(config: FakeCloudConfig) -> FakeCloud {
    FakeCloud::start(config).await.expect("fakecloud starts")
}

fn ec2(fc: &FakeCloud) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::new(&sdk::config_without_retries(&fc.endpoint(), "us-east-1"))
}

fn rds(fc: &FakeCloud) -> aws_sdk_rds::Client {
    aws_sdk_rds::Client::new(&sdk::config_without_retries(&fc.endpoint(), "us-east-1"))
}

async fn ec2_offering(ec2: &aws_sdk_ec2::Client) -> String {
    ec2.describe_reserved_instances_offerings()
        .instance_type(InstanceType::M5Large)
        .product_description(RiProductDescription::LinuxUnix)
        .offering_class(OfferingClassType::Standard)
        .offering_type(OfferingTypeValues::AllUpfront)
        .min_duration(31_536_000)
        .max_duration(31_536_000)
        .send()
        .await
        .expect("offering lookup")
        .reserved_instances_offerings()[0]
        .reserved_instances_offering_id
        .clone()
        .unwrap()
}

async fn rds_offering(rds: &aws_sdk_rds::Client) -> String {
    rds.describe_reserved_db_instances_offerings()
        .db_instance_class("db.m6g.large")
        .duration("1")
        .product_description("mysql")
        .offering_type("No Upfront")
        .multi_az(false)
        .send()
        .await
        .expect("offering lookup")
        .reserved_db_instances_offerings()[0]
        .reserved_db_instances_offering_id
        .clone()
        .unwrap()
}

fn status<E>(err: &SdkError<E, aws_smithy_runtime_api::http::Response>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

#[tokio::test]
async fn latency_rules_delay_only_matching_operations() {
    let fc = start(FakeCloudConfig::default()).await;
    fc.set_faults(Faults::rules([FaultRule::latency(
        "ec2:DescribeReservedInstances",
        Duration::from_millis(600),
    )]));
    let ec2 = ec2(&fc);
    let t = Instant::now();
    ec2.describe_reserved_instances().send().await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(600));
    let t = Instant::now();
    ec2.describe_reserved_instances_offerings()
        .max_results(5)
        .send()
        .await
        .unwrap();
    assert!(t.elapsed() < Duration::from_millis(600));
}

#[tokio::test]
async fn the_fixed_latency_applies_to_every_cloud_call() {
    let fc = start(FakeCloudConfig {
        latency: Duration::from_millis(250),
        ..Default::default()
    })
    .await;
    let t = Instant::now();
    rds(&fc)
        .describe_reserved_db_instances()
        .send()
        .await
        .unwrap();
    assert!(t.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn throttling_is_spelled_as_each_protocol_does() {
    let fc = start(FakeCloudConfig::default()).await;
    fc.set_faults(Faults::rules([FaultRule::error(
        "*",
        InjectedError::Throttling,
    )]));
    let config = sdk::config_without_retries(&fc.endpoint(), "us-east-1");

    let err = aws_sdk_ec2::Client::new(&config)
        .describe_reserved_instances()
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), status(&err)),
        (Some("RequestLimitExceeded"), Some(503))
    );
    let err = aws_sdk_rds::Client::new(&config)
        .describe_reserved_db_instances()
        .send()
        .await
        .unwrap_err();
    assert_eq!((err.code(), status(&err)), (Some("Throttling"), Some(400)));
    let err = aws_sdk_memorydb::Client::new(&config)
        .describe_reserved_nodes()
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), status(&err)),
        (Some("ThrottlingException"), Some(400))
    );
    let err = aws_sdk_savingsplans::Client::new(&config)
        .describe_savings_plans()
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), status(&err)),
        (Some("ThrottlingException"), Some(429))
    );
    let err = aws_sdk_opensearch::Client::new(&config)
        .describe_reserved_instances()
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), status(&err)),
        (Some("ThrottlingException"), Some(429))
    );
    // Injected errors reject before executing: nothing was bought or changed.
    assert!(fc.ledger().is_empty());
}

#[tokio::test]
async fn the_sdk_retries_injected_throttling_and_succeeds() {
    let fc = start(FakeCloudConfig::default()).await;
    fc.set_faults(Faults::rules([FaultRule::error(
        "rds:*",
        InjectedError::Throttling,
    )
    .times(2)]));
    let retry = RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_millis(10));
    let config = sdk::config_with(
        &fc.endpoint(),
        "us-east-1",
        sdk::credentials("test", "test", None),
        retry,
    );
    aws_sdk_rds::Client::new(&config)
        .describe_reserved_db_instances()
        .send()
        .await
        .expect("third attempt succeeds");
    assert_eq!(fc.call_count("rds:DescribeReservedDBInstances"), 3);
}

#[tokio::test]
async fn server_errors_and_custom_errors() {
    let fc = start(FakeCloudConfig::default()).await;
    fc.set_faults(Faults::rules([
        FaultRule::error(
            "ec2:DescribeReservedInstances",
            InjectedError::InternalFailure,
        )
        .times(1),
        FaultRule::error(
            "ec2:DescribeReservedInstances",
            InjectedError::ServiceUnavailable,
        )
        .after(1)
        .times(1),
        FaultRule::error("rds:*", InjectedError::InternalFailure).times(1),
        FaultRule::error(
            "rds:*",
            InjectedError::Custom {
                status: 502,
                code: "BadGateway".into(),
                message: Some("upstream".into()),
            },
        )
        .after(1),
    ]));
    let ec2 = ec2(&fc);
    let err = ec2.describe_reserved_instances().send().await.unwrap_err();
    assert_eq!(
        (err.code(), status(&err)),
        (Some("InternalError"), Some(500))
    );
    let err = ec2.describe_reserved_instances().send().await.unwrap_err();
    assert_eq!((err.code(), status(&err)), (Some("Unavailable"), Some(503)));
    ec2.describe_reserved_instances()
        .send()
        .await
        .expect("both rules are spent");

    let rds = rds(&fc);
    let err = rds
        .describe_reserved_db_instances()
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), status(&err)),
        (Some("InternalFailure"), Some(500))
    );
    let err = rds
        .describe_reserved_db_instances()
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message(), status(&err)),
        (Some("BadGateway"), Some("upstream"), Some(502))
    );
}

#[tokio::test]
async fn an_error_rate_fails_about_that_share_of_calls() {
    let fc = start(FakeCloudConfig {
        seed: 3,
        ..Default::default()
    })
    .await;
    fc.set_faults(Faults::rules([FaultRule::error(
        "ec2:*",
        InjectedError::Throttling,
    )
    .with_probability(0.5)]));
    let ec2 = ec2(&fc);
    let mut failed = 0;
    for _ in 0..40 {
        if ec2.describe_reserved_instances().send().await.is_err() {
            failed += 1;
        }
    }
    assert!(
        (8..=32).contains(&failed),
        "{failed} of 40 failed at p = 0.5"
    );
}

#[tokio::test]
async fn commit_then_fail_with_a_server_error_still_buys() {
    let fc = start(FakeCloudConfig::default()).await;
    let ec2 = ec2(&fc);
    let offering = ec2_offering(&ec2).await;
    fc.set_faults(Faults::rules([FaultRule::commit_then_fail(
        "ec2:PurchaseReservedInstancesOffering",
        CommitFailure::ServerError,
    )
    .times(1)]));
    let err = ec2
        .purchase_reserved_instances_offering()
        .reserved_instances_offering_id(&offering)
        .instance_count(1)
        .send()
        .await
        .expect_err("the response is lost");
    assert_eq!(
        (err.code(), status(&err)),
        (Some("InternalError"), Some(500))
    );
    // Bought anyway: the ledger and a Describe both show it.
    assert_eq!(fc.ledger().len(), 1);
    assert_eq!(
        ec2.describe_reserved_instances()
            .send()
            .await
            .unwrap()
            .reserved_instances()
            .len(),
        1
    );
}

#[tokio::test]
async fn commit_then_fail_with_a_dropped_connection_still_buys() {
    let fc = start(FakeCloudConfig::default()).await;
    let rds = rds(&fc);
    let offering = rds_offering(&rds).await;
    fc.set_faults(Faults::rules([FaultRule::commit_then_fail(
        "rds:PurchaseReservedDBInstancesOffering",
        CommitFailure::DropConnection,
    )
    .times(1)]));
    let purchase = || {
        rds.purchase_reserved_db_instances_offering()
            .reserved_db_instances_offering_id(&offering)
            .reserved_db_instance_id("rds-lost")
            .send()
    };
    let err = purchase().await.expect_err("the connection is dropped");
    assert!(
        matches!(
            err,
            SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
        ),
        "no HTTP response at all, got {err:?}"
    );
    assert!(err.raw_response().is_none());
    assert_eq!(fc.ledger().len(), 1);
    // The client's retry with the same ID finds it bought.
    let err = purchase().await.expect_err("already bought");
    assert!(err
        .as_service_error()
        .is_some_and(|e| e.is_reserved_db_instance_already_exists_fault()));
    assert_eq!(fc.ledger().len(), 1);
}

#[tokio::test]
async fn a_tag_write_failure_fails_create_tags_and_writes_nothing() {
    let fc = start(FakeCloudConfig::default()).await;
    let ec2 = ec2(&fc);
    let offering = ec2_offering(&ec2).await;
    let id = ec2
        .purchase_reserved_instances_offering()
        .reserved_instances_offering_id(offering)
        .instance_count(1)
        .send()
        .await
        .unwrap()
        .reserved_instances_id
        .unwrap();
    fc.set_faults(Faults::rules([FaultRule::tag_write_failure("*")]));
    let err = ec2
        .create_tags()
        .resources(&id)
        .tags(
            Tag::builder()
                .key("buyonce-idempotency-token")
                .value("tok")
                .build(),
        )
        .send()
        .await
        .expect_err("tag write fails");
    assert_eq!(
        (err.code(), status(&err)),
        (Some("InternalError"), Some(500))
    );
    let tagged = ec2
        .describe_reserved_instances()
        .filters(
            Filter::builder()
                .name("tag:buyonce-idempotency-token")
                .values("tok")
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(tagged.reserved_instances().is_empty());
    assert_eq!(fc.ledger()[0].idempotency_handle, None);

    // A purchase that carries its tags is bought, but untagged.
    let sp = aws_sdk_savingsplans::Client::new(&sdk::config_without_retries(
        &fc.endpoint(),
        "us-east-1",
    ));
    let offering = sp
        .describe_savings_plans_offerings()
        .max_results(1)
        .send()
        .await
        .unwrap()
        .search_results()[0]
        .offering_id
        .clone()
        .unwrap();
    sp.create_savings_plan()
        .savings_plan_offering_id(offering)
        .commitment("1")
        .tags("buyonce-idempotency-token", "tok")
        .send()
        .await
        .expect("the plan is bought");
    let ledger = fc.ledger();
    assert_eq!(ledger.len(), 2);
    assert!(ledger[1].tags.is_empty());
}

#[tokio::test]
async fn a_lookup_failure_fails_lookups_but_not_purchases() {
    let fc = start(FakeCloudConfig::default()).await;
    let rds = rds(&fc);
    let offering = rds_offering(&rds).await;
    fc.set_faults(Faults::rules([FaultRule::lookup_failure("*")]));
    let err = rds
        .describe_reserved_db_instances()
        .reserved_db_instance_id("rds-x")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), status(&err)),
        (Some("InternalFailure"), Some(500))
    );
    rds.purchase_reserved_db_instances_offering()
        .reserved_db_instances_offering_id(&offering)
        .reserved_db_instance_id("rds-x")
        .send()
        .await
        .expect("purchases are not lookups");
    assert_eq!(fc.ledger().len(), 1);
}

#[tokio::test]
async fn an_empty_lookup_hides_what_exists() {
    let fc = start(FakeCloudConfig::default()).await;
    let rds = rds(&fc);
    let offering = rds_offering(&rds).await;
    rds.purchase_reserved_db_instances_offering()
        .reserved_db_instances_offering_id(&offering)
        .reserved_db_instance_id("rds-hidden")
        .send()
        .await
        .unwrap();
    fc.set_faults(Faults::rules([FaultRule::lookup_empty(
        "rds:DescribeReservedDBInstances",
    )
    .times(1)]));
    // Eventual consistency: the guard lookup says "not found" although it was bought…
    let err = rds
        .describe_reserved_db_instances()
        .reserved_db_instance_id("rds-hidden")
        .send()
        .await
        .unwrap_err();
    assert!(err
        .as_service_error()
        .is_some_and(|e| e.is_reserved_db_instance_not_found_fault()));
    // …and the purchase-side backstop still refuses a second one.
    let err = rds
        .purchase_reserved_db_instances_offering()
        .reserved_db_instances_offering_id(&offering)
        .reserved_db_instance_id("rds-hidden")
        .send()
        .await
        .unwrap_err();
    assert!(err
        .as_service_error()
        .is_some_and(|e| e.is_reserved_db_instance_already_exists_fault()));
    assert_eq!(
        rds.describe_reserved_db_instances()
            .send()
            .await
            .unwrap()
            .reserved_db_instances()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_provisioning_failure_ends_in_payment_failed() {
    let fc = start(FakeCloudConfig {
        ri_activation_delay: Duration::ZERO,
        ..Default::default()
    })
    .await;
    let ec2 = ec2(&fc);
    let offering = ec2_offering(&ec2).await;
    fc.set_faults(Faults::rules([FaultRule::provisioning_failure(
        "ec2:*", None,
    )]));
    ec2.purchase_reserved_instances_offering()
        .reserved_instances_offering_id(offering)
        .instance_count(1)
        .send()
        .await
        .expect("the call itself succeeds");
    let ri = ec2.describe_reserved_instances().send().await.unwrap();
    assert_eq!(
        ri.reserved_instances()[0]
            .state
            .as_ref()
            .map(|s| s.as_str()),
        Some("payment-failed")
    );
    assert_eq!(fc.ledger()[0].state, "payment-failed");
}

/// The outcome pattern of 30 calls under a p = 0.5 error rule.
async fn pattern(seed: u64) -> Vec<bool> {
    let fc = start(FakeCloudConfig {
        seed,
        ..Default::default()
    })
    .await;
    fc.set_faults(Faults::rules([FaultRule::error(
        "ec2:*",
        InjectedError::Throttling,
    )
    .with_probability(0.5)]));
    let ec2 = ec2(&fc);
    let mut outcomes = Vec::new();
    for _ in 0..30 {
        outcomes.push(ec2.describe_reserved_instances().send().await.is_ok());
    }
    outcomes
}

#[tokio::test]
async fn the_same_seed_replays_the_same_faults() {
    let a = pattern(42).await;
    assert_eq!(a, pattern(42).await);
    assert_ne!(a, pattern(43).await);
    // The seed can also come with the faults, overriding the server's.
    let fc = start(FakeCloudConfig {
        seed: 1,
        ..Default::default()
    })
    .await;
    fc.set_faults(
        Faults::rules([FaultRule::error("ec2:*", InjectedError::Throttling).with_probability(0.5)])
            .with_seed(42),
    );
    let ec2 = ec2(&fc);
    let mut outcomes = Vec::new();
    for _ in 0..30 {
        outcomes.push(ec2.describe_reserved_instances().send().await.is_ok());
    }
    assert_eq!(outcomes, a);
}

#[tokio::test]
async fn faults_are_replaced_and_read_back_over_the_admin_api() {
    let startup = Faults::rules([FaultRule::latency("sts:*", Duration::from_millis(1))]);
    let fc = start(FakeCloudConfig {
        faults: startup.clone(),
        seed: 9,
        ..Default::default()
    })
    .await;
    let admin = AdminClient::new(fc.endpoint()).unwrap();
    assert_eq!(admin.faults().await.unwrap(), startup.clone().with_seed(9));

    let faults =
        Faults::rules([FaultRule::error("ec2:*", InjectedError::Throttling).times(1)]).with_seed(5);
    assert_eq!(admin.set_faults(&faults).await.unwrap(), faults);
    let err = ec2(&fc)
        .describe_reserved_instances()
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("RequestLimitExceeded"));

    // A malformed fault file is refused with the path of the problem.
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .put(format!("{}/_fakecloud/faults", fc.endpoint()))
        .body(r#"{"rules": [{"operation": "*", "kind": "error", "error": "nope"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert!(response.text().await.unwrap().contains("rules[0]"));

    admin.reset().await.unwrap();
    assert_eq!(admin.faults().await.unwrap(), startup.with_seed(9));
    assert!(admin.calls().await.unwrap().is_empty());
}
