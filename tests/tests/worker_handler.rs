//! The handler's decisions, without a broker: every dead-letter reason, the cases that must make
//! zero provider calls, the spend cap, dry run, attempts exhausted, cancel, pause and budget.

use std::time::Duration;

use buyonce_fakecloud::{FaultRule, Faults, InjectedError};
use buyonce_shared::envelope::MAX_MESSAGE_BYTES;
use buyonce_shared::store::ItemStatus;
use buyonce_shared::{DeadLetterReason, IdempotencyToken, PurchaseMessage};
use buyonce_tests::harness::{
    execution, handle_until_settled, purchase_op, recommendation, total_calls, World,
};
use buyonce_worker::handler::Outcome;

fn dead_reason(outcome: &Outcome) -> DeadLetterReason {
    match outcome {
        Outcome::Dead { reason, .. } => *reason,
        other => panic!("expected a dead letter, got {other:?}"),
    }
}

/// Handles every message at once, one task each, and returns the outcomes in order.
async fn handle_all(
    handler: &std::sync::Arc<buyonce_worker::handler::Handler>,
    msgs: &[PurchaseMessage],
) -> Vec<Outcome> {
    let tasks: Vec<_> = msgs
        .iter()
        .map(|m| {
            let handler = handler.clone();
            let body = m.to_bytes();
            tokio::spawn(async move { handler.handle(&body).await })
        })
        .collect();
    futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("handler task"))
        .collect()
}

async fn one_item(world: &World, id: &str, rec: serde_json::Value) -> PurchaseMessage {
    world.submit(&execution(id, vec![rec])).await.remove(0)
}

#[tokio::test]
async fn every_refusal_is_dead_lettered_with_its_reason_and_no_provider_call() {
    let world = World::new().await;
    let handler = world.handler().await;
    let msg = one_item(&world, "exec-refusals", recommendation("ec2")).await;
    let good = serde_json::to_value(&msg).unwrap();

    let mut wrong_version = good.clone();
    wrong_version["v"] = 99.into();
    let mut no_token = good.clone();
    no_token.as_object_mut().unwrap().remove("token");
    let mut unknown_service = good.clone();
    unknown_service["recommendation"]["service"] = "lambda".into();
    let mut forged = msg.clone();
    forged.token = IdempotencyToken::derive("someone-else", 0);
    let mut tampered = msg.clone();
    tampered.recommendation.count = Some(100);
    let mut unknown = msg.clone();
    unknown.execution_id = buyonce_shared::ExecutionId::parse("exec-never-submitted").unwrap();
    unknown.lineage_key = buyonce_shared::LineageKey::parse("exec-never-submitted").unwrap();
    unknown.token = unknown.expected_token();
    let mut other_lineage = msg.clone();
    other_lineage.lineage_key = buyonce_shared::LineageKey::parse("another-lineage").unwrap();
    other_lineage.token = other_lineage.expected_token();

    let cases: Vec<(&str, Vec<u8>, DeadLetterReason)> = vec![
        (
            "invalid JSON",
            b"{not json".to_vec(),
            DeadLetterReason::Malformed,
        ),
        (
            "wrong shape",
            b"[1, 2, 3]".to_vec(),
            DeadLetterReason::Malformed,
        ),
        (
            "non-UTF-8",
            vec![0xff, 0xfe, 0x00, 0x7b],
            DeadLetterReason::Malformed,
        ),
        (
            "missing token",
            serde_json::to_vec(&no_token).unwrap(),
            DeadLetterReason::Malformed,
        ),
        (
            "v: 99",
            serde_json::to_vec(&wrong_version).unwrap(),
            DeadLetterReason::UnsupportedVersion,
        ),
        (
            "unknown service",
            serde_json::to_vec(&unknown_service).unwrap(),
            DeadLetterReason::UnknownService,
        ),
        (
            "oversize",
            vec![b' '; MAX_MESSAGE_BYTES + 1],
            DeadLetterReason::Oversize,
        ),
        (
            "10 MiB body",
            vec![b'x'; 10 * 1024 * 1024],
            DeadLetterReason::Oversize,
        ),
        (
            "token not derived from (lineage, index)",
            forged.to_bytes(),
            DeadLetterReason::TokenMismatch,
        ),
        (
            "token of another lineage",
            other_lineage.to_bytes(),
            DeadLetterReason::TokenMismatch,
        ),
        (
            "recommendation count 1 → 100",
            tampered.to_bytes(),
            DeadLetterReason::RecommendationMismatch,
        ),
        (
            "unknown execution",
            unknown.to_bytes(),
            DeadLetterReason::UnknownItem,
        ),
    ];
    for (what, body, expected) in cases {
        let outcome = handler.handle(&body).await;
        assert_eq!(dead_reason(&outcome), expected, "{what}");
    }
    assert_eq!(
        total_calls(&world.fc),
        0,
        "no refusal may reach the provider"
    );
    // The approved item is untouched and still buys normally.
    assert_eq!(world.item(&msg).await.status.as_str(), "queued");
    assert!(matches!(
        handler.handle(&msg.to_bytes()).await,
        Outcome::Done { note: "purchased" }
    ));
    assert_eq!(world.fc.ledger().len(), 1);
    world.cleanup().await;
}

