//! Dead letters end to end: an item that exhausted its attempts on a throttling provider dies,
//! is archived, and a replay after the provider recovers buys it exactly once — also when the
//! dying attempt had actually bought it.

use std::time::Duration;

use buyonce_fakecloud::{CommitFailure, FaultRule, Faults, InjectedError};
use buyonce_producer::dlq::{self, ReplayRequest, Selection};
use buyonce_shared::store::dead_letters::DeadLetterFilter;
use buyonce_shared::DeadLetterReason;
use buyonce_tests::harness::{execution, purchase_op, recommendation, wait_for, World};
use tokio_util::sync::CancellationToken;

async fn dead_letter_of(
    world: &World,
    execution_id: &str,
) -> buyonce_shared::store::dead_letters::DeadLetterRow {
    wait_for(
        Duration::from_secs(60),
        "the item's dead letter archived",
        || async {
            world
                .store()
                .dead_letters(&DeadLetterFilter {
                    execution_id: Some(execution_id.into()),
                    ..DeadLetterFilter::default()
                })
                .await
                .unwrap()
                .pop()
        },
    )
    .await
}

#[tokio::test]
async fn a_transiently_failed_item_replayed_after_recovery_is_bought_exactly_once() {
    let world = World::new().await;
    let mut config = world.worker_config();
    config.max_attempts = 2;
    let shutdown = CancellationToken::new();
    let worker = buyonce_worker::startup::spawn(config, shutdown.clone())
        .await
        .unwrap();
    // The provider throttles every purchase: two attempts, then the item is dead.
    world.fc.set_faults(Faults::rules([FaultRule::error(
        purchase_op("elasticache"),
        InjectedError::Throttling,
    )]));
    let msg = world
        .enqueue(&execution(
            "exec-replay",
            vec![recommendation("elasticache")],
        ))
        .await
        .remove(0);
    let dead = dead_letter_of(&world, "exec-replay").await;
    assert_eq!(dead.reason, DeadLetterReason::MaxAttempts);
    assert_eq!(world.item(&msg).await.status.as_str(), "dead");
    assert!(world.fc.ledger().is_empty());

    // The provider recovers; the operator replays with the same token.
    world.fc.set_faults(Faults::none());
    let report = dlq::replay(
        world.store(),
        world.publisher(),
        &ReplayRequest {
            selection: Selection::Execution("exec-replay".into()),
            dry_run: false,
        },
    )
    .await
    .unwrap();
    assert_eq!((report.replayed, report.refused), (1, 0), "{report:?}");
    wait_for(
        Duration::from_secs(30),
        "the replayed item bought",
        || async { (world.item(&msg).await.status.as_str() == "succeeded").then_some(()) },
    )
    .await;
    assert_eq!(world.fc.ledger().len(), 1, "exactly one purchase");
    // Replaying again (a second operator, a script retry) buys nothing more.
    let again = dlq::replay(
        world.store(),
        world.publisher(),
        &ReplayRequest {
            selection: Selection::Ids(vec![dead.id]),
            dry_run: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(again.replayed, 0, "a succeeded item is skipped: {again:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(world.fc.ledger().len(), 1);
    shutdown.cancel();
    worker.handle.await.unwrap().unwrap();
    world.cleanup().await;
}

#[tokio::test]
async fn replaying_an_item_whose_last_attempt_did_buy_recovers_instead_of_buying_again() {
    let world = World::new().await;
    let mut config = world.worker_config();
    config.max_attempts = 1;
    let shutdown = CancellationToken::new();
    let worker = buyonce_worker::startup::spawn(config, shutdown.clone())
        .await
        .unwrap();
    // The only attempt buys, but its response is lost: the item dies not knowing it bought.
    world
        .fc
        .set_faults(Faults::rules([FaultRule::commit_then_fail(
            purchase_op("ec2"),
            CommitFailure::DropConnection,
        )]));
    let msg = world
        .enqueue(&execution("exec-lost", vec![recommendation("ec2")]))
        .await
        .remove(0);
    let dead = dead_letter_of(&world, "exec-lost").await;
    assert_eq!(dead.reason, DeadLetterReason::MaxAttempts);
    assert_eq!(
        world.fc.ledger().len(),
        1,
        "the provider did commit the purchase"
    );
    world.fc.set_faults(Faults::none());
    let report = dlq::replay(
        world.store(),
        world.publisher(),
        &ReplayRequest {
            selection: Selection::Ids(vec![dead.id]),
            dry_run: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(report.replayed, 1, "{report:?}");
    wait_for(
        Duration::from_secs(30),
        "the replayed item succeeded",
        || async { (world.item(&msg).await.status.as_str() == "succeeded").then_some(()) },
    )
    .await;
    let ledger = world.fc.ledger();
    assert_eq!(
        ledger.len(),
        1,
        "replay must recover the lost purchase, not buy again"
    );
    assert_eq!(
        world.item(&msg).await.commitment_id.as_deref(),
        Some(ledger[0].commitment_id.as_str())
    );
    assert_eq!(world.fc.call_count(purchase_op("ec2")), 1);
    shutdown.cancel();
    worker.handle.await.unwrap().unwrap();
    world.cleanup().await;
}
