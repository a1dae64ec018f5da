//! The hot statements' plans must not depend on statistics (issue 18).
//!
//! A freshly submitted execution has none: autovacuum has not analyzed its rows yet (this
//! machine's Postgres runs with autovacuum off). The planner then guesses, and one guess made
//! every claim filter all live items of its execution (10,000 rows read for one claimed).
//! Each statement of [`HOT_STATEMENTS`] runs here under `EXPLAIN (ANALYZE, BUFFERS)` inside a
//! rolled-back transaction, as a custom and as a generic plan, on a 10,000-item execution among
//! 1,000 others: never analyzed, analyzed while all items were queued (stale once most have
//! succeeded), and freshly analyzed. Every scan of `purchase_items`, `commitments` or
//! `executions` must be an index lookup that returns and discards at most one row per item the
//! statement is about.

use std::time::Duration;

use buyonce_shared::envelope::PurchaseMessage;
use buyonce_shared::store::items::Claim;
use buyonce_shared::store::HOT_STATEMENTS;
use buyonce_shared::testing::TestDb;
use buyonce_shared::ExecutionDocument;
use serde_json::Value;

const ITEMS: usize = 10_000;
const OTHER_EXECUTIONS: usize = 1_000;
/// Items `mark_published` marks in one call in this test (the relay's batch is of this order).
const BATCH: usize = 100;
/// Buffers a statement may touch per item: a few index descents and heap pages. The plan
/// this test was written against touched 976 for one claim.
const MAX_BUFFERS: u64 = 120;
const STALE: Duration = Duration::from_secs(30);

fn document(n: usize) -> ExecutionDocument {
    let recs: Vec<Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "provider": "aws", "service": "savings-plans", "account": "123456789012",
                "plan_type": "compute", "commitment_usd_per_hour": 0.5 + (i % 7) as f64,
                "term": "1y", "payment": "all-upfront"
            })
        })
        .collect();
    let doc = serde_json::json!({
        "execution_id": "exec-plans", "approved_by": "finops@example.com", "source": "test",
        "recommendations": recs
    });
    ExecutionDocument::from_json(&serde_json::to_vec(&doc).unwrap()).unwrap()
}

/// A SQL literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

struct World {
    db: TestDb,
    messages: Vec<PurchaseMessage>,
    /// The item claimed for the statements that need a running item of ours, and its claim.
    running: usize,
    claim_id: uuid::Uuid,
}

