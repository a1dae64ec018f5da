//! The store against a real Postgres, each test in its own schema.

use std::time::Duration;

use buyonce_shared::envelope::PurchaseMessage;
use buyonce_shared::store::executions::Submitted;
use buyonce_shared::store::items::{Claim, Recorded, Recording};
use buyonce_shared::store::{Cas, ItemStatus};
use buyonce_shared::testing::TestDb;
use buyonce_shared::{db, ExecutionDocument, IdempotencyToken};

const STALE: Duration = Duration::from_secs(30);

fn document(id: &str, n: usize) -> ExecutionDocument {
    let recs: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "provider": "aws", "service": "ec2", "account": "123456789012",
                "region": "us-east-1", "resource_type": "m5.large", "count": i + 1,
                "term": "1y", "payment": "all-upfront"
            })
        })
        .collect();
    let doc = serde_json::json!({
        "execution_id": id, "approved_by": "finops@example.com", "source": "test",
        "recommendations": recs
    });
    ExecutionDocument::from_json(&serde_json::to_vec(&doc).unwrap()).unwrap()
}

fn messages(
    doc: &ExecutionDocument,
    items: &[buyonce_shared::store::ItemRow],
) -> Vec<PurchaseMessage> {
    items
        .iter()
        .map(|i| i.to_message(&doc.lineage_key()).unwrap())
        .collect()
}

async fn submitted(db: &TestDb, doc: &ExecutionDocument) -> Vec<PurchaseMessage> {
    match db.store.submit_execution(doc).await.unwrap() {
        Submitted::Created(items) => messages(doc, &items),
        other => panic!("expected Created, got {other:?}"),
    }
}

