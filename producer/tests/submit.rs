//! Submitting executions against the real Postgres and RabbitMQ: the outbox, idempotent
//! resubmission, conflicts, publish failures and the relay.

mod common;

use std::time::Duration;

use buyonce_producer::submit::{self, Outcome, SubmitError};
use buyonce_shared::amqp::{Publisher, Topology};
use buyonce_shared::relay::relay_unpublished;
use buyonce_shared::store::{ExecutionStatus, ItemStatus};
use buyonce_shared::{ExecutionDocument, ExecutionId, IdempotencyToken};
use common::{document, document_json, Harness};
use lapin::options::{ExchangeDeclareOptions, ExchangeDeleteOptions};
use lapin::types::FieldTable;
use lapin::ExchangeKind;

fn token(lineage: &str, i: u32) -> String {
    IdempotencyToken::derive(lineage, i).as_str().to_owned()
}

/// A publisher whose exchange exists but has no queue bound: every mandatory publish comes
/// back unroutable, as when the purchases queue was deleted.
async fn unroutable_publisher(h: &Harness) -> Publisher {
    let topology = Topology::new(
        format!("{}-unbound", h.broker.topology.prefix),
        20,
        h.broker.topology.retry_delays.clone(),
    );
    let channel = h.broker.connection.create_channel().await.unwrap();
    channel
        .exchange_declare(
            topology.work_exchange().as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    Publisher::new(&h.broker.connection, topology)
        .await
        .unwrap()
}

async fn delete_exchange(h: &Harness, publisher: &Publisher) {
    let channel = h.broker.connection.create_channel().await.unwrap();
    let _ = channel
        .exchange_delete(
            publisher.topology().work_exchange().as_str().into(),
            ExchangeDeleteOptions::default(),
        )
        .await;
}

#[tokio::test]
async fn enqueue_records_n_items_and_publishes_n_messages_with_their_tokens() {
    let h = Harness::new().await;
    let doc = document("exec-n", 3);

    let report = submit::submit(h.store(), &h.broker.publisher, &doc)
        .await
        .unwrap();

    assert_eq!(report.outcome, Outcome::Created);
    assert_eq!((report.published, report.unpublished), (3, 0));
    let items = h
        .store()
        .items_of(&ExecutionId::parse("exec-n").unwrap())
        .await
        .unwrap();
    assert_eq!(items.len(), 3);
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item.status, ItemStatus::Queued);
        assert!(item.published_at.is_some(), "item {i} marked published");
        assert_eq!(item.token.as_str(), token("exec-n", i as u32));
    }
    let execution = h
        .store()
        .execution(&ExecutionId::parse("exec-n").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(execution.status, ExecutionStatus::Running);

    let mut messages = h.drain().await;
    messages.sort_by_key(|m| m.rec_index);
    assert_eq!(messages.len(), 3);
    for (i, msg) in messages.iter().enumerate() {
        assert_eq!(msg.execution_id.as_str(), "exec-n");
        assert_eq!(msg.rec_index.get(), i as u32);
        assert_eq!(msg.token.as_str(), token("exec-n", i as u32));
        assert_eq!(msg.recommendation, doc.recommendations[i]);
    }
    h.cleanup().await;
}

#[tokio::test]
async fn the_lineage_key_decides_the_tokens_when_given() {
    let h = Harness::new().await;
    let mut v = document_json("exec-lineage", 2);
    v["idempotency_key"] = "lineage-abc".into();
    let doc = ExecutionDocument::from_json(&serde_json::to_vec(&v).unwrap()).unwrap();

    submit::submit(h.store(), &h.broker.publisher, &doc)
        .await
        .unwrap();

    let mut messages = h.drain().await;
    messages.sort_by_key(|m| m.rec_index);
    let tokens: Vec<&str> = messages.iter().map(|m| m.token.as_str()).collect();
    assert_eq!(
        tokens,
        vec![token("lineage-abc", 0), token("lineage-abc", 1)]
    );
    h.cleanup().await;
}

#[tokio::test]
async fn an_identical_resubmission_creates_no_rows_and_republishes_nothing_already_published() {
    let h = Harness::new().await;
    let doc = document("exec-twice", 3);
    submit::submit(h.store(), &h.broker.publisher, &doc)
        .await
        .unwrap();
    assert_eq!(h.drain().await.len(), 3);

    let again = submit::submit(h.store(), &h.broker.publisher, &doc)
        .await
        .unwrap();

    assert_eq!(again.outcome, Outcome::Identical);
    assert_eq!(again.published, 0);
    assert!(again.items.iter().all(|i| i.published));
    assert_eq!(h.count("executions").await, 1);
    assert_eq!(h.count("purchase_items").await, 3);
    assert!(h.drain().await.is_empty(), "nothing republished");
    h.cleanup().await;
}

