//! The reaper never reaps a live purchase: a worker heartbeats while a slow purchase runs longer
//! than `reap_after`, and sweeps during that time find nothing to reap.

use std::time::Duration;

use buyonce_fakecloud::{FakeCloudConfig, FaultRule, Faults};
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

#[tokio::test]
async fn a_bought_but_untagged_ri_is_retagged_by_the_reaper() {
    let world = World::new().await;
    // Tag writes fail for the purchase: bought, recorded, reported as tag_pending.
    world
        .fc
        .set_faults(Faults::rules([FaultRule::tag_write_failure(
            "ec2:CreateTags",
        )]));
    let handler = world.handler().await;
    let msg = world
        .submit(&execution("exec-tag", vec![recommendation("ec2")]))
        .await
        .remove(0);
    assert_eq!(
        handler.handle(&msg.to_bytes()).await,
        Outcome::Done { note: "purchased" }
    );
    let item = world.item(&msg).await;
    assert_eq!(item.status.as_str(), "succeeded");
    assert!(
        item.tag_pending,
        "a failed tag write must be reported, not silent"
    );
    let ri = item.commitment_id.clone().unwrap();
    assert!(world.fc.ledger()[0].tags.is_empty());

    let mut config =
        ReaperConfig::from_source(&[("AWS_ENDPOINT_URL", world.fc.endpoint().as_str())]).unwrap();
    config.aws = world.aws_settings();
    let reaper = Reaper::new(world.store().clone(), config).await;
    // Still failing: nothing retagged, still pending.
    assert_eq!(reaper.sweep().await.unwrap().unwrap().retagged, 0);
    assert!(world.item(&msg).await.tag_pending);
    // The tag API recovers: the next sweep writes the token tag.
    world.fc.set_faults(Faults::none());
    assert_eq!(reaper.sweep().await.unwrap().unwrap().retagged, 1);
    assert!(!world.item(&msg).await.tag_pending);
    let ledger = world.fc.ledger();
    assert_eq!(ledger[0].commitment_id, ri);
    assert_eq!(
        ledger[0]
            .tags
            .get("buyonce-idempotency-token")
            .map(String::as_str),
        Some(msg.token.as_str())
    );
    world.cleanup().await;
}

#[tokio::test]
async fn redrive_failed_puts_reaped_items_with_attempts_left_back_in_the_queue() {
    let world = World::new().await;
    let msgs = world
        .submit(&execution(
            "exec-auto",
            vec![recommendation("rds"), recommendation("memorydb")],
        ))
        .await;
    // Both claimed by workers that died; one had used all its attempts.
    for m in &msgs {
        assert!(matches!(
            world
                .store()
                .claim(m, Duration::from_secs(30))
                .await
                .unwrap(),
            buyonce_shared::store::items::Claim::Claimed { .. }
        ));
    }
    let client = world.store().pool().get().await.unwrap();
    client
        .execute(
            "UPDATE purchase_items SET heartbeat_at = now() - interval '1 hour',
                    attempts = CASE WHEN rec_index = 1 THEN 8 ELSE 1 END",
            &[],
        )
        .await
        .unwrap();
    // Back to the pool: a sweep holds its lock on one connection and works through another.
    drop(client);
    let mut config = ReaperConfig::from_source(&[
        ("AWS_ENDPOINT_URL", world.fc.endpoint().as_str()),
        (
            "BUYONCE_AMQP_URL",
            buyonce_shared::testing::amqp_url().as_str(),
        ),
        (
            "BUYONCE_QUEUE_PREFIX",
            world.broker.topology.prefix.as_str(),
        ),
        ("BUYONCE_RETRY_DELAYS", "200ms,500ms,1s"),
    ])
    .unwrap();
    config.reap_after = Duration::from_secs(60);
    config.redrive_failed = true;
    let reaper = Reaper::new(world.store().clone(), config).await;
    let report = reaper.sweep().await.unwrap().unwrap();
    assert_eq!((report.reaped, report.redriven), (2, 1), "{report}");
    assert_eq!(world.item(&msgs[0]).await.status.as_str(), "queued");
    assert_eq!(
        world.item(&msgs[1]).await.status.as_str(),
        "failed",
        "attempts exhausted: stays failed"
    );
    assert_eq!(
        world
            .broker
            .queue_len(&world.broker.topology.purchases_queue())
            .await
            .unwrap(),
        1
    );
    world.cleanup().await;
}