#[tokio::test]
async fn a_cancelled_execution_is_acked_without_a_provider_call() {
    let world = World::new().await;
    let handler = world.handler().await;
    let msg = one_item(&world, "exec-cancelled", recommendation("rds")).await;
    let client = world.store().pool().get().await.unwrap();
    client
        .execute(
            "UPDATE executions SET status = 'cancelled' WHERE execution_id = 'exec-cancelled'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        handler.handle(&msg.to_bytes()).await,
        Outcome::Done { note: "cancelled" }
    );
    assert_eq!(total_calls(&world.fc), 0);
    world.cleanup().await;
}

#[tokio::test]
async fn the_spend_cap_refuses_an_offering_above_it() {
    let world = World::new().await;
    let handler = world.handler().await;
    let mut rec = recommendation("ec2");
    rec["max_upfront_usd"] = 100.0.into(); // m5.large x2 all-upfront costs ~1009 USD
    let msg = one_item(&world, "exec-cap", rec).await;
    let outcome = handler.handle(&msg.to_bytes()).await;
    assert_eq!(dead_reason(&outcome), DeadLetterReason::SpendCap);
    assert_eq!(world.fc.call_count(purchase_op("ec2")), 0);
    let item = world.item(&msg).await;
    assert_eq!(item.status.as_str(), "failed");
    assert!(item
        .error
        .unwrap()
        .contains("above max_upfront_usd $100.00"));
    world.cleanup().await;
}

#[tokio::test]
async fn dry_run_resolves_everything_and_buys_nothing() {
    let world = World::new().await;
    let handler = world.handler_with(|s| s.dry_run = true).await;
    for service in ["ec2", "rds", "savings-plans", "redshift", "vm"] {
        let msg = one_item(
            &world,
            &format!("exec-dry-{service}"),
            recommendation(service),
        )
        .await;
        assert_eq!(
            handler.handle(&msg.to_bytes()).await,
            Outcome::Ended {
                status: ItemStatus::Failed,
                note: "dry-run"
            },
            "{service}"
        );
        let item = world.item(&msg).await;
        assert_eq!(item.status.as_str(), "failed");
        assert!(
            item.error
                .unwrap()
                .starts_with("dry run, nothing bought: would buy"),
            "{service}"
        );
    }
    assert!(world.fc.ledger().is_empty(), "dry run bought something");
    // EC2's native dry run was used (a DryRun=true purchase call, answered DryRunOperation).
    assert_eq!(world.fc.call_count(purchase_op("ec2")), 1);
    world.cleanup().await;
}