#[tokio::test]
async fn an_identical_resubmission_after_a_crash_publishes_only_queued_unpublished_items() {
    let h = Harness::new().await;
    let doc = document("exec-crash", 3);
    // The first producer committed and died before publishing.
    h.store().submit_execution(&doc).await.unwrap();
    // Meanwhile item 1 was bought (e.g. via the relay, whose mark was lost): not republished.
    h.sql("UPDATE purchase_items SET status = 'succeeded', commitment_id = 'ri-1' WHERE rec_index = 1")
        .await;

    let report = submit::submit(h.store(), &h.broker.publisher, &doc)
        .await
        .unwrap();

    assert_eq!(report.outcome, Outcome::Identical);
    assert_eq!(report.published, 2);
    let mut messages = h.drain().await;
    messages.sort_by_key(|m| m.rec_index);
    let published: Vec<(u32, &str)> = messages
        .iter()
        .map(|m| (m.rec_index.get(), m.token.as_str()))
        .collect();
    let (t0, t2) = (token("exec-crash", 0), token("exec-crash", 2));
    assert_eq!(published, vec![(0, t0.as_str()), (2, t2.as_str())]);
    assert_eq!(h.count("purchase_items").await, 3);
    h.cleanup().await;
}

#[tokio::test]
async fn a_conflicting_resubmission_is_refused_and_names_what_differs() {
    let h = Harness::new().await;
    submit::submit(h.store(), &h.broker.publisher, &document("exec-c", 2))
        .await
        .unwrap();
    h.drain().await;
    let mut changed = document_json("exec-c", 2);
    changed["recommendations"][1]["count"] = 5.into();
    changed["idempotency_key"] = "another-lineage".into();
    let changed = ExecutionDocument::from_json(&serde_json::to_vec(&changed).unwrap()).unwrap();

    let err = submit::submit(h.store(), &h.broker.publisher, &changed)
        .await
        .unwrap_err();

    let SubmitError::Conflict { differences, .. } = &err else {
        panic!("expected a conflict, got {err:?}");
    };
    assert_eq!(
        differences,
        &vec!["idempotency_key", "recommendations[1].count"]
    );
    assert!(err.to_string().contains("new execution_id"), "{err}");
    // Nothing written, nothing published, the lineage key untouched.
    assert_eq!(h.count("purchase_items").await, 2);
    assert!(h.drain().await.is_empty());
    let execution = h
        .store()
        .execution(&ExecutionId::parse("exec-c").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(execution.idempotency_key.as_str(), "exec-c");
    h.cleanup().await;
}

#[tokio::test]
async fn a_publish_failure_after_commit_leaves_items_queued_and_the_relay_publishes_them() {
    let h = Harness::new().await;
    let broken = unroutable_publisher(&h).await;
    let doc = document("exec-relay", 3);

    let err = submit::submit(h.store(), &broken, &doc).await.unwrap_err();

    let SubmitError::Publish(report) = &err else {
        panic!("expected a publish failure, got {err:?}");
    };
    assert_eq!((report.published, report.unpublished), (0, 3));
    assert!(
        err.to_string().contains(
            "recorded, 3 of 3 messages not yet published; the relay/reaper will publish them"
        ),
        "{err}"
    );
    let items = h
        .store()
        .items_of(&ExecutionId::parse("exec-relay").unwrap())
        .await
        .unwrap();
    assert!(items
        .iter()
        .all(|i| i.status == ItemStatus::Queued && i.published_at.is_none()));
    let execution = h
        .store()
        .execution(&ExecutionId::parse("exec-relay").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(execution.status, ExecutionStatus::Approved);
    assert!(h.drain().await.is_empty());

    // Items younger than the grace period are left to their producer.
    let early = relay_unpublished(
        h.store(),
        &h.broker.publisher,
        Duration::from_secs(3600),
        10,
    )
    .await
    .unwrap();
    assert_eq!(early.found, 0);

    let relayed = relay_unpublished(h.store(), &h.broker.publisher, Duration::ZERO, 2)
        .await
        .unwrap();

    assert_eq!(
        (relayed.found, relayed.published, relayed.failed),
        (3, 3, 0)
    );
    assert_eq!(relayed.executions_running, 1);
    let mut messages = h.drain().await;
    messages.sort_by_key(|m| m.rec_index);
    let tokens: Vec<String> = messages
        .iter()
        .map(|m| m.token.as_str().to_owned())
        .collect();
    assert_eq!(
        tokens,
        (0..3).map(|i| token("exec-relay", i)).collect::<Vec<_>>()
    );
    let items = h
        .store()
        .items_of(&ExecutionId::parse("exec-relay").unwrap())
        .await
        .unwrap();
    assert!(items.iter().all(|i| i.published_at.is_some()));
    let execution = h
        .store()
        .execution(&ExecutionId::parse("exec-relay").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(execution.status, ExecutionStatus::Running);
    let again = relay_unpublished(h.store(), &h.broker.publisher, Duration::ZERO, 10)
        .await
        .unwrap();
    assert_eq!(again.found, 0, "published items are not relayed twice");

    delete_exchange(&h, &broken).await;
    h.cleanup().await;
}

#[tokio::test]
async fn a_document_built_in_code_is_validated_before_anything_is_recorded() {
    let h = Harness::new().await;
    let mut doc = document("exec-invalid", 1);
    doc.recommendations[0].count = Some(0);

    let err = submit::submit(h.store(), &h.broker.publisher, &doc)
        .await
        .unwrap_err();

    assert!(matches!(err, SubmitError::Invalid(_)), "{err:?}");
    assert!(
        err.to_string().contains("recommendations[0].count"),
        "{err}"
    );
    assert_eq!(h.count("executions").await, 0);
    h.cleanup().await;
}