#[tokio::test]
async fn migrations_are_idempotent_and_safe_to_run_concurrently() {
    let db = TestDb::new(6).await.unwrap();
    // TestDb::new already migrated: a second run applies nothing.
    assert_eq!(
        db::migrate(db.store.pool()).await.unwrap(),
        Vec::<i32>::new()
    );
    let runs = (0..4).map(|_| db::migrate(db.store.pool()));
    for result in futures::future::join_all(runs).await {
        assert_eq!(result.unwrap(), Vec::<i32>::new());
    }
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn submitting_records_items_with_derived_tokens_and_is_idempotent() {
    let db = TestDb::new(2).await.unwrap();
    let doc = document("exec-1", 3);
    let msgs = submitted(&db, &doc).await;
    assert_eq!(msgs.len(), 3);
    assert_eq!(
        msgs[0].token.as_str(),
        "4a667998cddd36583ee6f92b4e1f9fe36aeef04b9676a2007da7c5eefc9e96c0"
    );
    assert_eq!(msgs[1].token, IdempotencyToken::derive("exec-1", 1));

    match db.store.submit_execution(&doc).await.unwrap() {
        Submitted::Identical(items) => assert_eq!(items.len(), 3),
        other => panic!("expected Identical, got {other:?}"),
    }
    let mut different = doc.clone();
    different.recommendations[0].count = Some(100);
    assert!(matches!(
        db.store.submit_execution(&different).await.unwrap(),
        Submitted::Conflict { .. }
    ));
    assert_eq!(db.store.items_of(&doc.execution_id).await.unwrap().len(), 3);
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn an_exclusive_record_of_a_commitment_another_item_holds_writes_nothing() {
    let db = TestDb::new(2).await.unwrap();
    let doc = document("exec-taken", 2);
    let msgs = submitted(&db, &doc).await;
    for m in &msgs {
        assert!(matches!(
            db.store.claim(m, STALE).await.unwrap(),
            Claim::Claimed { .. }
        ));
    }
    let recorded = |how, exclusive| Recorded {
        commitment_id: "rn-shared".into(),
        cost_usd: Some(10.0),
        how,
        tag_pending: false,
        exclusive,
    };
    // Item 1 recovered the commitment first (snapshot attribution) ...
    assert_eq!(
        db.store
            .record_success(&msgs[1].token, &recorded("recovered", true))
            .await
            .unwrap(),
        Recording::Recorded(doc.execution_id.clone())
    );
    // ... so item 0's delayed record of the same commitment writes nothing and says who has it.
    assert_eq!(
        db.store
            .record_success(&msgs[0].token, &recorded("purchased", true))
            .await
            .unwrap(),
        Recording::TakenBy(msgs[1].token.mask())
    );
    let item = db
        .store
        .item_by_token(&msgs[0].token)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.status, ItemStatus::Running);
    assert_eq!(item.commitment_id, None);
    assert_eq!(
        db.store
            .commitments(Some(&doc.execution_id))
            .await
            .unwrap()
            .len(),
        1
    );
    // Not exclusive (a commitment found by the item's own handle): recorded regardless.
    assert_eq!(
        db.store
            .record_success(&msgs[0].token, &recorded("guard", false))
            .await
            .unwrap(),
        Recording::Recorded(doc.execution_id.clone())
    );
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn claim_then_record_then_claim_again_is_already_succeeded() {
    let db = TestDb::new(2).await.unwrap();
    let doc = document("exec-claim", 1);
    let msg = &submitted(&db, &doc).await[0];

    let Claim::Claimed { attempts, .. } = db.store.claim(msg, STALE).await.unwrap() else {
        panic!("first claim must succeed");
    };
    assert_eq!(attempts, 1);
    // A second delivery while the first owner's heartbeat is fresh: someone else owns it.
    assert_eq!(
        db.store.claim(msg, STALE).await.unwrap(),
        Claim::OwnedElsewhere
    );

    let recorded = Recorded {
        commitment_id: "ri-123".into(),
        cost_usd: Some(1234.5),
        how: "purchased",
        tag_pending: false,
        exclusive: true,
    };
    assert_eq!(
        db.store
            .record_success(&msg.token, &recorded)
            .await
            .unwrap(),
        Recording::Recorded(doc.execution_id.clone())
    );
    // Recording twice is a no-op reported as already succeeded.
    assert_eq!(
        db.store
            .record_success(&msg.token, &recorded)
            .await
            .unwrap(),
        Recording::AlreadySucceeded
    );
    assert_eq!(
        db.store.claim(msg, STALE).await.unwrap(),
        Claim::AlreadySucceeded {
            commitment_id: Some("ri-123".into())
        }
    );
    assert_eq!(
        db.store
            .commitments(Some(&doc.execution_id))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        db.store
            .finish_execution_if_done(&doc.execution_id)
            .await
            .unwrap(),
        Some(buyonce_shared::store::ExecutionStatus::Completed)
    );
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn cas_tells_not_found_from_race_lost() {
    let db = TestDb::new(2).await.unwrap();
    let doc = document("exec-cas", 1);
    let msg = &submitted(&db, &doc).await[0];
    let unknown = IdempotencyToken::derive("nobody", 0);
    let claim_id = uuid::Uuid::new_v4();

    assert_eq!(
        db.store
            .release_for_retry(&unknown, claim_id, "x", false, false)
            .await
            .unwrap(),
        Cas::NotFound
    );
    // The item is queued, not running under this claim: a lost race, not an absence.
    assert_eq!(
        db.store
            .finish_unsuccessful(&msg.token, claim_id, ItemStatus::Failed, "x", false)
            .await
            .unwrap(),
        Cas::Conflict {
            actual: "queued".into()
        }
    );
    let Claim::Claimed { claim_id: ours, .. } = db.store.claim(msg, STALE).await.unwrap() else {
        panic!("claim");
    };
    // Someone else's claim ID cannot move our item.
    assert_eq!(
        db.store
            .release_for_retry(&msg.token, claim_id, "x", false, false)
            .await
            .unwrap(),
        Cas::Conflict {
            actual: "running".into()
        }
    );
    assert_eq!(
        db.store
            .release_for_retry(&msg.token, ours, "throttled", false, false)
            .await
            .unwrap(),
        Cas::Applied(())
    );
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn two_concurrent_claims_exactly_one_wins() {
    let db = TestDb::new(8).await.unwrap();
    let doc = document("exec-race", 20);
    let msgs = submitted(&db, &doc).await;
    for msg in &msgs {
        let (a, b) = tokio::join!(db.store.claim(msg, STALE), db.store.claim(msg, STALE));
        let wins = [a.unwrap(), b.unwrap()]
            .iter()
            .filter(|c| matches!(c, Claim::Claimed { .. }))
            .count();
        assert_eq!(wins, 1, "exactly one claim wins for rec {}", msg.rec_index);
    }
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn claim_refuses_tampered_and_unknown_messages() {
    let db = TestDb::new(2).await.unwrap();
    let doc = document("exec-auth", 1);
    let msg = submitted(&db, &doc).await.remove(0);

    let mut tampered = msg.clone();
    tampered.recommendation.count = Some(100);
    assert_eq!(
        db.store.claim(&tampered, STALE).await.unwrap(),
        Claim::RecommendationMismatch
    );

    let mut unknown = msg.clone();
    unknown.execution_id = buyonce_shared::ExecutionId::parse("exec-nope").unwrap();
    assert_eq!(
        db.store.claim(&unknown, STALE).await.unwrap(),
        Claim::UnknownItem
    );

    let mut other_token = msg.clone();
    other_token.token = IdempotencyToken::derive("forged", 0);
    assert_eq!(
        db.store.claim(&other_token, STALE).await.unwrap(),
        Claim::TokenMismatch
    );
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_stale_running_item_can_be_taken_over() {
    let db = TestDb::new(2).await.unwrap();
    let doc = document("exec-stale", 1);
    let msg = submitted(&db, &doc).await.remove(0);
    assert!(matches!(
        db.store.claim(&msg, STALE).await.unwrap(),
        Claim::Claimed { .. }
    ));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // The owner stopped heartbeating for longer than the stale threshold: take over.
    let Claim::Claimed { attempts, .. } =
        db.store.claim(&msg, Duration::from_secs(1)).await.unwrap()
    else {
        panic!("a stale claim must be taken over");
    };
    assert_eq!(attempts, 2);
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_purchase_that_may_have_gone_through_is_remembered_until_a_retry_claims_it() {
    let db = TestDb::new(2).await.unwrap();
    let doc = document("exec-ambiguous", 3);
    let msgs = submitted(&db, &doc).await;
    let ambiguous_at = |claim: Claim| match claim {
        Claim::Claimed { ambiguous_at, .. } => ambiguous_at,
        other => panic!("expected a claim, got {other:?}"),
    };

    // A first claim: nothing can be unaccounted for.
    let Claim::Claimed {
        claim_id,
        ambiguous_at: none,
        ..
    } = db.store.claim(&msgs[0], STALE).await.unwrap()
    else {
        panic!("claim");
    };
    assert_eq!(none, None);
    // A refused call (throttled): still nothing unaccounted for.
    db.store
        .release_for_retry(&msgs[0].token, claim_id, "throttled", false, false)
        .await
        .unwrap();
    let claim = db.store.claim(&msgs[0], STALE).await.unwrap();
    let Claim::Claimed { claim_id, .. } = claim.clone() else {
        panic!("claim");
    };
    assert_eq!(ambiguous_at(claim), None);
    // A purchase call that timed out: the next claim says since when.
    db.store
        .release_for_retry(&msgs[0].token, claim_id, "timed out", false, true)
        .await
        .unwrap();
    let since = ambiguous_at(db.store.claim(&msgs[0], STALE).await.unwrap());
    assert!(since.is_some(), "remembered across the retry");

    // An owner that stopped heartbeating may have died inside the purchase call: taking over
    // marks the item.
    assert_eq!(
        ambiguous_at(db.store.claim(&msgs[1], STALE).await.unwrap()),
        None
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(ambiguous_at(
        db.store
            .claim(&msgs[1], Duration::from_secs(1))
            .await
            .unwrap()
    )
    .is_some());

    // The reaper's fail of a stale item marks it too, so a re-drive waits before buying.
    let Claim::Claimed { .. } = db.store.claim(&msgs[2], STALE).await.unwrap() else {
        panic!("claim");
    };
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let reaped = db
        .store
        .reap_batch(&[msgs[2].token.clone()], Duration::from_secs(1), "reaped")
        .await
        .unwrap();
    assert_eq!(reaped.len(), 1);
    let item = db
        .store
        .item_by_token(&msgs[2].token)
        .await
        .unwrap()
        .unwrap();
    assert!(item.ambiguous_at.is_some());
    db.cleanup().await.unwrap();
}

/// Postgres' jsonb rewrites numbers (`1e16` comes back as `10000000000000000`): an identical
/// resubmission must still be recognised as identical, not answered as a conflict.
#[tokio::test]
async fn identical_resubmissions_with_numbers_jsonb_rewrites_are_identical() {
    let db = TestDb::new(2).await.unwrap();
    for (i, cap) in [1e16, 1e17, 1.5e300, 0.1 + 0.2, 5e-324]
        .into_iter()
        .enumerate()
    {
        let id = format!("exec-num-{i}");
        let doc = serde_json::json!({
            "execution_id": id, "approved_by": "finops@example.com", "source": "test",
            "recommendations": [{
                "provider": "aws", "service": "ec2", "account": "123456789012",
                "region": "us-east-1", "resource_type": "m5.large", "count": 1,
                "term": "1y", "payment": "all-upfront", "max_upfront_usd": cap
            }]
        });
        let doc = ExecutionDocument::from_json(&serde_json::to_vec(&doc).unwrap()).unwrap();
        submitted(&db, &doc).await;
        match db.store.submit_execution(&doc).await.unwrap() {
            Submitted::Identical(items) => assert_eq!(items.len(), 1),
            other => panic!("max_upfront_usd {cap:e}: expected Identical, got {other:?}"),
        }
        // A real difference is still a conflict.
        let mut other = doc.clone();
        other.recommendations[0].max_upfront_usd = Some(cap * 2.0 + 1.0);
        assert!(
            matches!(
                db.store.submit_execution(&other).await.unwrap(),
                Submitted::Conflict { .. }
            ),
            "{cap:e}"
        );
    }
    db.cleanup().await.unwrap();
}

/// `ItemRow` holds the parsed recommendation but prints it as the column stores it (sorted
/// keys, the same numbers), so the JSON callers see is what it was when the row held `jsonb`.
#[tokio::test]
async fn an_item_row_prints_its_recommendation_as_stored() {
    let db = TestDb::new(2).await.unwrap();
    let doc = serde_json::json!({
        "execution_id": "exec-print", "approved_by": "finops@example.com", "source": "test",
        "recommendations": [
            {"provider": "aws", "service": "ec2", "account": "123456789012",
             "region": "us-east-1", "resource_type": "m5.large", "count": 2, "term": "1y",
             "payment": "all-upfront", "platform": "Linux/UNIX", "offering_class": "standard",
             "max_upfront_usd": 1500.0},
            {"provider": "aws", "service": "savings-plans", "account": "123456789012",
             "plan_type": "compute", "term": "3y", "payment": "no-upfront",
             "commitment_usd_per_hour": 0.1, "max_upfront_usd": 0.000015}
        ]
    });
    let doc = ExecutionDocument::from_json(&serde_json::to_vec(&doc).unwrap()).unwrap();
    submitted(&db, &doc).await;
    let client = db.store.pool().get().await.unwrap();
    for item in db.store.items_of(&doc.execution_id).await.unwrap() {
        let stored: serde_json::Value = client
            .query_one(
                "SELECT recommendation FROM purchase_items WHERE token = $1",
                &[&item.token.as_str()],
            )
            .await
            .unwrap()
            .get(0);
        let printed = serde_json::to_string(&item).unwrap();
        let expected = format!(
            "\"recommendation\":{},",
            serde_json::to_string(&stored).unwrap()
        );
        assert!(printed.contains(&expected), "{printed}\nlacks {expected}");
    }
    db.cleanup().await.unwrap();
}

/// A stored value that does not parse is an error naming the column, not a panic.
#[tokio::test]
async fn a_row_that_does_not_parse_is_invalid_naming_the_column() {
    let db = TestDb::new(2).await.unwrap();
    let doc = document("exec-bad-row", 1);
    submitted(&db, &doc).await;
    let client = db.store.pool().get().await.unwrap();
    client
        .execute(
            "UPDATE purchase_items SET recommendation = '{\"service\": \"ec2\"}'",
            &[],
        )
        .await
        .unwrap();
    drop(client);
    match db.store.items_of(&doc.execution_id).await {
        Err(buyonce_shared::store::StoreError::Invalid(e)) => {
            assert!(e.starts_with("stored recommendation is invalid"), "{e}")
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    db.cleanup().await.unwrap();
}

/// How many distinct transactions last wrote this test's item rows (`xmin`): unlike the
/// server's transaction counter, which every test running in parallel advances, it sees only
/// this schema's writes.
async fn item_writers(db: &TestDb) -> i64 {
    let client = db.store.pool().get().await.unwrap();
    let row = client
        .query_one("SELECT count(DISTINCT xmin::text) FROM purchase_items", &[])
        .await
        .unwrap();
    row.get(0)
}

fn recorded(commitment_id: String, cost_usd: f64) -> Recorded {
    Recorded {
        commitment_id,
        cost_usd: Some(cost_usd),
        how: "purchased",
        tag_pending: false,
        exclusive: false,
    }
}

#[tokio::test]
async fn concurrent_claims_and_records_share_transactions_with_per_item_outcomes() {
    let db = TestDb::new(4).await.unwrap();
    let doc = document("exec-group", 64);
    let msgs = submitted(&db, &doc).await;
    let before = db.store.group_stats();

    // 64 claims at once, plus a second copy of four of them: each copy is its own statement,
    // and exactly one copy of an item wins, whether or not they landed in one group.
    let copies = msgs.iter().chain(&msgs[..4]);
    let claims = futures::future::join_all(copies.map(|m| db.store.claim(m, STALE))).await;
    let claims: Vec<Claim> = claims.into_iter().map(Result::unwrap).collect();
    for (i, msg) in msgs.iter().enumerate() {
        let mine: Vec<&Claim> = claims
            .iter()
            .enumerate()
            .filter(|(j, _)| j % 64 == i)
            .map(|(_, c)| c)
            .collect();
        let won = mine
            .iter()
            .filter(|c| matches!(c, Claim::Claimed { attempts: 1, .. }))
            .count();
        assert_eq!(won, 1, "rec {}: {mine:?}", msg.rec_index);
        if i < 4 {
            assert!(mine.contains(&&Claim::OwnedElsewhere), "rec {i}: {mine:?}");
        }
    }
    let before_records = db.store.group_stats();
    let records = futures::future::join_all(msgs.iter().enumerate().map(|(i, m)| {
        let r = recorded(format!("ri-{i}"), i as f64);
        let store = &db.store;
        async move { store.record_success(&m.token, &r).await }
    }))
    .await;
    for r in records {
        assert_eq!(r.unwrap(), Recording::Recorded(doc.execution_id.clone()));
    }
    let after = db.store.group_stats();
    let statements = after.statements - before.statements;
    let transactions = after.transactions - before.transactions;
    let record_transactions = after.transactions - before_records.transactions;
    let writers = item_writers(&db).await;
    assert_eq!(statements, 64 + 4 + 64);
    assert_eq!(after.fallbacks, before.fallbacks, "{after:?}");
    // Grouped: far fewer transactions than statements, and Postgres agrees.
    assert!(
        transactions * 4 <= statements,
        "{statements} statements in {transactions} transactions"
    );
    // Every item row was last written by its record: Postgres saw no more transactions
    // writing them than the store counted for the records, and at most 16 for 64 records.
    assert!(
        writers <= record_transactions as i64 && writers * 4 <= 64,
        "64 records written by {writers} transactions; the store counted {record_transactions}"
    );
    let ledger = db.store.commitments(Some(&doc.execution_id)).await.unwrap();
    assert_eq!(ledger.len(), 64);
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_group_with_a_failing_statement_rolls_back_and_answers_each_on_its_own() {
    let db = TestDb::new(4).await.unwrap();
    let doc = document("exec-group-fail", 20);
    let msgs = submitted(&db, &doc).await;
    for m in &msgs {
        assert!(matches!(
            db.store.claim(m, STALE).await.unwrap(),
            Claim::Claimed { .. }
        ));
    }
    let before = db.store.group_stats();
    // Item 7's cost does not fit NUMERIC(20, 6): its statement fails, and with it the
    // transaction of whatever group it is in.
    let records = futures::future::join_all(msgs.iter().enumerate().map(|(i, m)| {
        let cost = if i == 7 { 1e15 } else { i as f64 };
        let r = recorded(format!("ri-{i}"), cost);
        let store = &db.store;
        async move { store.record_success(&m.token, &r).await }
    }))
    .await;
    for (i, r) in records.into_iter().enumerate() {
        if i == 7 {
            let e = r.expect_err("a cost that does not fit must fail");
            assert!(e.to_string().contains("numeric field overflow"), "{e}");
        } else {
            assert_eq!(
                r.unwrap(),
                Recording::Recorded(doc.execution_id.clone()),
                "rec {i}"
            );
        }
    }
    let after = db.store.group_stats();
    assert!(
        after.fallbacks > before.fallbacks,
        "no group failed: {after:?}"
    );
    let ledger = db.store.commitments(Some(&doc.execution_id)).await.unwrap();
    assert_eq!(ledger.len(), 19);
    let item7 = db
        .store
        .item_by_token(&msgs[7].token)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        item7.status,
        ItemStatus::Running,
        "the failed record wrote nothing"
    );
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn two_workers_claiming_the_same_items_in_opposite_orders_neither_deadlock_nor_share() {
    let db = TestDb::new(4).await.unwrap();
    let other = buyonce_shared::store::Store::new(db::connect(&db.config).await.unwrap());
    let doc = document("exec-group-two", 48);
    let msgs = submitted(&db, &doc).await;
    let forward = futures::future::join_all(msgs.iter().map(|m| db.store.claim(m, STALE)));
    let backward = futures::future::join_all(msgs.iter().rev().map(|m| other.claim(m, STALE)));
    let (a, b) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(forward, backward)
    })
    .await
    .expect("claims answered (no group waits on another forever)");
    let b: Vec<_> = b.into_iter().rev().collect();
    for (i, (a, b)) in a.into_iter().zip(b).enumerate() {
        let wins = [a.unwrap(), b.unwrap()]
            .iter()
            .filter(|c| matches!(c, Claim::Claimed { .. }))
            .count();
        assert_eq!(wins, 1, "exactly one worker claims rec {i}");
    }
    // Both lock rows in token order, so no group hit a deadlock (which Postgres would break by
    // failing one of them after `deadlock_timeout`).
    assert_eq!(
        db.store.group_stats().fallbacks,
        0,
        "{:?}",
        db.store.group_stats()
    );
    assert_eq!(
        other.group_stats().fallbacks,
        0,
        "{:?}",
        other.group_stats()
    );
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_row_locked_elsewhere_holds_up_only_its_own_item_not_its_group() {
    let db = TestDb::new(4).await.unwrap();
    let doc = document("exec-group-locked", 10);
    let msgs = submitted(&db, &doc).await;
    // Another session (an operator's open psql transaction, say) holds item 3's row.
    let locker_pool = db::connect(&db.config).await.unwrap();
    let mut locker = locker_pool.get().await.unwrap();
    let tx = locker.transaction().await.unwrap();
    tx.execute(
        "SELECT 1 FROM purchase_items WHERE token = $1 FOR UPDATE",
        &[&msgs[3].token.as_str()],
    )
    .await
    .unwrap();
    let before = db.store.group_stats();
    let started = std::time::Instant::now();
    let claims = futures::future::join_all(msgs.iter().map(|m| {
        let store = &db.store;
        async move { (store.claim(m, STALE).await.unwrap(), started.elapsed()) }
    }));
    let release = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        tx.commit().await.unwrap();
        started.elapsed()
    };
    let (claims, released) = tokio::join!(claims, release);
    for (i, (claim, took)) in claims.iter().enumerate() {
        assert!(matches!(claim, Claim::Claimed { .. }), "rec {i}: {claim:?}");
        if i == 3 {
            assert!(*took >= released, "rec 3 claimed while its row was locked");
        } else {
            assert!(
                *took < released,
                "rec {i} waited for rec 3's lock: claimed after {took:?}, lock released after {released:?}"
            );
        }
    }
    assert!(db.store.group_stats().fallbacks > before.fallbacks);
    db.cleanup().await.unwrap();
}
