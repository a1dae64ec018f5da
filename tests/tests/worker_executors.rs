//! Every executor through the real SDK clients (and the Azure REST flow) against fakecloud,
//! driven through the worker's handler with a real Postgres: first purchase, guard
//! short-circuit, a failed lookup refusing to buy, a lost purchase response followed by
//! redeliveries, and AlreadyExists recovery.
//!
//! The suite runs against a **strict** fakecloud ([`World::strict`]): new commitments stay
//! invisible to lookups for a while, Savings Plans may forget client tokens, OpenSearch allows
//! duplicate names, AWS answers two results per page, Azure answers a re-PUT of a bought order
//! ID with the session timeout and its purchase PUT with 200 while the order is still being
//! created. Only the AlreadyExists scenarios need the friendly fakecloud, which is the only one
//! that answers AlreadyExists where the strict one does not.

use std::time::Duration;

use buyonce_fakecloud::{CommitFailure, FaultRule, Faults};
use buyonce_shared::store::Store;
use buyonce_shared::PurchaseMessage;
use buyonce_tests::harness::{
    execution, guard_op, handle_until_settled, purchase_op, recommendation, World,
};
use buyonce_worker::handler::Outcome;

/// How long a scenario may keep retrying (settle windows, invisibility, polling).
const PATIENCE: Duration = Duration::from_secs(30);

/// Records a one-item execution of `service` and returns its message.
async fn one_item(world: &World, service: &str) -> PurchaseMessage {
    let doc = execution(&format!("exec-{service}"), vec![recommendation(service)]);
    world.submit(&doc).await.remove(0)
}

