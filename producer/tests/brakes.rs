//! Operator brakes against the real Postgres and RabbitMQ: cancel, re-drive of cancelled
//! items, pause/resume and the fleet summary.

mod common;

use std::time::Duration;

use buyonce_producer::cancel::{self, CancelError};
use buyonce_producer::fleet;
use buyonce_producer::redrive::{self, RedriveError, RedriveOptions};
use buyonce_producer::submit;
use buyonce_shared::store::items::Claim;
use buyonce_shared::store::{ExecutionStatus, ItemStatus};
use buyonce_shared::{DeadLetterReason, ExecutionId, IdempotencyToken};
use common::{document, Harness};

const STALE: Duration = Duration::from_secs(600);

#[tokio::test]
async fn cancel_cancels_queued_items_and_names_the_running_ones() {
    let h = Harness::new().await;
    submit::submit(h.store(), &h.broker.publisher, &document("exec-cx", 4))
        .await
        .unwrap();
    let messages = h.drain().await;
    // A worker is buying item 2 right now.
    h.sql(
        "UPDATE purchase_items SET status = 'running', attempts = 1, heartbeat_at = now()
          WHERE rec_index = 2",
    )
    .await;

    let report = cancel::cancel(
        h.store(),
        &ExecutionId::parse("exec-cx").unwrap(),
        "alice@ops",
    )
    .await
    .unwrap();

    let cancelled: Vec<i32> = report.cancelled.iter().map(|i| i.rec_index).collect();
    assert_eq!(cancelled, vec![0, 1, 3]);
    assert_eq!(report.still_running.len(), 1);
    assert_eq!(report.still_running[0].rec_index, 2);
    assert_eq!(report.still_running[0].service, "vm");
    assert_eq!(
        report.still_running[0].token,
        IdempotencyToken::derive("exec-cx", 2).mask()
    );
    let items = h
        .store()
        .items_of(&ExecutionId::parse("exec-cx").unwrap())
        .await
        .unwrap();
    let statuses: Vec<ItemStatus> = items.iter().map(|i| i.status).collect();
    assert_eq!(
        statuses,
        vec![
            ItemStatus::Cancelled,
            ItemStatus::Cancelled,
            ItemStatus::Running,
            ItemStatus::Cancelled
        ]
    );
    let execution = h
        .store()
        .execution(&ExecutionId::parse("exec-cx").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(execution.status, ExecutionStatus::Cancelled);
    assert_eq!(execution.error.as_deref(), Some("cancelled by alice@ops"));

    // The message of a cancelled item still in the queue: the worker's claim refuses it.
    let claim = h.store().claim(&messages[0], STALE).await.unwrap();
    assert_eq!(claim, Claim::Cancelled);

    // Cancelling again changes nothing and says so.
    let again = cancel::cancel(
        h.store(),
        &ExecutionId::parse("exec-cx").unwrap(),
        "alice@ops",
    )
    .await
    .unwrap();
    assert!(again.already_cancelled);
    assert!(again.cancelled.is_empty());
    assert_eq!(again.still_running.len(), 1);

    let missing = cancel::cancel(
        h.store(),
        &ExecutionId::parse("exec-none").unwrap(),
        "alice@ops",
    )
    .await
    .unwrap_err();
    assert!(matches!(missing, CancelError::NotFound(_)), "{missing:?}");
    h.cleanup().await;
}

#[tokio::test]
async fn an_execution_that_already_ended_cannot_be_cancelled() {
    let h = Harness::new().await;
    submit::submit(h.store(), &h.broker.publisher, &document("exec-done", 1))
        .await
        .unwrap();
    h.drain().await;
    h.sql(
        "UPDATE purchase_items SET status = 'succeeded', commitment_id = 'ri-1';
         UPDATE executions SET status = 'completed';",
    )
    .await;

    let err = cancel::cancel(
        h.store(),
        &ExecutionId::parse("exec-done").unwrap(),
        "bob@ops",
    )
    .await
    .unwrap_err();

    assert!(
        matches!(
            err,
            CancelError::Ended {
                status: ExecutionStatus::Completed,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("already ended (completed)"));
    let items = h
        .store()
        .items_of(&ExecutionId::parse("exec-done").unwrap())
        .await
        .unwrap();
    assert_eq!(items[0].status, ItemStatus::Succeeded);
    h.cleanup().await;
}

#[tokio::test]
async fn redrive_refuses_a_cancelled_execution_unless_cancelled_items_are_included() {
    let h = Harness::new().await;
    submit::submit(h.store(), &h.broker.publisher, &document("exec-rc", 3))
        .await
        .unwrap();
    h.drain().await;
    h.sql(
        "UPDATE purchase_items SET status = 'failed', error = 'offering not found'
          WHERE rec_index = 0",
    )
    .await;
    cancel::cancel(h.store(), &ExecutionId::parse("exec-rc").unwrap(), "ops")
        .await
        .unwrap();

    let err = redrive::redrive(
        h.store(),
        &h.broker.publisher,
        &ExecutionId::parse("exec-rc").unwrap(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RedriveError::Cancelled(_)), "{err:?}");
    assert!(err.to_string().contains("--include-cancelled"), "{err}");
    assert!(h.drain().await.is_empty());

    let report = redrive::redrive_with(
        h.store(),
        &h.broker.publisher,
        &ExecutionId::parse("exec-rc").unwrap(),
        RedriveOptions {
            include_cancelled: true,
        },
    )
    .await
    .unwrap();

    let moved: Vec<(i32, ItemStatus)> = report
        .items
        .iter()
        .map(|i| (i.rec_index, i.old_status))
        .collect();
    assert_eq!(
        moved,
        vec![
            (0, ItemStatus::Failed),
            (1, ItemStatus::Cancelled),
            (2, ItemStatus::Cancelled)
        ]
    );
    let mut messages = h.drain().await;
    messages.sort_by_key(|m| m.rec_index);
    let tokens: Vec<IdempotencyToken> = messages.iter().map(|m| m.token.clone()).collect();
    assert_eq!(
        tokens,
        (0..3)
            .map(|i| IdempotencyToken::derive("exec-rc", i))
            .collect::<Vec<_>>(),
        "the same tokens as before the cancel"
    );
    let execution = h
        .store()
        .execution(&ExecutionId::parse("exec-rc").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(execution.status, ExecutionStatus::Running);
    assert!(h
        .store()
        .items_of(&ExecutionId::parse("exec-rc").unwrap())
        .await
        .unwrap()
        .iter()
        .all(|i| i.status == ItemStatus::Queued));
    // And the worker may claim them again.
    let claim = h.store().claim(&messages[1], STALE).await.unwrap();
    assert!(matches!(claim, Claim::Claimed { .. }), "{claim:?}");
    h.cleanup().await;
}

#[tokio::test]
async fn pause_and_resume_round_trip_and_a_paused_fleet_claims_nothing() {
    let h = Harness::new().await;
    submit::submit(h.store(), &h.broker.publisher, &document("exec-pz", 1))
        .await
        .unwrap();
    let messages = h.drain().await;

    let paused = fleet::pause(h.store(), Some("  quarterly audit "), "carol@laptop")
        .await
        .unwrap();

    assert!(paused.paused);
    assert_eq!(paused.reason.as_deref(), Some("quarterly audit"));
    assert_eq!(paused.changed_by.as_deref(), Some("carol@laptop"));
    assert!(fleet::render_pause(&paused).contains("PAUSED"));
    assert!(h.store().pause_state().await.unwrap().paused);
    let claim = h.store().claim(&messages[0], STALE).await.unwrap();
    assert_eq!(claim, Claim::Paused, "no purchase starts while paused");

    let resumed = fleet::resume(h.store(), "carol@laptop").await.unwrap();
    assert!(!resumed.paused);
    assert!(resumed.reason.is_none());
    assert!(resumed.changed_at >= paused.changed_at);
    let claim = h.store().claim(&messages[0], STALE).await.unwrap();
    assert!(matches!(claim, Claim::Claimed { .. }), "{claim:?}");
    assert!(fleet::operator_identity().contains('@'));
    h.cleanup().await;
}

#[tokio::test]
async fn the_fleet_summary_shows_pause_spend_against_budget_items_and_dead_letters() {
    let h = Harness::new().await;
    submit::submit(h.store(), &h.broker.publisher, &document("exec-fs", 3))
        .await
        .unwrap();
    h.drain().await;
    h.sql(
        "UPDATE purchase_items SET status = 'succeeded', commitment_id = 'c' WHERE rec_index = 0;
         INSERT INTO daily_spend (day, reserved_usd)
              VALUES ((now() AT TIME ZONE 'UTC')::date, 250.5);",
    )
    .await;
    h.dead_letter_item("exec-fs", 1, DeadLetterReason::SpendCap, "too dear")
        .await;
    buyonce_producer::dlq::drain(h.store(), &h.broker.connection, &h.broker.topology)
        .await
        .unwrap();
    fleet::pause(h.store(), Some("incident 42"), "dave@ops")
        .await
        .unwrap();

    let summary = fleet::summary(h.store(), Some(1000.0)).await.unwrap();

    assert!(summary.pause.paused);
    assert_eq!(summary.spend.today.reserved_usd, 250.5);
    assert_eq!(summary.spend.budget_usd, Some(1000.0));
    assert_eq!(summary.spend.remaining_usd, Some(749.5));
    assert_eq!(summary.items.get("queued"), Some(&2));
    assert_eq!(summary.items.get("succeeded"), Some(&1));
    assert_eq!(summary.dead_letters.total, 1);
    assert_eq!(summary.dead_letters.unreplayed, 1);
    assert_eq!(summary.dead_letters.by_reason.get("spend-cap"), Some(&1));
    let text = fleet::render_summary(&summary, true);
    assert!(text.contains("reason: incident 42"), "{text}");
    assert!(
        text.contains("$250.50 reserved of $1000.00 daily budget ($749.50 left)"),
        "{text}"
    );
    assert!(text.contains("items: 2 queued, 1 succeeded"), "{text}");
    assert!(
        text.contains("dead letters (archived): 1 total, 1 not replayed (1 spend-cap)"),
        "{text}"
    );
    let without_budget = fleet::summary(h.store(), None).await.unwrap();
    assert!(fleet::render_spend(&without_budget.spend).contains("BUYONCE_DAILY_BUDGET_USD"));
    h.cleanup().await;
}
