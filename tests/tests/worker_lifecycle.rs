//! The worker's life around its handlers: how long shutdown waits for a purchase that does not
//! finish, and what becomes of a delivery whose handler panics.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use buyonce_fakecloud::{FakeCloudConfig, FaultRule, Faults};
use buyonce_shared::Service;
use buyonce_tests::harness::{execution, recommendation, wait_for, World};
use buyonce_worker::error::PurchaseError;
use buyonce_worker::executors::{Executor, PurchaseContext, PurchaseRequest, Purchased};
use buyonce_worker::startup;
use tokio_util::sync::CancellationToken;

const PURCHASE: &str = "savingsplans:CreateSavingsPlan";

/// One drain, one deadline: a purchase that never finishes keeps the worker for the grace,
/// not twice the grace (the session waited it, then `run` waited it again — 2 × 25 s by default
/// against the 45 s Kubernetes gives the pod).
#[tokio::test]
async fn shutdown_waits_one_grace_for_a_purchase_that_does_not_finish() {
    let world = World::with_fakecloud(FakeCloudConfig {
        faults: Faults::rules([FaultRule::latency(PURCHASE, Duration::from_secs(60))]),
        ..FakeCloudConfig::default()
    })
    .await;
    let grace = Duration::from_secs(2);
    let mut config = world.worker_config();
    config.shutdown_grace = grace;
    let shutdown = CancellationToken::new();
    let worker = startup::spawn(config, shutdown.clone()).await.unwrap();
    world
        .enqueue(&execution(
            "exec-stop",
            vec![recommendation("savings-plans")],
        ))
        .await;
    wait_for(Duration::from_secs(30), "a purchase in flight", || async {
        (world.fc.call_count(PURCHASE) >= 1).then_some(())
    })
    .await;

    let stopping = Instant::now();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), worker.handle)
        .await
        .expect("the worker stops")
        .unwrap()
        .unwrap();
    let took = stopping.elapsed();
    assert!(took >= grace, "stopped after {took:?}, before the grace");
    assert!(
        took < grace + grace / 2,
        "stopped after {took:?}: more than one grace ({grace:?})"
    );
    world.cleanup().await;
}

/// Panics on every purchase.
struct Panicking(Arc<AtomicUsize>);

#[async_trait]
impl Executor for Panicking {
    async fn purchase(
        &self,
        _req: &PurchaseRequest<'_>,
        _ctx: &dyn PurchaseContext,
    ) -> Result<Purchased, PurchaseError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        panic!("simulated executor bug");
    }
}

/// A panicking handler does not strand its delivery: the panic is caught and counted, the
/// message goes back to the queue and is handled again (before, it stayed unacked until the
/// channel died, and the worker's prefetch slot with it).
#[tokio::test]
async fn a_panicking_handler_returns_its_message_to_the_queue_and_is_counted() {
    let world = World::new().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let executor = Panicking(calls.clone());
    let shutdown = CancellationToken::new();
    let worker = startup::spawn_with(
        world.worker_config(),
        |registry| {
            registry.insert(Service::SavingsPlans, Arc::new(executor));
        },
        shutdown.clone(),
    )
    .await
    .unwrap();
    world
        .enqueue(&execution(
            "exec-panic",
            vec![recommendation("savings-plans")],
        ))
        .await;
    // The first attempt panics; the item's claim goes stale (1.5 s in tests) and the
    // redelivered message takes it over and reaches the executor again.
    wait_for(
        Duration::from_secs(30),
        "the message handled again",
        || async { (calls.load(Ordering::SeqCst) >= 2).then_some(()) },
    )
    .await;
    let metrics = buyonce_tests::harness::scrape_metrics(worker.http_addr).await;
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    assert!(counter("buyonce_handler_panics_total") >= 1, "{metrics}");
    // Both claims went through the store's group commit, and its counters are exported.
    assert!(
        counter("buyonce_database_statements_total") >= 2,
        "{metrics}"
    );
    assert!(
        counter("buyonce_database_transactions_total") >= 1,
        "{metrics}"
    );
    assert_eq!(
        counter("buyonce_database_group_fallbacks_total"),
        0,
        "{metrics}"
    );
    assert!(
        metrics.contains("buyonce_in_flight 0"),
        "the in-flight gauge came back down: {metrics}"
    );
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), worker.handle).await;
    world.cleanup().await;
}

/// Stalls after its claim until another handler has taken the item over (as a worker that
/// waited out a Postgres outage finds it), then asks to spend.
struct TakenOverWhileStalled {
    store: buyonce_shared::store::Store,
    msg: buyonce_shared::PurchaseMessage,
    authorized: Arc<std::sync::Mutex<Option<Result<(), PurchaseError>>>>,
}

#[async_trait]
impl Executor for TakenOverWhileStalled {
    async fn purchase(
        &self,
        _req: &PurchaseRequest<'_>,
        ctx: &dyn PurchaseContext,
    ) -> Result<Purchased, PurchaseError> {
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Another worker's redelivered copy finds the claim stale and takes it.
        let taken = self.store.claim(&self.msg, Duration::ZERO).await.unwrap();
        assert!(
            matches!(taken, buyonce_shared::store::items::Claim::Claimed { .. }),
            "{taken:?}"
        );
        let authorized = ctx.authorize_spend(1.0, "a test offering").await;
        *self.authorized.lock().unwrap() = Some(authorized.clone());
        authorized?;
        Ok(Purchased {
            commitment_id: "bought-by-a-stale-owner".into(),
            cost_usd: Some(1.0),
            how: buyonce_worker::executors::How::Purchased,
            tag_pending: false,
        })
    }
}

/// Found by the chaos suite (a double OpenSearch purchase): a worker whose claim was taken over
/// while it stalled went on to buy, because nothing between its claim and its buy call asked
/// whether the item was still its own, and OpenSearch does not refuse a second reservation under
/// the same name. The last check before the buy call now confirms the claim.
#[tokio::test]
async fn a_worker_whose_claim_was_taken_over_does_not_buy() {
    let world = World::new().await;
    let msgs = world
        .submit(&execution(
            "exec-taken-over",
            vec![recommendation("opensearch")],
        ))
        .await;
    let authorized = Arc::new(std::sync::Mutex::new(None));
    let mut registry = std::collections::HashMap::new();
    registry.insert(
        Service::Opensearch,
        Arc::new(TakenOverWhileStalled {
            store: world.store().clone(),
            msg: msgs[0].clone(),
            authorized: authorized.clone(),
        }) as Arc<dyn Executor>,
    );
    let handler = buyonce_worker::handler::Handler::new(
        world.store().clone(),
        registry,
        startup::handler_settings(&world.worker_config()),
        Arc::new(buyonce_worker::metrics::Metrics::new()),
    );
    let outcome = handler.handle(&msgs[0].to_bytes()).await;
    let authorized = authorized.lock().unwrap().clone();
    assert!(
        matches!(&authorized, Some(Err(PurchaseError::Transient(m))) if m.contains("claim")),
        "the stale owner was refused before its buy call: {authorized:?} ({outcome:?})"
    );
    let item = world.item(&msgs[0]).await;
    assert_eq!(
        item.commitment_id, None,
        "nothing recorded by the stale owner"
    );
    world.cleanup().await;
}