#[tokio::test]
async fn transient_failures_retry_then_the_item_dies_after_max_attempts() {
    let world = World::new().await;
    let handler = world.handler_with(|s| s.max_attempts = 3).await;
    let msg = one_item(&world, "exec-throttled", recommendation("memorydb")).await;
    world.fc.set_faults(Faults::rules([FaultRule::error(
        purchase_op("memorydb"),
        InjectedError::Throttling,
    )]));
    for attempt in 1..=2 {
        let outcome = handler.handle(&msg.to_bytes()).await;
        match outcome {
            Outcome::Retry { level, reason, .. } => {
                assert_eq!(reason, "transient");
                assert_eq!(level, attempt - 1, "backoff grows with the attempt");
            }
            other => panic!("attempt {attempt}: expected a retry, got {other:?}"),
        }
        assert_eq!(world.item(&msg).await.attempts, attempt as i32);
    }
    let outcome = handler.handle(&msg.to_bytes()).await;
    assert_eq!(dead_reason(&outcome), DeadLetterReason::MaxAttempts);
    let item = world.item(&msg).await;
    assert_eq!(item.status.as_str(), "dead");
    assert!(item.error.unwrap().starts_with("gave up after 3 attempts; last error: memorydb:PurchaseReservedNodesOffering: ThrottlingException"));
    assert!(world.fc.ledger().is_empty());
    world.cleanup().await;
}

#[tokio::test]
async fn a_permanent_provider_error_fails_the_item() {
    let world = World::new().await;
    let handler = world.handler().await;
    let mut rec = recommendation("rds");
    rec["resource_type"] = "db.x99.nonexistent".into();
    let msg = one_item(&world, "exec-unknown-offering", rec).await;
    let outcome = handler.handle(&msg.to_bytes()).await;
    assert_eq!(dead_reason(&outcome), DeadLetterReason::PermanentFailure);
    let item = world.item(&msg).await;
    assert_eq!(item.status.as_str(), "failed");
    assert!(item
        .error
        .unwrap()
        .starts_with("no offering matches aws/rds db.x99.nonexistent"));
    assert_eq!(world.fc.call_count(purchase_op("rds")), 0);
    world.cleanup().await;
}

#[tokio::test]
async fn a_paused_fleet_parks_messages_without_counting_attempts() {
    let world = World::new().await;
    let handler = world.handler().await;
    let msg = one_item(&world, "exec-paused", recommendation("opensearch")).await;
    world
        .store()
        .set_paused(true, Some("incident"), "test")
        .await
        .unwrap();
    let outcome = handler.handle(&msg.to_bytes()).await;
    assert!(
        matches!(
            outcome,
            Outcome::Retry {
                reason: "paused",
                ..
            }
        ),
        "{outcome:?}"
    );
    let item = world.item(&msg).await;
    assert_eq!((item.status.as_str(), item.attempts), ("queued", 0));
    assert_eq!(total_calls(&world.fc), 0);
    world.store().set_paused(false, None, "test").await.unwrap();
    assert!(matches!(
        handler.handle(&msg.to_bytes()).await,
        Outcome::Done { note: "purchased" }
    ));
    world.cleanup().await;
}

