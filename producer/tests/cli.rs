//! The built binary: exit codes, messages, and one end-to-end run against Postgres and
//! RabbitMQ through the environment a deployment would set.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use buyonce_shared::testing::database_url;
use buyonce_shared::{ExecutionDocument, Service};
use common::Harness;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_buyonce-producer");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/execution.json");

fn run(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run buyonce-producer")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn token_prints_the_full_token_without_a_database() {
    let out = run(
        &["token", "exec-1", "0"],
        &[(
            "BUYONCE_DATABASE_URL",
            "postgres://nowhere.invalid/x".into(),
        )],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "4a667998cddd36583ee6f92b4e1f9fe36aeef04b9676a2007da7c5eefc9e96c0\n"
    );
    let bad = run(&["token", "exec 1", "0"], &[]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn enqueue_of_a_bad_file_exits_2_and_names_each_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(EXAMPLE).unwrap()).unwrap();
    doc["recommendations"][0]["count"] = 0.into();
    doc["recommendations"][7]["payment"] = "all-upfront".into();
    std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();

    let out = run(&["enqueue", path.to_str().unwrap()], &[]);

    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("execution document is invalid (2 problems)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("recommendations[0].count: must be at least 1"),
        "{stderr}"
    );
    assert!(stderr.contains("recommendations[7].payment"), "{stderr}");

    doc["recommendations"][0]["count"] = 1.into();
    doc["recommendations"][7]["payment"] = "upfront".into();
    doc["recommendations"][3]["size"] = "xl".into();
    std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
    let out = run(&["enqueue", path.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("recommendations[3].size: unknown field `size`"),
        "{}",
        text(&out.stderr)
    );

    let missing = run(&["enqueue", "/nonexistent/doc.json"], &[]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("cannot read /nonexistent/doc.json"));
}

#[test]
fn serve_refuses_a_non_loopback_address_without_tokens() {
    let out = Command::new(BIN)
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env_remove("BUYONCE_API_TOKENS")
        .env_remove("BUYONCE_API_TOKENS_FILE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("refusing to serve the API on 0.0.0.0:0 without BUYONCE_API_TOKENS"),
        "{stderr}"
    );
}

#[test]
fn help_documents_every_command_and_the_exit_codes() {
    let out = run(&["--help"], &[]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for word in [
        "enqueue",
        "serve",
        "status",
        "redrive",
        "cancel",
        "pause",
        "resume",
        "dlq",
        "token",
        "Exit codes",
        "3  conflict",
    ] {
        assert!(help.contains(word), "{word} missing from:\n{help}");
    }
    for cmd in [
        "enqueue", "serve", "status", "redrive", "cancel", "pause", "resume", "dlq", "token",
    ] {
        let out = run(&[cmd, "--help"], &[]);
        assert!(out.status.success(), "{cmd} --help");
    }
    for cmd in ["list", "show", "replay", "purge"] {
        let out = run(&["dlq", cmd, "--help"], &[]);
        assert!(out.status.success(), "dlq {cmd} --help");
    }
    // A replay or purge must say what: exactly one selection.
    let none = run(&["dlq", "replay"], &[]);
    assert_eq!(none.status.code(), Some(2), "{}", text(&none.stderr));
    let two = run(&["dlq", "replay", "--all", "--reason", "malformed"], &[]);
    assert_eq!(two.status.code(), Some(2), "{}", text(&two.stderr));
    let bad = run(&["dlq", "list", "--reason", "sleepy"], &[]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("spend-cap"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn the_example_covers_every_service_buyonce_buys() {
    let doc = ExecutionDocument::from_json(&std::fs::read(Path::new(EXAMPLE)).unwrap()).unwrap();
    for service in Service::ALL.into_iter().filter(|s| s.purchasable()) {
        assert!(
            doc.recommendations.iter().any(|r| r.service == service),
            "{service} missing from examples/execution.json"
        );
    }
}

/// The environment a deployment sets, pointed at this test's schema and queue prefix.
fn deployment_env(h: &Harness) -> Vec<(&'static str, String)> {
    let url = database_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    let delays: Vec<String> = h
        .broker
        .topology
        .retry_delays
        .iter()
        .map(|d| buyonce_shared::duration::format_duration(*d))
        .collect();
    vec![
        (
            "BUYONCE_DATABASE_URL",
            format!("{url}{sep}options=-c%20search_path%3D{}", h.db.schema),
        ),
        ("BUYONCE_AMQP_URL", buyonce_shared::testing::amqp_url()),
        ("BUYONCE_QUEUE_PREFIX", h.broker.topology.prefix.clone()),
        ("BUYONCE_RETRY_DELAYS", delays.join(",")),
        ("BUYONCE_DATABASE_POOL_SIZE", "2".into()),
    ]
}

#[tokio::test]
async fn enqueue_resubmit_conflict_status_and_redrive_end_to_end() {
    let h = Harness::new().await;
    let env = deployment_env(&h);
    let env2 = env.clone();
    let run_async = move |args: Vec<String>| {
        let env = env2.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                run(&args, &env)
            })
            .await
            .unwrap()
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();

    let out = run_async(args(&["enqueue", EXAMPLE])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("recorded: 12 items, 12 messages published"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(h.drain().await.len(), 12);

    let out = run_async(args(&["enqueue", EXAMPLE, "--json"])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "identical");
    assert_eq!(report["published"], 0);

    let dir = tempfile::tempdir().unwrap();
    let changed = dir.path().join("changed.json");
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(EXAMPLE).unwrap()).unwrap();
    doc["recommendations"][0]["count"] = 3.into();
    std::fs::write(&changed, serde_json::to_vec(&doc).unwrap()).unwrap();
    let out = run_async(args(&["enqueue", changed.to_str().unwrap()])).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("differs at: recommendations[0].count"),
        "{}",
        text(&out.stderr)
    );

    let id = "exec-2026-11-28-0001";
    let out = run_async(args(&["status", id, "--json"])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["items"].as_array().unwrap().len(), 12);
    let token = buyonce_shared::IdempotencyToken::derive(id, 0);
    assert_eq!(view["items"][0]["token"], token.mask());
    assert!(!text(&out.stdout).contains(token.as_str()));
    let out = run_async(args(&["status", id])).await;
    assert!(out.status.success());
    let table = text(&out.stdout);
    assert!(
        table.contains("aws/redshift") && table.contains("azure/cosmos-db"),
        "{table}"
    );

    h.sql("UPDATE purchase_items SET status = 'dead', error = 'max attempts' WHERE rec_index = 6")
        .await;
    let out = run_async(args(&["redrive", id])).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("re-drove 1 items"), "{stdout}");
    assert!(
        stdout.contains("#6") && stdout.contains("redshift") && stdout.contains("dead"),
        "{stdout}"
    );
    let messages = h.drain().await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].rec_index.get(), 6);

    let out = run_async(args(&["status", "exec-unknown"])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no execution exec-unknown"));
    h.cleanup().await;
}

#[tokio::test]
async fn brakes_and_dead_letters_through_the_binary() {
    let h = Harness::new().await;
    let mut env = deployment_env(&h);
    env.push(("BUYONCE_DAILY_BUDGET_USD", "500".into()));
    env.push(("USER", "erin".into()));
    let run_async = |args: &[&str]| {
        let env = env.clone();
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        async move {
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                run(&args, &env)
            })
            .await
            .unwrap()
        }
    };

    let out = run_async(&["pause", "--reason", "finance freeze"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("fleet PAUSED since") && text(&out.stdout).contains("by erin@"),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stdout).contains("(reason: finance freeze)"));
    let out = run_async(&["status"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("fleet PAUSED"), "{stdout}");
    assert!(stdout.contains("of $500.00 daily budget"), "{stdout}");
    let out = run_async(&["status", "--json"]).await;
    let fleet: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(fleet["pause"]["paused"], true);
    assert_eq!(fleet["spend"]["budget_usd"], 500.0);
    let out = run_async(&["resume", "--json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let state: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(state["paused"], false);

    buyonce_producer::submit::submit(
        h.store(),
        &h.broker.publisher,
        &common::document("exec-cli", 3),
    )
    .await
    .unwrap();
    h.drain().await;
    h.sql("UPDATE purchase_items SET status = 'running', heartbeat_at = now() WHERE rec_index = 2")
        .await;
    let out = run_async(&["cancel", "exec-cli"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("2 queued items will never be bought"),
        "{stdout}"
    );
    assert!(stdout.contains("NOT cancelled: 1 items"), "{stdout}");
    let token = buyonce_shared::IdempotencyToken::derive("exec-cli", 2);
    assert!(stdout.contains(&token.mask()) && !stdout.contains(token.as_str()));
    let out = run_async(&["status", "exec-cli", "--json"]).await;
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["execution"]["status"], "cancelled");
    assert_eq!(view["fleet"]["pause"]["paused"], false);
    let out = run_async(&["redrive", "exec-cli"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--include-cancelled"));

    h.dead_letter_garbage(b"garbage", buyonce_shared::DeadLetterReason::Malformed)
        .await;
    let out = run_async(&["dlq", "list", "--json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listing["dead_letters"][0]["reason"], "malformed");
    let id = listing["dead_letters"][0]["id"]
        .as_i64()
        .unwrap()
        .to_string();
    let out = run_async(&["dlq", "list"]).await;
    let table = text(&out.stdout);
    assert!(
        table.contains("REASON") && table.contains("malformed (!)"),
        "{table}"
    );
    let out = run_async(&["dlq", "show", &id]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("raw body (7 bytes, escaped): garbage"));
    let out = run_async(&["dlq", "replay", &id]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("malformed messages cannot be replayed"));
    let out = run_async(&["dlq", "purge", "--all"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("refusing to purge without --yes: 1 archived dead letters"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(h.count("dead_letters").await, 1);
    let out = run_async(&["dlq", "purge", "--all", "--yes"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("purged 1 dead letters (1 malformed)"));
    assert_eq!(h.count("dead_letters").await, 0);
    let out = run_async(&["dlq", "show", &id]).await;
    assert_eq!(out.status.code(), Some(1));
    h.cleanup().await;
}

/// A pause reason that would forge `status` output is refused; one already stored (written
/// by an older version, or straight into the table) is printed escaped.
#[tokio::test]
async fn status_output_cannot_be_forged_by_stored_text() {
    let h = Harness::new().await;
    let env = deployment_env(&h);
    let forged = "x\u{1b}[1A\u{1b}[2K\rfleet running (not paused)";
    let out = run(&["pause", "--reason", forged], &env);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("control characters"),
        "{}",
        text(&out.stderr)
    );

    h.sql(&format!(
        "UPDATE fleet_control SET paused = true, reason = E'{}', changed_by = 'someone'",
        "x\\033[1A\\033[2K\\rfleet running (not paused)\\u202e"
    ))
    .await;
    let out = run(&["status"], &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("fleet PAUSED"), "{stdout}");
    assert!(
        !stdout
            .chars()
            .any(|c| (c.is_control() && c != '\n' && c != '\t') || c == '\u{202e}'),
        "{stdout:?}"
    );
    assert!(stdout.contains("\\u{001b}[1A"), "{stdout}");
    h.cleanup().await;
}
