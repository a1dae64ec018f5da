//! One test per provider-fidelity finding (docs/provider-semantics.md): each shows the worker
//! buying exactly once, or refusing clearly, where the provider behaves as its public documents
//! allow rather than as the first fakecloud assumed. Test names carry the finding's number.

use std::time::Duration;

use aws_sdk_ec2::types::Scope;
use buyonce_fakecloud::catalog::{PaymentOption, SavingsPlanOffering, ONE_YEAR};
use buyonce_fakecloud::{
    sdk, Catalog, CommitFailure, FakeCloudConfig, FaultRule, Faults, InjectedError, Realism,
};
use buyonce_shared::store::ItemStatus;
use buyonce_shared::{DeadLetterReason, PurchaseMessage};
use buyonce_tests::harness::{
    execution, handle_until_settled, purchase_op, recommendation, World, TEST_VISIBILITY_DELAY,
};
use buyonce_worker::handler::Outcome;
use serde_json::{json, Value};

const PATIENCE: Duration = Duration::from_secs(30);

async fn submit_one(world: &World, id: &str, rec: Value) -> PurchaseMessage {
    world.submit(&execution(id, vec![rec])).await.remove(0)
}

fn with(mut rec: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().unwrap() {
        rec[k] = v.clone();
    }
    rec
}

fn dead_reason(outcome: &Outcome) -> (DeadLetterReason, &str) {
    match outcome {
        Outcome::Dead { reason, error } => (*reason, error.as_str()),
        other => panic!("expected Dead, got {other:?}"),
    }
}

/// Puts a bought item back as if its record had been lost after a worker died: queued, the
/// purchase unaccounted for.
async fn lose_the_record(world: &World, msg: &PurchaseMessage) {
    let client = world.store().pool().get().await.unwrap();
    client
        .execute(
            "UPDATE purchase_items SET status = 'queued', commitment_id = NULL, ambiguous_at = now()
              WHERE token = $1",
            &[&msg.token.as_str()],
        )
        .await
        .unwrap();
    client
        .execute(
            "DELETE FROM commitments WHERE token = $1",
            &[&msg.token.as_str()],
        )
        .await
        .unwrap();
}

// 1. Savings Plans: the client token is not the only guard.

#[tokio::test]
async fn f1_savings_plans_a_forgotten_client_token_does_not_buy_a_second_plan() {
    let world = World::with_fakecloud(FakeCloudConfig {
        realism: Realism {
            // AWS documents no retention: here it forgets at once.
            client_token_ttl: Some(Duration::ZERO),
            ..Realism::strict_deterministic(TEST_VISIBILITY_DELAY)
        },
        ..FakeCloudConfig::default()
    })
    .await;
    let handler = world.handler().await;
    let msg = submit_one(&world, "exec-sp-ttl", recommendation("savings-plans")).await;
    world
        .fc
        .set_faults(Faults::rules([FaultRule::commit_then_fail(
            "savingsplans:CreateSavingsPlan",
            CommitFailure::ServerError,
        )
        .times(1)]));

    let first = handler.handle(&msg.to_bytes()).await;
    assert!(matches!(first, Outcome::Retry { .. }), "{first:?}");
    let (done, _) = handle_until_settled(&handler, &msg, PATIENCE).await;
    assert_eq!(done, Outcome::Done { note: "guard" }, "found by its tag");
    assert_eq!(world.fc.ledger().len(), 1, "one plan, not two");
    assert_eq!(world.fc.call_count("savingsplans:CreateSavingsPlan"), 1);
    world.cleanup().await;
}

// 2. Savings Plans: a partial upfront payment is a whole number.

#[tokio::test]
async fn f2_partial_upfront_savings_plans_send_a_whole_dollar_upfront() {
    let world = World::strict().await;
    let handler = world.handler().await;
    let rec = with(
        recommendation("savings-plans"),
        json!({"payment": "partial-upfront", "commitment_usd_per_hour": 0.333}),
    );
    let msg = submit_one(&world, "exec-sp-partial", rec).await;
    let outcome = handler.handle(&msg.to_bytes()).await;
    assert_eq!(
        outcome,
        Outcome::Done { note: "purchased" },
        "{:?}",
        world.item(&msg).await.error
    );
    // 0.333 $/h × 8760 h = 2917.08; half is 1458.54, sent as 1459.
    let ledger = world.fc.ledger();
    assert_eq!(ledger[0].price.upfront, 1459.0);
    assert_eq!(world.item(&msg).await.cost_usd, Some(1459.0));
    world.cleanup().await;
}

