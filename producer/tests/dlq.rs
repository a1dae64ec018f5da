//! Dead letters against the real Postgres and RabbitMQ: archiving (the safe peek), listing,
//! showing, replaying with the same token, purging, and the broker's own dead-lettering.

mod common;

use std::time::Duration;

use buyonce_producer::dlq::{self, ListFilter, ReplayOutcome, ReplayRequest, Selection};
use buyonce_producer::submit;
use buyonce_shared::amqp::dead_letters::{archive_pending, run_archiver_on};
use buyonce_shared::amqp::publisher::purchase_properties;
use buyonce_shared::amqp::{headers, Publisher, Topology};
use buyonce_shared::store::dead_letters::{DeadLetterFilter, DeadLetterOrigin};
use buyonce_shared::store::{ExecutionStatus, ItemStatus};
use buyonce_shared::testing::unique_name;
use buyonce_shared::{DeadLetterReason, ExecutionId, IdempotencyToken, RecIndex};
use common::{document, Harness};
use lapin::options::{
    BasicGetOptions, BasicNackOptions, ExchangeDeleteOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldArray, FieldTable};
use tokio_util::sync::CancellationToken;

/// Drains the dead-letter queue into Postgres, then lists everything (no limit).
async fn list_all(h: &Harness) -> Vec<dlq::DeadLetterView> {
    dlq::drain(h.store(), &h.broker.connection, &h.broker.topology)
        .await
        .unwrap();
    dlq::list(
        h.store(),
        &ListFilter {
            limit: Some(1000),
            ..ListFilter::default()
        },
    )
    .await
    .unwrap()
    .dead_letters
}

async fn item_status(h: &Harness, execution_id: &str, rec_index: i32) -> ItemStatus {
    h.store()
        .item_with_lineage(
            &ExecutionId::parse(execution_id).unwrap(),
            RecIndex::new(rec_index as u32).unwrap(),
        )
        .await
        .unwrap()
        .unwrap()
        .0
        .status
}

