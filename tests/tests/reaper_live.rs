//! The reaper never reaps a live purchase: a worker heartbeats while a slow purchase runs longer
//! than `reap_after`, and sweeps during that time find nothing to reap.

use std::time::Duration;

use buyonce_tests::fakecloud::{FakeCloudConfig, FaultRule, Faults};
use buyonce_tests::harness::{execution, recommendation, World};
use buyonce_worker::handler::Outcome;
use buyonce_worker::reaper::{Reaper, ReaperConfig};

#[tokio::test]
async fn a_live_worker_with_heartbeats_is_never_reaped() {
    let world = World::with_fakecloud(FakeCloudConfig {
        faults: Faults::rules([FaultRule::latency(
            "rds:PurchaseReservedDBInstancesOffering",
            Duration::from_secs(4),
        )]),
        ..FakeCloudConfig::default()
    })
    .await;
    let handler = world.handler().await; // heartbeats every 500ms
    let msg = world
        .submit(&execution("exec-slow", vec![recommendation("rds")]))
        .await
        .remove(0);

    let mut config =
        ReaperConfig::from_source(&[("AWS_ENDPOINT_URL", world.fc.endpoint().as_str())]).unwrap();
    config.reap_after = Duration::from_secs(1); // far shorter than the purchase
    let reaper = Reaper::new(world.store().clone(), config).await;

    let body = msg.to_bytes();
    let purchase = handler.handle(&body);
    let sweeps = async {
        let mut reaped = 0;
        let mut sweeps = 0;
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let r = reaper.sweep().await.unwrap().unwrap();
            reaped += r.reaped;
            sweeps += 1;
        }
        (sweeps, reaped)
    };
    let (outcome, (sweeps, reaped)) = tokio::join!(purchase, sweeps);
    assert_eq!(sweeps, 8);
    assert_eq!(reaped, 0, "a heartbeating purchase was reaped");
    assert_eq!(outcome, Outcome::Done { note: "purchased" });
    assert_eq!(world.item(&msg).await.status.as_str(), "succeeded");
    assert_eq!(world.fc.ledger().len(), 1);

    // Control: the same item without heartbeats (a dead worker) is reaped once stale.
    let other = world
        .submit(&execution(
            "exec-dead-worker",
            vec![recommendation("memorydb")],
        ))
        .await
        .remove(0);
    assert!(matches!(
        world
            .store()
            .claim(&other, Duration::from_secs(30))
            .await
            .unwrap(),
        buyonce_shared::store::items::Claim::Claimed { .. }
    ));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = reaper.sweep().await.unwrap().unwrap();
    assert_eq!(r.reaped, 1);
    assert_eq!(world.item(&other).await.status.as_str(), "failed");
    world.cleanup().await;
}