// 3. Savings Plans: offerings are read on every page.

#[tokio::test]
async fn f3_savings_plans_offerings_are_read_on_every_page() {
    let offering = |id: &str| SavingsPlanOffering {
        plan_type: "Compute".into(),
        payment_option: PaymentOption::AllUpfront,
        duration_seconds: ONE_YEAR,
        currency: "USD".into(),
        instance_family: None,
        region: None,
        product_types: vec!["EC2".into()],
        id: Some(id.into()),
    };
    let world = World::with_fakecloud(FakeCloudConfig {
        catalog: Some(Catalog {
            savings_plans: vec![
                offering("11111111-0000-4000-8000-000000000001"),
                offering("11111111-0000-4000-8000-000000000002"),
            ],
            ..Catalog::default()
        }),
        realism: Realism {
            max_page_size: Some(1),
            ..Realism::friendly()
        },
        ..FakeCloudConfig::default()
    })
    .await;
    let handler = world.handler().await;
    let msg = submit_one(&world, "exec-sp-pages", recommendation("savings-plans")).await;
    let outcome = handler.handle(&msg.to_bytes()).await;
    let (reason, error) = dead_reason(&outcome);
    assert_eq!(reason, DeadLetterReason::PermanentFailure);
    assert!(error.contains("2 offerings match"), "{error}");
    assert!(world.fc.ledger().is_empty(), "nothing bought on page one");
    world.cleanup().await;
}

// 4. Savings Plans: the model's Database plan type.

#[tokio::test]
async fn f4_database_savings_plans_are_bought() {
    let world = World::strict().await;
    let handler = world.handler().await;
    let rec = with(
        recommendation("savings-plans"),
        json!({"plan_type": "database", "payment": "no-upfront"}),
    );
    let msg = submit_one(&world, "exec-sp-db", rec).await;
    assert_eq!(
        handler.handle(&msg.to_bytes()).await,
        Outcome::Done { note: "purchased" }
    );
    let ledger = world.fc.ledger();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].resource_type, "Database");
    world.cleanup().await;
}

// 5. EC2: zonal offerings are listed beside the regional one; the regional one is bought.

#[tokio::test]
async fn f5_ec2_buys_the_regional_offering_when_zonal_ones_are_listed() {
    let world = World::strict().await;
    let handler = world.handler().await;
    let msg = submit_one(&world, "exec-ec2-scope", recommendation("ec2")).await;
    assert_eq!(
        handler.handle(&msg.to_bytes()).await,
        Outcome::Done { note: "purchased" },
        "{:?}",
        world.item(&msg).await.error
    );
    // Offering IDs are the same for every account: look the regional one up directly.
    let ec2 = aws_sdk_ec2::Client::new(&sdk::config(&world.fc.endpoint(), "us-east-1"));
    let listed = ec2
        .describe_reserved_instances_offerings()
        .instance_type(aws_sdk_ec2::types::InstanceType::M5Large)
        .product_description(aws_sdk_ec2::types::RiProductDescription::LinuxUnix)
        .offering_class(aws_sdk_ec2::types::OfferingClassType::Standard)
        .offering_type(aws_sdk_ec2::types::OfferingTypeValues::AllUpfront)
        .min_duration(ONE_YEAR)
        .max_duration(ONE_YEAR)
        // Strict fakecloud answers pages of two.
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap();
    assert_eq!(
        listed.len(),
        4,
        "the regional offering and three zonal ones"
    );
    let regional = listed
        .iter()
        .find(|o| o.scope == Some(Scope::Regional))
        .and_then(|o| o.reserved_instances_offering_id.clone())
        .unwrap();
    assert_eq!(world.fc.ledger()[0].offering_id, regional);
    world.cleanup().await;
}

// 6. A reservation under the token that is not live ends the item; it is not "bought".