/// Simulates a purchase whose record was lost: the item goes back to `queued` (its purchase
/// intent kept) and its ledger row is deleted, so the next delivery runs the executor and must
/// hit the guard. `unaccounted`: as every real path to such a state does (a worker that died
/// after buying, a record that failed for good), the item says a purchase call may have gone
/// through unseen.
async fn requeue(store: &Store, msg: &PurchaseMessage, unaccounted: bool) {
    let client = store.pool().get().await.unwrap();
    client
        .execute(
            "UPDATE purchase_items
                SET status = 'queued', commitment_id = NULL,
                    ambiguous_at = CASE WHEN $2 THEN now() ELSE ambiguous_at END
              WHERE token = $1",
            &[&msg.token.as_str(), &unaccounted],
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

fn note(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Done { note } => note,
        other => panic!("expected Done, got {other:?}"),
    }
}

async fn first_purchase_then_the_same_token_buys_nothing(service: &str) {
    let world = World::strict().await;
    let handler = world.handler().await;
    let msg = one_item(&world, service).await;

    // One delivery buys: Azure's 200-while-creating is waited for, EC2's tag write waits for
    // the RI to become visible to CreateTags.
    let outcome = handler.handle(&msg.to_bytes()).await;
    assert_eq!(
        note(&outcome),
        "purchased",
        "{service}: {:?}",
        world.item(&msg).await.error
    );
    let ledger = world.fc.ledger();
    assert_eq!(ledger.len(), 1, "{service}: one commitment");
    let item = world.item(&msg).await;
    assert_eq!(item.status.as_str(), "succeeded");
    assert_eq!(
        item.commitment_id.as_deref(),
        Some(ledger[0].commitment_id.as_str())
    );
    let cost = item.cost_usd.expect("cost recorded");
    assert!(
        (cost - ledger[0].price.upfront).abs() < 0.01,
        "{service}: cost {cost} vs ledger {:?}",
        ledger[0].price
    );
    assert_eq!(world.fc.call_count(purchase_op(service)), 1);
    assert!(!item.tag_pending, "{service}: the token tag was written");

    // A redelivery of a succeeded item: no provider call at all.
    let calls_before: u64 = world.fc.calls().values().sum();
    assert_eq!(
        note(&handler.handle(&msg.to_bytes()).await),
        "already-succeeded"
    );
    assert_eq!(
        world.fc.calls().values().sum::<u64>(),
        calls_before,
        "{service}: zero provider calls"
    );

    // The record lost at once, while the commitment may still be invisible: the settle window
    // holds the retry back until the guard (or the intent) finds it.
    requeue(world.store(), &msg, true).await;
    let (again, _) = handle_until_settled(&handler, &msg, PATIENCE).await;
    let expected = match service {
        // Found through the intent: Redshift's snapshot, Azure's stored order ID.
        "redshift" | "vm" | "sql-database" | "redis-cache" | "cosmos-db" => "recovered",
        _ => "guard",
    };
    assert_eq!(note(&again), expected, "{service}");
    assert_eq!(
        world.fc.ledger().len(),
        1,
        "{service}: still exactly one commitment"
    );
    let item = world.item(&msg).await;
    assert_eq!(item.status.as_str(), "succeeded");
    assert_eq!(
        item.commitment_id.as_deref(),
        Some(ledger[0].commitment_id.as_str())
    );
    assert_eq!(
        world.fc.call_count(purchase_op(service)),
        1,
        "{service}: no second purchase call"
    );
    world.cleanup().await;
}

async fn a_failed_guard_lookup_refuses_to_buy(service: &str) {
    let world = World::strict().await;
    let handler = world.handler().await;
    let msg = one_item(&world, service).await;
    world
        .fc
        .set_faults(Faults::rules([FaultRule::lookup_failure(guard_op(
            service,
        ))]));

    let outcome = handler.handle(&msg.to_bytes()).await;
    assert!(
        matches!(
            outcome,
            Outcome::Retry {
                reason: "transient",
                ..
            }
        ),
        "{service}: {outcome:?}"
    );
    assert_eq!(
        world.fc.call_count(purchase_op(service)),
        0,
        "{service}: nothing bought"
    );
    assert!(world.fc.ledger().is_empty());
    let item = world.item(&msg).await;
    assert_eq!(item.status.as_str(), "queued", "released for the retry");
    assert!(
        item.error.unwrap_or_default().contains("refusing to buy"),
        "{service}"
    );

    // The lookup heals: the retry buys exactly once.
    world.fc.set_faults(Faults::none());
    assert_eq!(note(&handler.handle(&msg.to_bytes()).await), "purchased");
    assert_eq!(world.fc.ledger().len(), 1);
    world.cleanup().await;
}

async fn a_lost_purchase_response_then_redelivery_buys_once(service: &str, failure: CommitFailure) {
    let world = World::strict().await;
    let handler = world.handler().await;
    let msg = one_item(&world, service).await;
    world
        .fc
        .set_faults(Faults::rules([FaultRule::commit_then_fail(
            purchase_op(service),
            failure,
        )
        .times(1)]));

    let first = handler.handle(&msg.to_bytes()).await;
    assert!(
        matches!(first, Outcome::Retry { .. }),
        "{service}: {first:?}"
    );
    assert_eq!(
        world.fc.ledger().len(),
        1,
        "{service}: the provider committed the purchase"
    );
    let item = world.item(&msg).await;
    assert_eq!(item.status.as_str(), "queued");
    assert!(
        item.ambiguous_at.is_some(),
        "{service}: the item says its purchase may have gone through"
    );

    // Redeliveries at once: the commitment is still invisible, so they must wait out the settle
    // window instead of buying again, then find it.
    let (second, retries) = handle_until_settled(&handler, &msg, PATIENCE).await;
    assert!(
        matches!(second, Outcome::Done { .. }),
        "{service}: {second:?}: {:?}",
        world.item(&msg).await.error
    );
    assert!(
        retries.contains(&"settling"),
        "{service}: the retry waited for the settle window: {retries:?}"
    );
    let done = note(&second);
    assert!(matches!(done, "guard" | "recovered"), "{service}: {done}");
    let ledger = world.fc.ledger();
    assert_eq!(
        ledger.len(),
        1,
        "{service}: exactly one commitment after redelivery"
    );
    let item = world.item(&msg).await;
    assert_eq!(item.status.as_str(), "succeeded");
    assert_eq!(
        item.commitment_id.as_deref(),
        Some(ledger[0].commitment_id.as_str())
    );
    world.cleanup().await;
}

async fn already_exists_is_recovered(service: &str) {
    // The friendly fakecloud: the strict one never answers AlreadyExists for OpenSearch names
    // or Azure order IDs.
    let world = World::new().await;
    let handler = world.handler().await;
    let msg = one_item(&world, service).await;
    assert_eq!(note(&handler.handle(&msg.to_bytes()).await), "purchased");
    requeue(world.store(), &msg, false).await;
    // The guard sees nothing (eventual consistency): the purchase call must answer
    // AlreadyExists for the token's handle and the executor recover the existing commitment.
    // Only the guard's own lookups answer empty; the recovery lookup after AlreadyExists sees
    // the commitment.
    let mut rules = vec![FaultRule::lookup_empty(guard_op(service)).times(1)];
    if guard_op(service).starts_with("azure:") {
        rules.push(FaultRule::lookup_empty("azure:GetReservationOrder").times(1));
    }
    world.fc.set_faults(Faults::rules(rules));
    let outcome = handler.handle(&msg.to_bytes()).await;
    world.fc.set_faults(Faults::none());
    assert!(
        matches!(outcome, Outcome::Done { .. }),
        "{service}: {outcome:?}: {:?}",
        world.item(&msg).await.error
    );
    assert_eq!(note(&outcome), "recovered", "{service}");
    assert_eq!(
        world.fc.ledger().len(),
        1,
        "{service}: AlreadyExists, not a second purchase"
    );
    assert_eq!(
        world.fc.call_count(purchase_op(service)),
        2,
        "{service}: the second call was refused"
    );
    let item = world.item(&msg).await;
    assert_eq!(
        item.commitment_id.as_deref(),
        Some(world.fc.ledger()[0].commitment_id.as_str())
    );
    assert!(item.cost_usd.is_some(), "{service}: recovered cost re-read");
    world.cleanup().await;
}

macro_rules! per_service {
    ($($name:ident => $service:literal),* $(,)?) => {
        mod first_purchase_then_guard {
            $(#[tokio::test] async fn $name() { super::first_purchase_then_the_same_token_buys_nothing($service).await })*
        }
        mod failed_lookup_refuses {
            $(#[tokio::test] async fn $name() { super::a_failed_guard_lookup_refuses_to_buy($service).await })*
        }
        mod lost_response_5xx {
            $(#[tokio::test] async fn $name() {
                super::a_lost_purchase_response_then_redelivery_buys_once($service, super::CommitFailure::ServerError).await
            })*
        }
        mod lost_response_dropped_connection {
            $(#[tokio::test] async fn $name() {
                super::a_lost_purchase_response_then_redelivery_buys_once($service, super::CommitFailure::DropConnection).await
            })*
        }
    };
}

per_service! {
    ec2 => "ec2",
    savings_plans => "savings-plans",
    rds => "rds",
    elasticache => "elasticache",
    memorydb => "memorydb",
    opensearch => "opensearch",
    redshift => "redshift",
    azure_vm => "vm",
    azure_sql_database => "sql-database",
    azure_redis_cache => "redis-cache",
    azure_cosmos_db => "cosmos-db",
}

mod already_exists {
    #[tokio::test]
    async fn rds() {
        super::already_exists_is_recovered("rds").await
    }
    #[tokio::test]
    async fn elasticache() {
        super::already_exists_is_recovered("elasticache").await
    }
    #[tokio::test]
    async fn memorydb() {
        super::already_exists_is_recovered("memorydb").await
    }
    #[tokio::test]
    async fn opensearch() {
        super::already_exists_is_recovered("opensearch").await
    }
    #[tokio::test]
    async fn azure_vm() {
        super::already_exists_is_recovered("vm").await
    }
}

/// Assumed-role credentials are assumed once per account and reused by every purchase there,
/// however many accounts the fleet buys in: the SDK's shared credentials cache keeps 64
/// partitions by default, and the bench (200 accounts) found 1.4 `sts:AssumeRole` calls per
/// purchase — at scale, STS throttling.
#[tokio::test]
async fn an_accounts_role_is_assumed_once_for_many_purchases_in_many_accounts() {
    let world = World::new().await;
    let handler = world.handler().await;
    let accounts = 70;
    for round in 0..2 {
        let recs: Vec<serde_json::Value> = (0..accounts)
            .map(|i| {
                let mut r = recommendation("savings-plans");
                r["account"] = format!("3{:011}", i).into();
                r["commitment_usd_per_hour"] = (0.01 * (round * accounts + i + 1) as f64).into();
                r
            })
            .collect();
        let msgs = world
            .submit(&execution(&format!("exec-sts-{round}"), recs))
            .await;
        for msg in &msgs {
            let (outcome, _) = handle_until_settled(&handler, msg, PATIENCE).await;
            assert_eq!(note(&outcome), "purchased");
        }
    }
    let calls = world.fc.calls();
    assert_eq!(world.fc.call_count("savingsplans:CreateSavingsPlan"), 140);
    assert_eq!(world.fc.call_count("sts:AssumeRole"), 70, "{calls:?}");
    assert_eq!(
        world.fc.call_count("sts:GetCallerIdentity"),
        70,
        "{calls:?}"
    );
    world.cleanup().await;
}