#[tokio::test]
async fn listing_archives_every_dead_letter_in_order_and_a_second_listing_shows_the_same_rows() {
    let h = Harness::new().await;
    submit::submit(h.store(), &h.broker.publisher, &document("exec-dl", 5))
        .await
        .unwrap();
    h.drain().await;
    let reasons = [
        DeadLetterReason::MaxAttempts,
        DeadLetterReason::PermanentFailure,
        DeadLetterReason::SpendCap,
        DeadLetterReason::UnknownItem,
        DeadLetterReason::RecommendationMismatch,
    ];
    let mut published = Vec::new();
    for (i, reason) in reasons.iter().enumerate() {
        let error = format!("error of item {i}");
        let id = h
            .dead_letter_item("exec-dl", i as i32, *reason, &error)
            .await;
        published.push((id, *reason, error));
    }
    assert_eq!(h.dead_queue_len().await, 5);

    // An archive pass that stops early leaves the rest queued, untouched.
    let channel = h.broker.connection.create_channel().await.unwrap();
    let partial = archive_pending(h.store(), &channel, &h.broker.topology, 2)
        .await
        .unwrap();
    assert_eq!((partial.archived, partial.remaining), (2, 3));
    assert_eq!(h.dead_queue_len().await, 3);

    let first = list_all(&h).await;
    let second = list_all(&h).await;

    assert_eq!(h.dead_queue_len().await, 0, "everything is archived");
    let summary = |rows: &[dlq::DeadLetterView]| {
        rows.iter()
            .map(|d| (d.id, d.reason, d.rec_index, d.error.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(summary(&first), summary(&second), "same rows, same order");
    let listed: Vec<(DeadLetterReason, Option<i32>, Option<String>)> = first
        .iter()
        .map(|d| (d.reason, d.rec_index, d.error.clone()))
        .collect();
    let expected: Vec<(DeadLetterReason, Option<i32>, Option<String>)> = published
        .iter()
        .enumerate()
        .map(|(i, (_, reason, error))| (*reason, Some(i as i32), Some(error.clone())))
        .collect();
    assert_eq!(listed, expected, "every published dead letter, in order");
    let token = IdempotencyToken::derive("exec-dl", 0);
    assert_eq!(first[0].token, token.mask());
    assert_eq!(first[0].execution_id.as_deref(), Some("exec-dl"));
    assert_eq!(first[0].service.as_deref(), Some("ec2"));
    assert_eq!(first[0].origin, DeadLetterOrigin::Worker);
    assert!(first[0].last_death_at.is_some());
    assert!(
        !first[4].replayable,
        "recommendation-mismatch never replays"
    );

    // The table holds exactly what was published: the keys and the bodies.
    let rows = h
        .store()
        .dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    let keys: Vec<String> = rows.iter().map(|r| r.dedupe_key.clone()).collect();
    let published_keys: Vec<String> = published
        .iter()
        .map(|(id, _, _)| format!("worker:{id}"))
        .collect();
    assert_eq!(keys, published_keys);
    for (i, row) in rows.iter().enumerate() {
        let msg = h.message_of("exec-dl", i as i32).await;
        assert_eq!(row.body, msg.to_bytes());
        assert_eq!(
            row.headers[headers::TOKEN_MASKED],
            msg.token.mask(),
            "headers are kept"
        );
    }
    // A worker-originated dead letter leaves the item to the worker.
    assert_eq!(item_status(&h, "exec-dl", 0).await, ItemStatus::Queued);

    // Filters narrow the listing; the limit caps it and the total says how many match.
    let spend_cap = dlq::list(
        h.store(),
        &ListFilter {
            reason: Some(DeadLetterReason::SpendCap),
            ..ListFilter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(spend_cap.dead_letters.len(), 1);
    assert_eq!(spend_cap.dead_letters[0].rec_index, Some(2));
    let limited = dlq::list(
        h.store(),
        &ListFilter {
            limit: Some(2),
            ..ListFilter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!((limited.dead_letters.len(), limited.total), (2, 5));
    let json = serde_json::to_value(&limited).unwrap();
    assert_eq!(json["dead_letters"][0]["reason"], "max-attempts");
    assert!(!json.to_string().contains(token.as_str()), "tokens masked");
    h.cleanup().await;
}

#[tokio::test]
async fn archiving_the_same_dead_letter_twice_keeps_one_row() {
    let h = Harness::new().await;
    submit::submit(h.store(), &h.broker.publisher, &document("exec-dup", 1))
        .await
        .unwrap();
    h.drain().await;
    let msg = h.message_of("exec-dup", 0).await;
    // A crash after the commit and before the ack redelivers the same message: simulate it
    // with a second copy carrying the same dead-letter ID.
    let id = h
        .dead_letter_as_worker(
            &msg.to_bytes(),
            purchase_properties(&msg),
            DeadLetterReason::MaxAttempts,
            "gave up",
            None,
        )
        .await;
    h.dead_letter_as_worker(
        &msg.to_bytes(),
        purchase_properties(&msg),
        DeadLetterReason::MaxAttempts,
        "gave up",
        Some(id),
    )
    .await;

    let report = dlq::drain(h.store(), &h.broker.connection, &h.broker.topology)
        .await
        .unwrap();

    assert_eq!((report.archived, report.duplicates), (1, 1));
    assert_eq!(h.count("dead_letters").await, 1);
    assert_eq!(h.dead_queue_len().await, 0, "the copy is acked too");
    h.cleanup().await;
}

#[tokio::test]
async fn replay_of_a_dead_item_republishes_the_same_token_and_requeues_it() {
    let h = Harness::new().await;
    submit::submit(h.store(), &h.broker.publisher, &document("exec-rp", 3))
        .await
        .unwrap();
    h.drain().await;
    // What a worker does when transient failures exhaust the attempts.
    h.sql(
        "UPDATE purchase_items SET status = 'dead', attempts = 5, error = 'throttled'
          WHERE rec_index = 1",
    )
    .await;
    h.dead_letter_item(
        "exec-rp",
        1,
        DeadLetterReason::MaxAttempts,
        "gave up after 5",
    )
    .await;
    let rows = list_all(&h).await;
    let id = rows[0].id;

    let dry = dlq::replay(
        h.store(),
        &h.broker.publisher,
        &ReplayRequest {
            selection: Selection::Ids(vec![id]),
            dry_run: true,
        },
    )
    .await
    .unwrap();
    assert_eq!(dry.results[0].outcome, ReplayOutcome::WouldReplay);
    assert!(h.drain().await.is_empty(), "a dry run publishes nothing");
    assert_eq!(item_status(&h, "exec-rp", 1).await, ItemStatus::Dead);

    let report = dlq::replay(
        h.store(),
        &h.broker.publisher,
        &ReplayRequest {
            selection: Selection::Ids(vec![id]),
            dry_run: false,
        },
    )
    .await
    .unwrap();

    assert_eq!(report.replayed, 1, "{report:?}");
    assert_eq!(report.results[0].outcome, ReplayOutcome::Replayed);
    let messages = h.drain().await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].rec_index.get(), 1);
    assert_eq!(
        messages[0].token,
        IdempotencyToken::derive("exec-rp", 1),
        "the same token as the original purchase"
    );
    let (item, _) = h
        .store()
        .item_with_lineage(
            &ExecutionId::parse("exec-rp").unwrap(),
            RecIndex::new(1).unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.status, ItemStatus::Queued);
    assert_eq!(item.attempts, 0, "an operator replay resets attempts");
    let row = h.store().dead_letter(id).await.unwrap().unwrap();
    assert_eq!(row.replay_count, 1);
    assert!(row.replayed_at.is_some());

    // Again: the item is queued already, so nothing is republished.
    let again = dlq::replay(
        h.store(),
        &h.broker.publisher,
        &ReplayRequest {
            selection: Selection::Ids(vec![id]),
            dry_run: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(again.results[0].outcome, ReplayOutcome::Skipped);
    assert!(again.results[0].detail.contains("queued already"));
    assert!(h.drain().await.is_empty());
    // A bulk replay skips what was replayed already.
    let bulk = dlq::replay(
        h.store(),
        &h.broker.publisher,
        &ReplayRequest {
            selection: Selection::All,
            dry_run: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(bulk.selected, 0);
    h.cleanup().await;
}

#[tokio::test]
async fn replay_refuses_malformed_and_mismatched_messages_with_a_reason_each() {
    let h = Harness::new().await;
    submit::submit(h.store(), &h.broker.publisher, &document("exec-bad", 2))
        .await
        .unwrap();
    h.drain().await;
    let garbage = b"{\"v\": 1, \"token\": \"\x1b[31m".to_vec();
    h.dead_letter_garbage(&garbage, DeadLetterReason::Malformed)
        .await;
    h.dead_letter_item(
        "exec-bad",
        0,
        DeadLetterReason::TokenMismatch,
        "token differs",
    )
    .await;
    h.sql("UPDATE purchase_items SET status = 'failed' WHERE rec_index = 1")
        .await;
    h.dead_letter_item(
        "exec-bad",
        1,
        DeadLetterReason::PermanentFailure,
        "offering not found",
    )
    .await;
    let rows = list_all(&h).await;
    assert_eq!(rows.len(), 3);

    let report = dlq::replay(
        h.store(),
        &h.broker.publisher,
        &ReplayRequest {
            selection: Selection::All,
            dry_run: false,
        },
    )
    .await
    .unwrap();

    let outcomes: Vec<(i64, ReplayOutcome)> =
        report.results.iter().map(|r| (r.id, r.outcome)).collect();
    assert_eq!(
        outcomes,
        vec![
            (rows[0].id, ReplayOutcome::Refused),
            (rows[1].id, ReplayOutcome::Refused),
            (rows[2].id, ReplayOutcome::Replayed),
        ]
    );
    assert!(
        report.results[0]
            .detail
            .contains("malformed messages cannot be replayed"),
        "{}",
        report.results[0].detail
    );
    assert!(report.results[1]
        .detail
        .contains("token-mismatch messages cannot be replayed"));
    let messages = h.drain().await;
    assert_eq!(messages.len(), 1, "only the failed item is republished");
    assert_eq!(messages[0].rec_index.get(), 1);
    assert_eq!(item_status(&h, "exec-bad", 0).await, ItemStatus::Queued);
    let unknown = dlq::replay(
        h.store(),
        &h.broker.publisher,
        &ReplayRequest {
            selection: Selection::Ids(vec![999_999]),
            dry_run: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(unknown.results[0].outcome, ReplayOutcome::Refused);
    assert_eq!(unknown.results[0].detail, "no dead letter 999999");

    // `show` of the malformed one: the raw bytes, escaped, and why they do not decode.
    let detail = dlq::show(h.store(), rows[0].id).await.unwrap().unwrap();
    assert!(detail.envelope.is_none());
    let body = detail.body.unwrap();
    assert!(body.contains("\\x1b[31m"), "{body}");
    assert!(!body.contains('\u{1b}'), "control bytes are escaped");
    assert!(detail.decode_error.is_some());
    assert_eq!(detail.headers[headers::REASON], "malformed");
    // `show` of a decodable one: the envelope, its token masked.
    let detail = dlq::show(h.store(), rows[2].id).await.unwrap().unwrap();
    let envelope = detail.envelope.unwrap();
    assert_eq!(
        envelope["token"],
        IdempotencyToken::derive("exec-bad", 1).mask()
    );
    assert_eq!(envelope["recommendation"]["service"], "rds");
    h.cleanup().await;
}

#[tokio::test]
async fn purge_removes_only_the_selected_dead_letters() {
    let h = Harness::new().await;
    submit::submit(h.store(), &h.broker.publisher, &document("exec-pg", 3))
        .await
        .unwrap();
    h.drain().await;
    h.dead_letter_item("exec-pg", 0, DeadLetterReason::SpendCap, "too dear")
        .await;
    h.dead_letter_item("exec-pg", 1, DeadLetterReason::SpendCap, "too dear")
        .await;
    h.dead_letter_item("exec-pg", 2, DeadLetterReason::PermanentFailure, "no")
        .await;
    let rows = list_all(&h).await;

    let by_reason = dlq::purge(h.store(), &Selection::Reason(DeadLetterReason::SpendCap))
        .await
        .unwrap();

    assert_eq!(by_reason.deleted, 2);
    assert_eq!(by_reason.by_reason, vec![(DeadLetterReason::SpendCap, 2)]);
    let left = list_all(&h).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, rows[2].id);

    let by_id = dlq::purge(h.store(), &Selection::Ids(vec![rows[0].id, rows[2].id]))
        .await
        .unwrap();
    assert_eq!(by_id.deleted, 1);
    assert_eq!(by_id.not_found, vec![rows[0].id]);
    assert!(list_all(&h).await.is_empty());
    assert_eq!(h.count("purchase_items").await, 3, "items are not touched");
    h.cleanup().await;
}

/// A topology of its own whose work queue dead-letters after one redelivery.
async fn delivery_limit_one(h: &Harness) -> (Topology, Publisher) {
    let topology = Topology::new(
        unique_name("t").replace('_', "-"),
        1,
        vec![Duration::from_millis(200)],
    );
    topology.declare(&h.broker.connection).await.unwrap();
    let publisher = Publisher::new(&h.broker.connection, topology.clone())
        .await
        .unwrap();
    (topology, publisher)
}

async fn delete_topology(h: &Harness, t: &Topology) {
    let channel = h.broker.connection.create_channel().await.unwrap();
    for q in [t.purchases_queue(), t.dead_queue(), t.retry_queue(0)] {
        let _ = channel
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for x in [t.work_exchange(), t.dead_exchange(), t.retry_exchange()] {
        let _ = channel
            .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
}

#[tokio::test]
async fn a_message_the_broker_kills_at_the_delivery_limit_is_archived_and_its_item_dies() {
    let h = Harness::new().await;
    let (topology, publisher) = delivery_limit_one(&h).await;
    submit::submit(h.store(), &publisher, &document("exec-dlim", 1))
        .await
        .unwrap();
    // A worker that keeps crashing on the message: every delivery comes back unacked.
    let channel = h.broker.connection.create_channel().await.unwrap();
    let queue = topology.purchases_queue();
    for _ in 0..10 {
        match channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
        {
            Some(got) => {
                got.delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await
                    .unwrap();
            }
            None => break,
        }
    }
    let mut waited = 0;
    while h.broker.queue_len(&topology.dead_queue()).await.unwrap() == 0 && waited < 50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }

    let report = dlq::drain(h.store(), &h.broker.connection, &topology)
        .await
        .unwrap();

    assert_eq!((report.archived, report.items_dead), (1, 1), "{report:?}");
    let rows = h
        .store()
        .dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(rows[0].reason, DeadLetterReason::DeliveryLimit);
    assert_eq!(rows[0].origin, DeadLetterOrigin::Broker);
    let deaths = rows[0].death_summary.clone().unwrap();
    assert!(
        deaths.contains(&format!("delivery_limit x1 in {queue}")),
        "{deaths}"
    );
    assert!(rows[0]
        .error
        .as_deref()
        .unwrap()
        .contains("x-delivery-limit"));
    let (item, _) = h
        .store()
        .item_with_lineage(
            &ExecutionId::parse("exec-dlim").unwrap(),
            RecIndex::new(0).unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.status, ItemStatus::Dead, "the item no longer waits");
    let execution = h
        .store()
        .execution(&ExecutionId::parse("exec-dlim").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(execution.status, ExecutionStatus::Failed);

    // Replay puts it back to work with the same token.
    let replayed = dlq::replay(
        h.store(),
        &publisher,
        &ReplayRequest {
            selection: Selection::Reason(DeadLetterReason::DeliveryLimit),
            dry_run: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(replayed.replayed, 1, "{replayed:?}");
    let got = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the replayed message");
    let msg = buyonce_shared::PurchaseMessage::decode(&got.delivery.data).unwrap();
    assert_eq!(msg.token, IdempotencyToken::derive("exec-dlim", 0));
    delete_topology(&h, &topology).await;
    h.cleanup().await;
}

#[tokio::test]
async fn a_rejected_message_with_an_x_death_header_is_archived_as_broker() {
    let h = Harness::new().await;
    submit::submit(h.store(), &h.broker.publisher, &document("exec-xd", 2))
        .await
        .unwrap();
    h.drain().await;
    let msg = h.message_of("exec-xd", 1).await;
    let mut death = FieldTable::default();
    death.insert("count".into(), AMQPValue::LongLongInt(1));
    death.insert("reason".into(), headers::long("rejected"));
    death.insert(
        "queue".into(),
        headers::long(&h.broker.topology.purchases_queue()),
    );
    death.insert("time".into(), AMQPValue::Timestamp(1_767_225_600));
    death.insert("exchange".into(), headers::long(&h.broker.topology.prefix));
    death.insert(
        "routing-keys".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![headers::long("purchase")])),
    );
    let props = purchase_properties(&msg);
    let mut table = props.headers().clone().unwrap();
    table.insert(
        "x-death".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
    );
    for _ in 0..2 {
        // Twice: at-least-once dead-lettering may deliver a copy; it must archive once.
        h.broker
            .publisher
            .publish_dead(&msg.to_bytes(), props.clone().with_headers(table.clone()))
            .await
            .unwrap();
    }

    let rows = list_all(&h).await;

    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].reason, DeadLetterReason::Broker);
    assert_eq!(rows[0].origin, DeadLetterOrigin::Broker);
    assert_eq!(
        rows[0].first_death_at.unwrap().to_rfc3339(),
        "2026-01-01T00:00:00+00:00"
    );
    assert_eq!(item_status(&h, "exec-xd", 1).await, ItemStatus::Dead);
    assert_eq!(item_status(&h, "exec-xd", 0).await, ItemStatus::Queued);
    h.cleanup().await;
}

#[tokio::test]
async fn the_long_running_archiver_moves_dead_letters_as_they_arrive_and_stops_on_shutdown() {
    let h = Harness::new().await;
    submit::submit(h.store(), &h.broker.publisher, &document("exec-arc", 3))
        .await
        .unwrap();
    h.drain().await;
    let shutdown = CancellationToken::new();
    let channel = h.broker.connection.create_channel().await.unwrap();
    let archiver = tokio::spawn(run_archiver_on(
        h.store().clone(),
        channel,
        h.broker.topology.clone(),
        shutdown.clone(),
    ));
    for i in 0..3 {
        h.dead_letter_item("exec-arc", i, DeadLetterReason::PermanentFailure, "no")
            .await;
    }
    let mut waited = 0;
    while h.count("dead_letters").await < 3 && waited < 100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    assert_eq!(h.count("dead_letters").await, 3);
    assert_eq!(h.dead_queue_len().await, 0);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), archiver)
        .await
        .expect("the archiver stops promptly")
        .unwrap()
        .unwrap();
    h.cleanup().await;
}

/// RabbitMQ 4.0 gave every quorum queue without an `x-delivery-limit` a limit of 20: a dead
/// letter returned to the dead-letter queue a 21st time (here: an archiver whose database keeps
/// failing, each attempt returning the message) was dropped, as that queue dead-letters nowhere.
/// On 3.x the same topology kept it. The queue's explicit limit keeps it on both.
#[tokio::test]
async fn a_dead_letter_outlives_more_failed_archive_attempts_than_rabbitmq_4s_default_limit() {
    let h = Harness::new().await;
    h.dead_letter_garbage(b"not a purchase", DeadLetterReason::Malformed)
        .await;
    h.sql("ALTER TABLE dead_letters RENAME TO dead_letters_away")
        .await;
    let channel = h.broker.connection.create_channel().await.unwrap();
    for attempt in 1..=25 {
        let failed = archive_pending(h.store(), &channel, &h.broker.topology, 10).await;
        assert!(
            failed.is_err(),
            "attempt {attempt} archived without a table"
        );
        // The return (a nack) is asynchronous: wait until the message is ready again.
        let mut queued = 0;
        for _ in 0..50 {
            queued = h.dead_queue_len().await;
            if queued == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            queued, 1,
            "the dead letter is still queued after {attempt} failed archive attempts"
        );
    }
    h.sql("ALTER TABLE dead_letters_away RENAME TO dead_letters")
        .await;
    let report = archive_pending(h.store(), &channel, &h.broker.topology, 10)
        .await
        .unwrap();
    assert_eq!(report.archived, 1);
    let rows = h
        .store()
        .dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].body, b"not a purchase");
    h.cleanup().await;
}