async fn a_payment_failed_reservation_under_the_token_ends_the_item(service: &str) {
    let world = World::with_fakecloud(FakeCloudConfig {
        ri_activation_delay: Duration::from_millis(200),
        ..FakeCloudConfig::default()
    })
    .await;
    let handler = world.handler().await;
    let msg = submit_one(
        &world,
        &format!("exec-pf-{service}"),
        recommendation(service),
    )
    .await;
    world
        .fc
        .set_faults(Faults::rules([FaultRule::provisioning_failure(
            purchase_op(service),
            None,
        )]));
    // Bought: payment-pending, recorded.
    assert_eq!(
        handler.handle(&msg.to_bytes()).await,
        Outcome::Done { note: "purchased" },
        "{service}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(world.fc.ledger()[0].state, "payment-failed", "{service}");

    // The record lost: the guard finds the reservation, payment-failed, and says so.
    lose_the_record(&world, &msg).await;
    let (outcome, _) = handle_until_settled(&handler, &msg, PATIENCE).await;
    let (reason, error) = dead_reason(&outcome);
    assert_eq!(reason, DeadLetterReason::PermanentFailure, "{service}");
    assert!(error.contains("payment-failed"), "{service}: {error}");
    assert!(
        error.contains("idempotency_key"),
        "{service}: says what to do: {error}"
    );
    let item = world.item(&msg).await;
    assert_eq!(item.status, ItemStatus::Failed, "{service}");
    assert_eq!(world.fc.ledger().len(), 1, "{service}: not bought again");
    assert_eq!(world.fc.call_count(purchase_op(service)), 1, "{service}");
    world.cleanup().await;
}

mod f6_payment_failed {
    #[tokio::test]
    async fn rds() {
        super::a_payment_failed_reservation_under_the_token_ends_the_item("rds").await
    }
    #[tokio::test]
    async fn elasticache() {
        super::a_payment_failed_reservation_under_the_token_ends_the_item("elasticache").await
    }
    #[tokio::test]
    async fn memorydb() {
        super::a_payment_failed_reservation_under_the_token_ends_the_item("memorydb").await
    }
    #[tokio::test]
    async fn opensearch() {
        super::a_payment_failed_reservation_under_the_token_ends_the_item("opensearch").await
    }
    #[tokio::test]
    async fn redshift() {
        super::a_payment_failed_reservation_under_the_token_ends_the_item("redshift").await
    }
    #[tokio::test]
    async fn ec2() {
        super::a_payment_failed_reservation_under_the_token_ends_the_item("ec2").await
    }
    #[tokio::test]
    async fn savings_plans() {
        super::a_payment_failed_reservation_under_the_token_ends_the_item("savings-plans").await
    }
}

// 8. A refused offering lookup is permanent; Redshift's documented states are all known.

#[tokio::test]
async fn f8_a_refused_offering_lookup_is_permanent() {
    let world = World::new().await;
    let handler = world.handler().await;
    let msg = submit_one(&world, "exec-offering-400", recommendation("rds")).await;
    world.fc.set_faults(Faults::rules([FaultRule::error(
        "rds:DescribeReservedDBInstancesOfferings",
        InjectedError::Custom {
            status: 400,
            code: "InvalidParameterValue".into(),
            message: Some("Invalid product description".into()),
        },
    )]));
    let outcome = handler.handle(&msg.to_bytes()).await;
    let (reason, error) = dead_reason(&outcome);
    assert_eq!(reason, DeadLetterReason::PermanentFailure);
    assert!(error.contains("InvalidParameterValue"), "{error}");
    assert_eq!(world.item(&msg).await.status, ItemStatus::Failed);
    world.cleanup().await;
}

#[tokio::test]
async fn f8_redshift_an_exchanging_node_is_recovered_not_bought_again() {
    let world = World::new().await;
    let handler = world.handler().await;
    let msg = submit_one(&world, "exec-rs-exchanging", recommendation("redshift")).await;
    world
        .fc
        .set_faults(Faults::rules([FaultRule::commit_then_fail(
            "redshift:PurchaseReservedNodeOffering",
            CommitFailure::DropConnection,
        )
        .times(1)]));
    assert!(matches!(
        handler.handle(&msg.to_bytes()).await,
        Outcome::Retry { .. }
    ));
    let node = world.fc.ledger()[0].commitment_id.clone();
    world.fc.set_state(&node, "exchanging").unwrap();
    let (done, _) = handle_until_settled(&handler, &msg, PATIENCE).await;
    assert_eq!(done, Outcome::Done { note: "recovered" });
    assert_eq!(world.fc.ledger().len(), 1);
    assert_eq!(world.item(&msg).await.commitment_id, Some(node));
    world.cleanup().await;
}

// 11. Azure: an order that ended Failed bought nothing; a re-drive takes a new quote.

#[tokio::test]
async fn f11_azure_an_order_that_ended_failed_is_not_recovered_and_a_redrive_buys_anew() {
    let world = World::with_fakecloud(FakeCloudConfig {
        azure_provisioning_delay: Duration::from_millis(100),
        ..FakeCloudConfig::default()
    })
    .await;
    let handler = world.handler().await;
    let msg = submit_one(&world, "exec-az-failed", recommendation("vm")).await;
    world
        .fc
        .set_faults(Faults::rules([FaultRule::provisioning_failure(
            "azure:PurchaseReservationOrder",
            None,
        )
        .times(1)]));
    let outcome = handler.handle(&msg.to_bytes()).await;
    let (reason, error) = dead_reason(&outcome);
    assert_eq!(reason, DeadLetterReason::PermanentFailure);
    assert!(error.contains("ended Failed"), "{error}");
    assert_eq!(world.item(&msg).await.status, ItemStatus::Failed);

    // The operator re-drives: the stored order is dead, so a new quote buys.
    let moved = world
        .store()
        .requeue(&msg.execution_id, &[ItemStatus::Failed], None, true, None)
        .await
        .unwrap();
    assert_eq!(moved.len(), 1);
    let (done, _) = handle_until_settled(&handler, &msg, PATIENCE).await;
    assert_eq!(done, Outcome::Done { note: "purchased" });
    let ledger = world.fc.ledger();
    assert_eq!(ledger.len(), 2);
    assert_eq!(ledger[0].state, "Failed");
    assert_eq!(ledger[1].state, "Succeeded");
    assert_eq!(
        world.item(&msg).await.commitment_id.as_deref(),
        Some(ledger[1].commitment_id.as_str())
    );
    world.cleanup().await;
}

// 12. Azure: long-running purchases — a throttled poll waits, a 200 still creating is waited for.

#[tokio::test]
async fn f12_azure_a_throttled_poll_waits_and_the_purchase_completes() {
    let world = World::with_fakecloud(FakeCloudConfig {
        azure_provisioning_delay: Duration::from_millis(300),
        ..FakeCloudConfig::default()
    })
    .await;
    let handler = world.handler().await;
    let msg = submit_one(&world, "exec-az-poll-429", recommendation("vm")).await;
    world.fc.set_faults(Faults::rules([FaultRule::error(
        "azure:GetOperationResult",
        InjectedError::Throttling,
    )
    .times(2)]));
    assert_eq!(
        handler.handle(&msg.to_bytes()).await,
        Outcome::Done { note: "purchased" },
        "{:?}",
        world.item(&msg).await.error
    );
    assert!(world.fc.call_count("azure:GetOperationResult") >= 3);
    world.cleanup().await;
}

#[tokio::test]
async fn f12_azure_a_200_still_creating_is_waited_for() {
    let world = World::with_fakecloud(FakeCloudConfig {
        azure_provisioning_delay: Duration::from_millis(300),
        realism: Realism {
            azure_put_in_progress_200: true,
            ..Realism::friendly()
        },
        ..FakeCloudConfig::default()
    })
    .await;
    let handler = world.handler().await;
    let msg = submit_one(&world, "exec-az-200", recommendation("vm")).await;
    assert_eq!(
        handler.handle(&msg.to_bytes()).await,
        Outcome::Done { note: "purchased" },
        "{:?}",
        world.item(&msg).await.error
    );
    assert_eq!(world.fc.ledger()[0].state, "Succeeded");
    world.cleanup().await;
}

// 13. Azure: the spend cap is compared with the whole term, not one instalment.

#[tokio::test]
async fn f13_azure_a_monthly_spend_cap_counts_the_whole_term() {
    let world = World::new().await;
    let handler = world.handler().await;
    // 3 × Standard_D2s_v5 for a year is several thousand dollars; one instalment is a twelfth.
    let rec = with(
        recommendation("vm"),
        json!({"payment": "monthly", "max_upfront_usd": 1000.0}),
    );
    let msg = submit_one(&world, "exec-az-monthly-cap", rec).await;
    let outcome = handler.handle(&msg.to_bytes()).await;
    let (reason, error) = dead_reason(&outcome);
    assert_eq!(reason, DeadLetterReason::SpendCap, "{error}");
    assert!(error.contains("whole term"), "{error}");
    assert!(world.fc.ledger().is_empty());
    assert_eq!(world.fc.call_count("azure:PurchaseReservationOrder"), 0);
    world.cleanup().await;
}