#[tokio::test]
async fn a_live_claim_elsewhere_is_checked_back_later_not_bought_twice() {
    let world = World::new().await;
    let handler = world.handler().await;
    let msg = one_item(&world, "exec-owned", recommendation("elasticache")).await;
    // Another worker claimed it a moment ago (fresh heartbeat).
    assert!(matches!(
        world
            .store()
            .claim(&msg, Duration::from_secs(30))
            .await
            .unwrap(),
        buyonce_shared::store::items::Claim::Claimed { .. }
    ));
    let outcome = handler.handle(&msg.to_bytes()).await;
    match outcome {
        Outcome::Retry { after, reason, .. } => {
            assert_eq!(reason, "owned-elsewhere");
            assert!(
                after >= Duration::from_millis(1500),
                "comes back after the stale threshold"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(total_calls(&world.fc), 0);
    // The other worker died: once its heartbeat is stale, this copy takes over. The dead owner
    // may have been inside its purchase call, so the taker first waits out the settle window
    // (finding nothing), then buys once.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let (outcome, retries) = handle_until_settled(&handler, &msg, Duration::from_secs(20)).await;
    assert_eq!(outcome, Outcome::Done { note: "purchased" });
    assert!(retries.contains(&"settling"), "{retries:?}");
    assert_eq!(world.fc.ledger().len(), 1);
    assert_eq!(world.item(&msg).await.attempts, 2);
    world.cleanup().await;
}

#[tokio::test]
async fn fifty_racing_purchases_against_a_budget_for_ten_buy_exactly_ten() {
    let world = World::new().await;
    // Each EC2 m5.large x1 all-upfront costs 504.58; the budget fits exactly ten.
    let budget = 504.58 * 10.0 + 1.0;
    let handler = std::sync::Arc::new(
        world
            .handler_with(|s| s.daily_budget_usd = Some(budget))
            .await,
    );
    let recs: Vec<serde_json::Value> = (0..50)
        .map(|_| {
            let mut r = recommendation("ec2");
            r["count"] = 1.into();
            r
        })
        .collect();
    let msgs = world.submit(&execution("exec-budget", recs)).await;
    let mut bought = 0;
    let mut waiting = 0;
    for outcome in handle_all(&handler, &msgs).await {
        match outcome {
            Outcome::Done { note: "purchased" } => bought += 1,
            Outcome::Retry {
                reason: "budget", ..
            } => waiting += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((bought, waiting), (10, 40));
    assert_eq!(world.fc.ledger().len(), 10, "never overspends");
    let spend = world.store().spend_today().await.unwrap();
    assert!(spend.reserved_usd <= budget);
    // The waiting items are queued with a reason a person can read, and no attempt counted.
    let items = world
        .store()
        .items_of(&buyonce_shared::ExecutionId::parse("exec-budget").unwrap())
        .await
        .unwrap();
    let queued: Vec<_> = items
        .iter()
        .filter(|i| i.status.as_str() == "queued")
        .collect();
    assert_eq!(queued.len(), 40);
    assert!(queued.iter().all(|i| i.attempts == 0));
    assert!(queued[0]
        .error
        .as_deref()
        .unwrap()
        .contains("would exceed the daily budget"));
    world.cleanup().await;
}

#[tokio::test]
async fn many_distinct_offerings_in_flight_do_not_starve_the_pool() {
    // EC2 purchases hold a pooled connection (the offering lock) and need more while they
    // hold it. With more distinct offerings in flight than the pool has connections, lock
    // holders must not take every connection and wait for one more.
    let world = World::new().await;
    let pool_size = world.store().pool().status().max_size;
    let handler = std::sync::Arc::new(world.handler().await);
    let types = ["t3.medium", "m5.large", "m5.xlarge", "c5.large", "r5.large"];
    let regions = ["us-east-1", "us-west-2", "eu-west-1"];
    let recs: Vec<serde_json::Value> = (0..3 * pool_size)
        .map(|i| {
            let mut r = recommendation("ec2");
            r["resource_type"] = types[i % types.len()].into();
            r["region"] = regions[(i / types.len()) % regions.len()].into();
            r["account"] = format!("2000000000{:02}", i / 15).into();
            r["count"] = 1.into();
            r
        })
        .collect();
    let msgs = world.submit(&execution("exec-offerings", recs)).await;
    for outcome in handle_all(&handler, &msgs).await {
        match outcome {
            Outcome::Done { note: "purchased" } => {}
            other => panic!("every item is bought at the first try, got {other:?}"),
        }
    }
    assert_eq!(world.fc.ledger().len(), 3 * pool_size);
    world.cleanup().await;
}
