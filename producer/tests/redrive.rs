//! Operator re-drive against the real Postgres and RabbitMQ.

mod common;

use buyonce_producer::redrive::{self, RedriveError};
use buyonce_producer::submit;
use buyonce_shared::store::ItemStatus;
use buyonce_shared::{ExecutionId, IdempotencyToken};
use common::{document, Harness};

#[tokio::test]
async fn redrive_republishes_only_failed_and_dead_items_with_unchanged_tokens() {
    let h = Harness::new().await;
    submit::submit(h.store(), &h.broker.publisher, &document("exec-rd", 4))
        .await
        .unwrap();
    h.drain().await;
    let before = h
        .store()
        .items_of(&ExecutionId::parse("exec-rd").unwrap())
        .await
        .unwrap();
    // Simulate what the fleet did: 0 bought, 1 failed for good, 2 dead after retries, 3 running.
    h.sql(
        "UPDATE purchase_items SET status = 'succeeded', commitment_id = 'ri-0', attempts = 1 WHERE rec_index = 0;
         UPDATE purchase_items SET status = 'failed', attempts = 3, error = 'offering not found' WHERE rec_index = 1;
         UPDATE purchase_items SET status = 'dead', attempts = 8, error = 'max attempts' WHERE rec_index = 2;
         UPDATE purchase_items SET status = 'running', attempts = 1, heartbeat_at = now() WHERE rec_index = 3;",
    )
    .await;

    let report = redrive::redrive(
        h.store(),
        &h.broker.publisher,
        &ExecutionId::parse("exec-rd").unwrap(),
    )
    .await
    .unwrap();

    let moved: Vec<(i32, ItemStatus)> = report
        .items
        .iter()
        .map(|i| (i.rec_index, i.old_status))
        .collect();
    assert_eq!(moved, vec![(1, ItemStatus::Failed), (2, ItemStatus::Dead)]);
    assert_eq!(report.published, 2);
    assert_eq!(report.items[0].token, before[1].masked_token());

    let mut messages = h.drain().await;
    messages.sort_by_key(|m| m.rec_index);
    let tokens: Vec<(u32, &str)> = messages
        .iter()
        .map(|m| (m.rec_index.get(), m.token.as_str()))
        .collect();
    assert_eq!(
        tokens,
        vec![(1, before[1].token.as_str()), (2, before[2].token.as_str())]
    );
    assert_eq!(
        messages[0].token,
        IdempotencyToken::derive("exec-rd", 1),
        "the same token as the first submission"
    );

    let after = h
        .store()
        .items_of(&ExecutionId::parse("exec-rd").unwrap())
        .await
        .unwrap();
    assert_eq!(after[0].status, ItemStatus::Succeeded);
    assert_eq!(after[0].commitment_id.as_deref(), Some("ri-0"));
    assert_eq!(after[3].status, ItemStatus::Running);
    for i in [1, 2] {
        assert_eq!(after[i].status, ItemStatus::Queued);
        assert_eq!(after[i].attempts, 0, "operator re-drive resets attempts");
        assert!(after[i].published_at.is_some());
        assert_eq!(after[i].token, before[i].token);
    }

    // Nothing left to re-drive: a second run moves and publishes nothing.
    let again = redrive::redrive(
        h.store(),
        &h.broker.publisher,
        &ExecutionId::parse("exec-rd").unwrap(),
    )
    .await
    .unwrap();
    assert!(again.items.is_empty());
    assert!(h.drain().await.is_empty());
    h.cleanup().await;
}

#[tokio::test]
async fn redrive_of_an_unknown_or_cancelled_execution_is_refused() {
    let h = Harness::new().await;
    let err = redrive::redrive(
        h.store(),
        &h.broker.publisher,
        &ExecutionId::parse("exec-none").unwrap(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RedriveError::NotFound(_)), "{err:?}");

    submit::submit(h.store(), &h.broker.publisher, &document("exec-cx", 1))
        .await
        .unwrap();
    h.drain().await;
    h.sql(
        "UPDATE executions SET status = 'cancelled';
         UPDATE purchase_items SET status = 'failed';",
    )
    .await;
    let err = redrive::redrive(
        h.store(),
        &h.broker.publisher,
        &ExecutionId::parse("exec-cx").unwrap(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RedriveError::Cancelled(_)), "{err:?}");
    let items = h
        .store()
        .items_of(&ExecutionId::parse("exec-cx").unwrap())
        .await
        .unwrap();
    assert_eq!(items[0].status, ItemStatus::Failed);
    assert!(h.drain().await.is_empty());
    h.cleanup().await;
}
