//! The reaper against a real Postgres (and RabbitMQ for republishing), each test isolated in its
//! own schema and queue prefix.

use std::time::Duration;

use buyonce_shared::store::executions::Submitted;
use buyonce_shared::store::Store;
use buyonce_shared::testing::{TestBroker, TestDb};
use buyonce_shared::{ExecutionDocument, IdempotencyToken};
use buyonce_worker::reaper::{reap_reason, Reaper, ReaperConfig, SweepReport};

const REAP_AFTER: Duration = Duration::from_secs(600);

fn document(id: &str, n: usize) -> ExecutionDocument {
    let recs: Vec<serde_json::Value> = (0..n)
        .map(|_| {
            serde_json::json!({
                "provider": "aws", "service": "rds", "account": "123456789012",
                "region": "eu-west-1", "resource_type": "db.r6g.large", "engine": "postgresql",
                "count": 1, "term": "1y", "payment": "all-upfront"
            })
        })
        .collect();
    let doc = serde_json::json!({
        "execution_id": id, "approved_by": "ops@example.com", "source": "test",
        "recommendations": recs
    });
    ExecutionDocument::from_json(&serde_json::to_vec(&doc).unwrap()).unwrap()
}

async fn reaper(store: &Store) -> Reaper {
    let mut config =
        ReaperConfig::from_source(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:1")]).unwrap();
    config.reap_after = REAP_AFTER;
    config.batch = 3;
    Reaper::new(store.clone(), config).await
}

/// Records an execution with `n` items and returns their tokens (all queued, unpublished).
async fn items(store: &Store, id: &str, n: usize) -> Vec<IdempotencyToken> {
    match store.submit_execution(&document(id, n)).await.unwrap() {
        Submitted::Created(items) => items.into_iter().map(|i| i.token).collect(),
        other => panic!("{other:?}"),
    }
}

/// Puts an item in `status` with a heartbeat `age` ago (and marks it published).
async fn set(store: &Store, token: &IdempotencyToken, status: &str, age: Duration) {
    let client = store.pool().get().await.unwrap();
    client
        .execute(
            "UPDATE purchase_items SET status = $2, published_at = now(),
                    heartbeat_at = now() - make_interval(secs => $3), attempts = 1
              WHERE token = $1",
            &[&token.as_str(), &status, &age.as_secs_f64()],
        )
        .await
        .unwrap();
}

async fn status_and_error(store: &Store, token: &IdempotencyToken) -> (String, Option<String>) {
    let item = store.item_by_token(token).await.unwrap().unwrap();
    (item.status.as_str().to_owned(), item.error)
}

#[tokio::test]
async fn a_stale_running_item_is_failed_with_the_canonical_reason_and_younger_ones_are_left_alone()
{
    let db = TestDb::new(4).await.unwrap();
    let tokens = items(&db.store, "exec-reap", 2).await;
    set(&db.store, &tokens[0], "running", Duration::from_secs(900)).await;
    set(&db.store, &tokens[1], "running", Duration::from_secs(60)).await;

    let report = reaper(&db.store).await.sweep().await.unwrap().unwrap();
    assert_eq!(
        (
            report.found,
            report.reaped,
            report.race_lost,
            report.errored
        ),
        (1, 1, 0, 0)
    );
    assert_eq!(
        status_and_error(&db.store, &tokens[0]).await,
        ("failed".into(), Some(reap_reason(REAP_AFTER)))
    );
    assert_eq!(
        reap_reason(REAP_AFTER),
        "reaped after 10m in running state — worker did not complete; safe to retry"
    );
    assert_eq!(status_and_error(&db.store, &tokens[1]).await.0, "running");
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn only_running_items_are_ever_selected() {
    // Regression guard: widening the selection beyond `running` would fail finished work.
    let db = TestDb::new(4).await.unwrap();
    let statuses = [
        "queued",
        "succeeded",
        "failed",
        "dead",
        "cancelled",
        "running",
    ];
    let tokens = items(&db.store, "exec-statuses", statuses.len()).await;
    for (t, s) in tokens.iter().zip(statuses) {
        set(&db.store, t, s, Duration::from_secs(10_000)).await;
    }
    let stale = db.store.stale_running(REAP_AFTER, 100, None).await.unwrap();
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].token, tokens[5]);
    let report = reaper(&db.store).await.sweep().await.unwrap().unwrap();
    assert_eq!(report.reaped, 1);
    for (t, s) in tokens.iter().zip(statuses).take(5) {
        assert_eq!(
            status_and_error(&db.store, t).await.0,
            s,
            "a {s} item must not be touched"
        );
    }
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_row_that_moved_on_or_vanished_after_the_select_is_a_lost_race_not_an_error() {
    let db = TestDb::new(4).await.unwrap();
    let tokens = items(&db.store, "exec-race", 3).await;
    for t in &tokens {
        set(&db.store, t, "running", Duration::from_secs(900)).await;
    }
    let reaper = reaper(&db.store).await;
    let candidates = db.store.stale_running(REAP_AFTER, 10, None).await.unwrap();
    assert_eq!(candidates.len(), 3);
    // Between the select and the CAS: the real worker finishes one, another row is deleted,
    // a third worker heartbeats.
    let client = db.store.pool().get().await.unwrap();
    client
        .execute(
            "UPDATE purchase_items SET status = 'succeeded' WHERE token = $1",
            &[&tokens[0].as_str()],
        )
        .await
        .unwrap();
    client
        .execute(
            "DELETE FROM purchase_items WHERE token = $1",
            &[&tokens[1].as_str()],
        )
        .await
        .unwrap();
    client
        .execute(
            "UPDATE purchase_items SET heartbeat_at = now() WHERE token = $1",
            &[&tokens[2].as_str()],
        )
        .await
        .unwrap();
    let mut report = SweepReport::default();
    let reaped = reaper.reap_candidates(&candidates, &mut report).await;
    assert!(reaped.is_empty());
    assert_eq!(
        (
            report.found,
            report.reaped,
            report.race_lost,
            report.errored
        ),
        (3, 0, 3, 0)
    );
    assert_eq!(status_and_error(&db.store, &tokens[0]).await.0, "succeeded");
    assert_eq!(status_and_error(&db.store, &tokens[2]).await.0, "running");
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_hard_database_error_on_one_row_is_counted_and_the_others_are_reaped() {
    let db = TestDb::new(4).await.unwrap();
    let tokens = items(&db.store, "exec-broken", 3).await;
    for t in &tokens {
        set(&db.store, t, "running", Duration::from_secs(900)).await;
    }
    // A trigger that makes updating one particular row fail, as a corrupt row or a constraint
    // would.
    let client = db.store.pool().get().await.unwrap();
    client
        .batch_execute(&format!(
            "CREATE FUNCTION refuse() RETURNS trigger AS $$
             BEGIN RAISE EXCEPTION 'simulated failure on this row'; END $$ LANGUAGE plpgsql;
             CREATE TRIGGER refuse_one BEFORE UPDATE ON purchase_items
             FOR EACH ROW WHEN (OLD.token = '{}') EXECUTE FUNCTION refuse();",
            tokens[1].as_str()
        ))
        .await
        .unwrap();
    // Back to the pool: the sweep needs two (its lock and its work), and the suites also run
    // with a pool of two.
    drop(client);
    let report = reaper(&db.store).await.sweep().await.unwrap().unwrap();
    assert_eq!(
        (
            report.found,
            report.reaped,
            report.race_lost,
            report.errored
        ),
        (3, 2, 0, 1)
    );
    assert_eq!(status_and_error(&db.store, &tokens[0]).await.0, "failed");
    assert_eq!(status_and_error(&db.store, &tokens[1]).await.0, "running");
    assert_eq!(status_and_error(&db.store, &tokens[2]).await.0, "failed");
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_second_reaper_skips_while_the_first_holds_the_lock() {
    let db = TestDb::new(4).await.unwrap();
    let tokens = items(&db.store, "exec-lock", 1).await;
    set(&db.store, &tokens[0], "running", Duration::from_secs(900)).await;
    // Hold the reaper lock on another session, as a first reaper mid-sweep would.
    let holder = db.store.pool().get().await.unwrap();
    let got: bool = holder
        .query_one(
            "SELECT pg_try_advisory_lock(hashtext('buyonce.reaper.' || current_schema())::bigint)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(got);
    let reaper = reaper(&db.store).await;
    assert_eq!(
        reaper.sweep().await.unwrap(),
        None,
        "the second reaper must skip"
    );
    assert_eq!(status_and_error(&db.store, &tokens[0]).await.0, "running");
    holder
        .query_one(
            "SELECT pg_advisory_unlock(hashtext('buyonce.reaper.' || current_schema())::bigint)",
            &[],
        )
        .await
        .unwrap();
    drop(holder);
    let report = reaper.sweep().await.unwrap().unwrap();
    assert_eq!(report.reaped, 1);
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn the_store_refuses_a_zero_cutoff() {
    let db = TestDb::new(2).await.unwrap();
    assert!(db
        .store
        .stale_running(Duration::ZERO, 10, None)
        .await
        .is_err());
    assert!(db
        .store
        .reap_if_stale(&IdempotencyToken::derive("x", 0), Duration::ZERO, "r")
        .await
        .is_err());
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn unpublished_queued_items_are_republished_exactly_once_per_sweep() {
    let db = TestDb::new(4).await.unwrap();
    let broker = TestBroker::new().await.unwrap();
    let tokens = items(&db.store, "exec-outbox", 4).await;
    // Two items were published; two were committed but the producer died before publishing.
    db.store.mark_published(&tokens[..2]).await.unwrap();
    let client = db.store.pool().get().await.unwrap();
    client
        .execute(
            "UPDATE purchase_items SET created_at = now() - interval '5 minutes'",
            &[],
        )
        .await
        .unwrap();
    drop(client);

    let mut config = ReaperConfig::from_source(&[
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:1"),
        (
            "BUYONCE_AMQP_URL",
            buyonce_shared::testing::amqp_url().as_str(),
        ),
        ("BUYONCE_QUEUE_PREFIX", broker.topology.prefix.as_str()),
        ("BUYONCE_RETRY_DELAYS", "200ms,500ms,1s"),
        ("BUYONCE_UNPUBLISHED_GRACE", "30s"),
    ])
    .unwrap();
    config.reap_after = REAP_AFTER;
    let reaper = Reaper::new(db.store.clone(), config).await;
    let first = reaper.sweep().await.unwrap().unwrap();
    assert_eq!(first.republished, 2);
    assert_eq!(
        broker
            .queue_len(&broker.topology.purchases_queue())
            .await
            .unwrap(),
        2
    );
    let second = reaper.sweep().await.unwrap().unwrap();
    assert_eq!(
        second.republished, 0,
        "a published item is not published again"
    );
    assert_eq!(
        broker
            .queue_len(&broker.topology.purchases_queue())
            .await
            .unwrap(),
        2
    );
    broker.cleanup().await.unwrap();
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn once_mode_prints_the_summary_line_and_exits_zero() {
    let db = TestDb::new(2).await.unwrap();
    let tokens = items(&db.store, "exec-once", 1).await;
    set(&db.store, &tokens[0], "running", Duration::from_secs(900)).await;
    let url = format!(
        "{}?options=-c%20search_path%3D{}",
        buyonce_shared::testing::database_url(),
        db.schema
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_buyonce-reaper"))
        .arg("--once")
        .env("BUYONCE_DATABASE_URL", &url)
        .env("BUYONCE_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .env("PURCHASE_APPROVED_REAP_AFTER", "garbage")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(
        stdout.trim(),
        "found=1 reaped=1 race_lost=0 errored=0 republished=0 retagged=0"
    );
    assert!(
        stderr.contains("PURCHASE_APPROVED_REAP_AFTER=\"garbage\" is not a Go duration"),
        "{stderr}"
    );
    db.cleanup().await.unwrap();
}