impl World {
    /// The arguments each statement runs with, as SQL literals, and how many items it is
    /// about. `queued`: an item still claimable.
    fn args(&self, name: &str, queued: usize) -> (Vec<String>, u64) {
        let q = &self.messages[queued];
        let r = &self.messages[self.running];
        let rec = |m: &PurchaseMessage| lit(&serde_json::to_string(&m.recommendation).unwrap());
        let claim = lit(&self.claim_id.to_string());
        let token = lit(r.token.as_str());
        let args = match name {
            "claim" => vec![
                lit(q.execution_id.as_str()),
                q.rec_index.as_i32().to_string(),
                lit(q.token.as_str()),
                lit(&uuid::Uuid::new_v4().to_string()),
                rec(q),
                "30".into(),
            ],
            "claim_miss" => vec![
                lit(r.execution_id.as_str()),
                r.rec_index.as_i32().to_string(),
                rec(r),
                "30".into(),
            ],
            "heartbeat" | "confirm_before_buy" => vec![token, claim],
            "set_provider_state" => vec![token, claim, lit(r#"{"order_id": "o-1"}"#)],
            "record_success" => vec![
                token,
                lit("sp-1234"),
                "12.5".into(),
                lit("purchased"),
                "false".into(),
                "true".into(),
            ],
            "release_for_retry" => vec![
                token,
                claim,
                lit("provider said 503"),
                "false".into(),
                "true".into(),
            ],
            "finish_unsuccessful" => {
                vec![token, claim, lit("failed"), lit("refused"), "false".into()]
            }
            "item_status" => vec![token],
            "live_item" => vec![lit(r.execution_id.as_str())],
            "mark_published" => {
                let tokens: Vec<String> = self.messages[queued..queued + BATCH]
                    .iter()
                    .map(|m| lit(m.token.as_str()))
                    .collect();
                return (vec![format!("ARRAY[{}]", tokens.join(", "))], BATCH as u64);
            }
            "attributed_among" => vec![
                format!("ARRAY[{}, {}]", lit("sp-0001"), lit("sp-0002")),
                token,
            ],
            other => panic!("no arguments for hot statement {other:?}: add them here"),
        };
        (args, 1)
    }
}

/// EXPLAIN ANALYZE of `sql` with `args`, in a transaction that is rolled back, as a custom
/// or a generic plan (a prepared statement's plan after five executions may be either).
async fn explain(db: &TestDb, sql: &str, args: &[String], generic: bool) -> Value {
    let client = db.store.pool().get().await.unwrap();
    let mode = if generic {
        "force_generic_plan"
    } else {
        "force_custom_plan"
    };
    client
        .batch_execute(&format!(
            "BEGIN; SET LOCAL plan_cache_mode = {mode}; PREPARE hot AS {sql}"
        ))
        .await
        .unwrap();
    let result = client
        .simple_query(&format!(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE hot({})",
            args.join(", ")
        ))
        .await;
    client
        .batch_execute("ROLLBACK; DEALLOCATE hot")
        .await
        .unwrap();
    let text = result
        .unwrap()
        .into_iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .expect("EXPLAIN returned no row");
    let plan: Value = serde_json::from_str(&text).unwrap();
    plan[0]["Plan"].clone()
}

const CHECKED: [&str; 3] = ["purchase_items", "commitments", "executions"];

/// What is wrong with one plan node and its children, as readable lines.
fn violations(node: &Value, bound: u64, out: &mut Vec<String>) {
    let kind = node["Node Type"].as_str().unwrap_or("?");
    let relation = node["Relation Name"].as_str();
    let index = node["Index Name"].as_str();
    let checked = relation.is_some_and(|r| CHECKED.contains(&r))
        || index.is_some_and(|i| CHECKED.iter().any(|t| i.starts_with(t)));
    // A bitmap index scan returns index entries, dead row versions included (the rolled-back
    // statements before it left some); the bitmap heap scan above it counts what it found and
    // what it discarded.
    if checked && kind.contains("Scan") && kind != "Bitmap Index Scan" {
        let on = relation.or(index).unwrap_or("?");
        let num = |k: &str| node[k].as_f64().unwrap_or(0.0);
        let rows = num("Actual Rows") * num("Actual Loops").max(1.0);
        let removed = num("Rows Removed by Filter") + num("Rows Removed by Index Recheck");
        if kind == "Seq Scan" {
            out.push(format!("Seq Scan on {on} ({rows} rows, {removed} removed)"));
        } else if rows > bound as f64 || removed > bound as f64 {
            out.push(format!(
                "{kind} on {on} using {}: {rows} rows returned, {removed} removed by filter (at most {bound} each)",
                index.unwrap_or("-")
            ));
        }
    }
    for child in node["Plans"].as_array().into_iter().flatten() {
        violations(child, bound, out);
    }
}

fn buffers(plan: &Value) -> u64 {
    [
        "Shared Hit Blocks",
        "Shared Read Blocks",
        "Shared Dirtied Blocks",
    ]
    .iter()
    .map(|k| plan[k].as_u64().unwrap_or(0))
    .sum()
}

/// Runs every hot statement in both plan modes and collects what is wrong, by round.
async fn check_round(world: &World, round: &str, queued: usize, report: &mut Vec<String>) {
    for (name, sql) in HOT_STATEMENTS {
        let (args, bound) = world.args(name, queued);
        for generic in [false, true] {
            // Once unmeasured: the first read after a bulk change sets hint bits and marks dead
            // index entries (work every later statement is spared), then the one measured.
            explain(&world.db, sql, &args, generic).await;
            let plan = explain(&world.db, sql, &args, generic).await;
            let mut bad = Vec::new();
            violations(&plan, bound, &mut bad);
            let used = buffers(&plan);
            if used > MAX_BUFFERS * bound {
                bad.push(format!(
                    "touched {used} buffers (at most {})",
                    MAX_BUFFERS * bound
                ));
            }
            let mode = if generic { "generic" } else { "custom" };
            for b in bad {
                report.push(format!("{round}, {name} ({mode} plan): {b}"));
            }
        }
    }
}

#[tokio::test]
async fn hot_statements_are_index_lookups_of_one_item_with_or_without_statistics() {
    let db = TestDb::new(2).await.unwrap();
    let doc = document(ITEMS);
    let items = match db.store.submit_execution(&doc).await.unwrap() {
        buyonce_shared::store::executions::Submitted::Created(items) => items,
        other => panic!("expected Created, got {other:?}"),
    };
    let messages: Vec<PurchaseMessage> = items
        .iter()
        .map(|i| i.to_message(&doc.lineage_key()).unwrap())
        .collect();
    // Other executions, each with a commitment in the ledger: a plan that scans `executions`
    // or `commitments` shows.
    run(
        &db,
        &format!(
            "INSERT INTO executions (execution_id, idempotency_key, source, approved_by,
                                     document, item_count, status)
             SELECT 'other-' || g, 'key-' || g, 'test', 'finops@example.com', '{{}}', 1,
                    'completed'
               FROM generate_series(1, {OTHER_EXECUTIONS}) g;
             INSERT INTO commitments (token, execution_id, rec_index, provider, service, account,
                                      region, commitment_id, cost_usd, how)
             SELECT encode(sha256(('other-' || g)::bytea), 'hex'), 'other-' || g, 0, 'aws',
                    'savings-plans', '123456789012', NULL, 'sp-other-' || g, 1, 'purchased'
               FROM generate_series(1, {OTHER_EXECUTIONS}) g;"
        ),
    )
    .await;
    let running = ITEMS / 2;
    let claim_id = match db.store.claim(&messages[running], STALE).await.unwrap() {
        Claim::Claimed { claim_id, .. } => claim_id,
        other => panic!("expected Claimed, got {other:?}"),
    };
    let world = World {
        db,
        messages,
        running,
        claim_id,
    };
    let mut report = Vec::new();

    check_round(&world, "no statistics", ITEMS - 1 - BATCH, &mut report).await;
    run(
        &world.db,
        "ANALYZE purchase_items; ANALYZE executions; ANALYZE commitments",
    )
    .await;
    check_round(
        &world,
        "statistics of a new execution",
        ITEMS - 1 - BATCH,
        &mut report,
    )
    .await;

    // Most of the execution done, ledger rows for all of it; the live items are at the end
    // and the running one in the middle (the worst case for a scan in key order).
    run(
        &world.db,
        &format!(
            "UPDATE purchase_items SET status = 'succeeded', commitment_id = 'sp-' || rec_index,
                    published_at = now()
              WHERE rec_index < {} AND rec_index <> {running};
             INSERT INTO commitments (token, execution_id, rec_index, provider, service, account,
                                      region, commitment_id, cost_usd, how)
             SELECT token, execution_id, rec_index, provider, service, account, region,
                    commitment_id, 1, 'purchased'
               FROM purchase_items WHERE status = 'succeeded'",
            ITEMS - 1 - BATCH
        ),
    )
    .await;
    check_round(&world, "stale statistics", ITEMS - 1 - BATCH, &mut report).await;
    run(
        &world.db,
        "ANALYZE purchase_items; ANALYZE executions; ANALYZE commitments",
    )
    .await;
    check_round(&world, "fresh statistics", ITEMS - 1 - BATCH, &mut report).await;

    assert!(
        report.is_empty(),
        "hot statements whose plan is not bounded by their items:\n  {}",
        report.join("\n  ")
    );
    world.db.cleanup().await.unwrap();
}

async fn run(db: &TestDb, sql: &str) {
    db.store
        .pool()
        .get()
        .await
        .unwrap()
        .batch_execute(sql)
        .await
        .unwrap();
}
