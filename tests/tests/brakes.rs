//! Operator brakes with a running fleet: the kill switch stops new purchases across three
//! workers within a measured window and the backlog drains exactly once after resume.

use std::time::{Duration, Instant};

use buyonce_fakecloud::{FakeCloudConfig, FaultRule, Faults};
use buyonce_tests::harness::{execution, recommendation, wait_for, World};
use tokio_util::sync::CancellationToken;

const PURCHASE: &str = "savingsplans:CreateSavingsPlan";

#[tokio::test]
async fn pause_stops_new_purchases_on_every_worker_and_resume_drains_the_backlog_exactly_once() {
    let world = World::with_fakecloud(FakeCloudConfig {
        faults: Faults::rules([FaultRule::latency(PURCHASE, Duration::from_millis(100))]),
        ..FakeCloudConfig::default()
    })
    .await;
    let shutdown = CancellationToken::new();
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(world.start_worker(shutdown.clone()).await);
    }
    // A backlog: distinct Savings Plans (no per-offering serialisation), 100 ms each.
    let n: usize = 240;
    let recs: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let mut r = recommendation("savings-plans");
            r["commitment_usd_per_hour"] = (0.01 * (i + 1) as f64).into();
            r
        })
        .collect();
    world.enqueue(&execution("exec-brake", recs)).await;
    wait_for(Duration::from_secs(30), "purchases under way", || async {
        (world.fc.call_count(PURCHASE) >= 20).then_some(())
    })
    .await;

    // Pull the brake and watch the purchase calls arriving at the provider.
    let paused_at = Instant::now();
    world
        .store()
        .set_paused(true, Some("test"), "test")
        .await
        .unwrap();
    let mut last_count = world.fc.call_count(PURCHASE);
    let mut last_change = paused_at;
    while last_change.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let c = world.fc.call_count(PURCHASE);
        if c != last_count {
            last_count = c;
            last_change = Instant::now();
        }
        assert!(
            paused_at.elapsed() < Duration::from_secs(30),
            "purchases never stopped"
        );
    }
    let window = last_change.duration_since(paused_at);
    println!("pause → last purchase call started: {window:?} (3 workers)");
    assert!(
        window < Duration::from_secs(2),
        "new purchases kept starting for {window:?} after pause"
    );
    let bought_while_paused = world.fc.ledger().len();
    assert!(bought_while_paused < n, "the backlog must still be waiting");
    // Readiness says so, and the metric is exported.
    let ready: serde_json::Value = reqwest::get(format!("http://{}/readyz", workers[0].http_addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["paused"], true, "{ready}");
    let metrics = buyonce_tests::harness::scrape_metrics(workers[0].http_addr).await;
    assert!(metrics.contains("buyonce_paused 1"), "{metrics}");
    // Nothing was dead-lettered and no attempt was counted for waiting.
    assert_eq!(
        world
            .broker
            .queue_len(&world.broker.topology.dead_queue())
            .await
            .unwrap(),
        0
    );

    world.store().set_paused(false, None, "test").await.unwrap();
    wait_for(
        Duration::from_secs(120),
        "the backlog bought after resume",
        || async {
            let items = world
                .store()
                .items_of(&buyonce_shared::ExecutionId::parse("exec-brake").unwrap())
                .await
                .unwrap();
            items
                .iter()
                .all(|i| i.status.as_str() == "succeeded")
                .then_some(())
        },
    )
    .await;
    let ledger = world.fc.ledger();
    assert_eq!(ledger.len(), n, "exactly once each");
    let mut handles: Vec<&str> = ledger
        .iter()
        .filter_map(|l| l.idempotency_handle.as_deref())
        .collect();
    handles.sort_unstable();
    handles.dedup();
    assert_eq!(handles.len(), n, "one commitment per token");
    let items = world
        .store()
        .items_of(&buyonce_shared::ExecutionId::parse("exec-brake").unwrap())
        .await
        .unwrap();
    assert!(
        items.iter().all(|i| i.attempts == 1),
        "waiting while paused counted no attempt"
    );
    shutdown.cancel();
    for w in workers {
        w.handle.await.unwrap().unwrap();
    }
    world.cleanup().await;
}

#[tokio::test]
async fn cancelling_an_execution_with_queued_items_means_zero_purchases_for_them() {
    let world = World::new().await;
    // Paused, so the items stay queued while the execution is cancelled.
    world
        .store()
        .set_paused(true, Some("hold"), "test")
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let worker = world.start_worker(shutdown.clone()).await;
    let recs: Vec<serde_json::Value> = ["rds", "memorydb", "vm", "savings-plans", "opensearch"]
        .iter()
        .map(|s| recommendation(s))
        .collect();
    world.enqueue(&execution("exec-cancel-me", recs)).await;
    let report = buyonce_producer::cancel::cancel(
        world.store(),
        &buyonce_shared::ExecutionId::parse("exec-cancel-me").unwrap(),
        "test",
    )
    .await
    .unwrap();
    assert_eq!(report.cancelled.len(), 5, "{report:?}");
    world.store().set_paused(false, None, "test").await.unwrap();
    // The messages come back from the pause wait queue and are acked without a purchase.
    wait_for(Duration::from_secs(30), "the queue drained", || async {
        let ready = world
            .broker
            .queue_len(&world.broker.topology.purchases_queue())
            .await
            .unwrap();
        let mut waiting = 0;
        for i in 0..world.broker.topology.retry_delays.len() {
            waiting += world
                .broker
                .queue_len(&world.broker.topology.retry_queue(i))
                .await
                .unwrap();
        }
        (ready + waiting == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(world.fc.ledger().is_empty(), "a cancelled item was bought");
    let items = world
        .store()
        .items_of(&buyonce_shared::ExecutionId::parse("exec-cancel-me").unwrap())
        .await
        .unwrap();
    assert!(items.iter().all(|i| i.status.as_str() == "cancelled"));
    shutdown.cancel();
    worker.handle.await.unwrap().unwrap();
    world.cleanup().await;
}
