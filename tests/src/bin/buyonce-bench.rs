//! `buyonce-bench`: measures the fleet the way its users judge it, against ceilings measured in
//! the same run on the same broker and database.
//!
//! 1. raw ceilings: lapin publish-with-confirms and consume+ack on a quorum queue with the size
//!    of a purchase message; Postgres single-row commits from concurrent sessions (a HOT
//!    update of a two-column table: a floor for one commit, not an item's statements);
//! 2. end-to-end throughput: producer → queue, then worker processes → zero-latency fakecloud
//!    → Postgres, for a Savings Plans mix and a Savings Plans + EC2 mix; the clock starts once
//!    the backlog is enqueued and every worker consumes. Per item: CPU ms by process (workers,
//!    Postgres, RabbitMQ, this process = fakecloud + polling, the rest of the machine), the
//!    bench's own share, Postgres write transactions and WAL bytes;
//! 3. redelivery cost: every succeeded message published again (provider calls must be 0);
//! 4. latency-bound scaling: 250 ms purchase latency, one worker, concurrency
//!    1/10/50/200/500, timed from the first purchase call;
//! 5. worker memory: RSS idle and peak at 200 in flight;
//! 6. the reaper on a table of 1,000,000 items (0 and 10,000 stale).
//!
//! `cargo run --release -p buyonce-tests --bin buyonce-bench -- [--quick] [--json]`

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use buyonce_fakecloud::{FaultRule, Faults};
use buyonce_shared::store::Store;
use buyonce_shared::{ExecutionDocument, PurchaseMessage};
use buyonce_tests::harness::{execution, recommendation, signal, World};
use buyonce_tests::nodes::KillOnDrop;
use buyonce_worker::reaper::{Reaper, ReaperConfig};
use clap::Parser;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use serde_json::{json, Value};

/// Benchmark buyonce against ceilings measured in the same run.
#[derive(Parser, Debug)]
#[command(name = "buyonce-bench", version)]
struct Cli {
    /// Small sizes: the whole run in under a minute (numbers are noisier).
    #[arg(long)]
    quick: bool,
    /// Print the results as JSON (the table goes to stderr).
    #[arg(long)]
    json: bool,
    /// Items in the end-to-end runs [default 20000, quick 2000].
    #[arg(long)]
    items: Option<usize>,
    /// Worker processes in the end-to-end runs.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Concurrency of each worker in the end-to-end runs.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Rows in the reaper table [default 1000000, quick 100000].
    #[arg(long)]
    reaper_rows: Option<i64>,
    /// The workers' `BUYONCE_DATABASE_GROUP_COMMIT` (`false`: each hot-path write commits on
    /// its own, for a before/after on one build).
    #[arg(long, default_value = "true", value_parser = ["true", "false"])]
    group_commit: String,
    /// Only these sections (comma-separated: raw,e2e,redelivery,latency,memory,reaper).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// Every number measured, for the table and the JSON.
#[derive(Default, serde::Serialize)]
struct Report {
    machine: Value,
    raw: Value,
    e2e: Vec<Value>,
    redelivery: Value,
    latency: Vec<Value>,
    memory: Value,
    reaper: Value,
    goals: Vec<Value>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    buyonce_shared::tls::install_crypto_provider();
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "error");
    }
    buyonce_shared::telemetry::init(buyonce_shared::config::LogFormat::Pretty);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(run(&cli))?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

fn wants(cli: &Cli, section: &str) -> bool {
    cli.only.is_empty() || cli.only.iter().any(|s| s == section)
}

/// Table lines go to stdout, or to stderr with `--json` so stdout stays machine-readable.
macro_rules! say {
    ($cli:expr, $($arg:tt)*) => {
        if $cli.json { eprintln!($($arg)*) } else { println!($($arg)*) }
    };
}

async fn run(cli: &Cli) -> anyhow::Result<Report> {
    let mut report = Report {
        machine: json!({
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "cpu": std::fs::read_to_string("/proc/cpuinfo").ok()
                .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())),
            "memory_gib": std::fs::read_to_string("/proc/meminfo").ok()
                .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|k| k.parse::<f64>().ok()))
                .map(|kb| (kb / 1024.0 / 1024.0).round()),
            "quick": cli.quick,
            "group_commit": cli.group_commit,
        }),
        ..Report::default()
    };
    let n_items = cli.items.unwrap_or(if cli.quick { 2000 } else { 20_000 });
    say!(
        cli,
        "buyonce-bench — {} (RabbitMQ and Postgres on this machine; fakecloud in-process)",
        if cli.quick { "quick" } else { "full" }
    );

    let mut consume_ceiling = None;
    if wants(cli, "raw") {
        let raw = raw_ceilings(cli, n_items).await?;
        consume_ceiling = raw["consume_ack_per_s"].as_f64();
        report.raw = raw;
    }
    if wants(cli, "e2e") || wants(cli, "redelivery") {
        for mix in ["savings-plans", "savings-plans+ec2"] {
            let (e2e, redelivery) = end_to_end(cli, mix, n_items, consume_ceiling).await?;
            if mix == "savings-plans" {
                if let Some(r) = redelivery {
                    report.redelivery = r;
                }
            }
            report.e2e.push(e2e);
        }
    }
    if wants(cli, "latency") || wants(cli, "memory") {
        let (latency, memory) = latency_scaling(cli).await?;
        report.latency = latency;
        report.memory = memory;
    }
    if wants(cli, "reaper") {
        report.reaper = reaper(cli).await?;
    }
    report.goals = goals(&report);
    say!(cli, "\ngoals");
    for g in &report.goals {
        say!(
            cli,
            "  {:<58} {:>14}  goal {:<14} {}",
            g["what"].as_str().unwrap_or(""),
            g["measured"].as_str().unwrap_or(""),
            g["goal"].as_str().unwrap_or(""),
            if g["met"] == true { "met" } else { "MISSED" }
        );
    }
    Ok(report)
}

/// A purchase envelope of realistic size, for the raw ceiling.
fn sample_message() -> Vec<u8> {
    let doc = execution("exec-bench-raw", vec![recommendation("ec2")]);
    let item = &doc.recommendations[0];
    PurchaseMessage::new(
        doc.execution_id.clone(),
        doc.lineage_key(),
        buyonce_shared::RecIndex::new(0).expect("index"),
        item.clone(),
    )
    .to_bytes()
}

async fn raw_ceilings(cli: &Cli, n_items: usize) -> anyhow::Result<Value> {
    let n = n_items.max(2000);
    let body = sample_message();
    let world = World::new().await;
    let conn = &world.broker.connection;
    let queue = format!("{}.raw", world.broker.topology.prefix);
    let channel = conn.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await?;
    channel.confirm_select(Default::default()).await?;

    // Publish with confirms, pipelined in windows (what a good publisher does).
    let started = Instant::now();
    let window = 1000;
    let mut sent = 0;
    while sent < n {
        let mut confirms = Vec::with_capacity(window);
        for _ in 0..window.min(n - sent) {
            confirms.push(
                channel
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        &body,
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await?,
            );
            sent += 1;
        }
        for c in futures::future::join_all(confirms).await {
            if !c?.is_ack() {
                bail!("raw publish nacked");
            }
        }
    }
    let publish = n as f64 / started.elapsed().as_secs_f64();

    // Consume and ack each message, prefetch like a worker.
    let consume_channel = conn.create_channel().await?;
    consume_channel
        .basic_qos(128, BasicQosOptions::default())
        .await?;
    let mut consumer = consume_channel
        .basic_consume(
            queue.as_str().into(),
            "raw".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let started = Instant::now();
    let mut got = 0;
    while got < n {
        let delivery = consumer.next().await.context("consumer ended")??;
        delivery.ack(BasicAckOptions::default()).await?;
        got += 1;
    }
    let consume = n as f64 / started.elapsed().as_secs_f64();
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;

    // Postgres: single-row UPDATE commits from 32 concurrent sessions.
    let store = world.store().clone();
    let client = store.pool().get().await?;
    client
        .batch_execute(
            "CREATE TABLE bench_commits (id INT PRIMARY KEY, n BIGINT NOT NULL DEFAULT 0);
                        INSERT INTO bench_commits (id) SELECT g FROM generate_series(0, 999) g;",
        )
        .await?;
    drop(client);
    let commits = Arc::new(AtomicU64::new(0));
    let duration = if cli.quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(5)
    };
    let until = Instant::now() + duration;
    let sessions = 8; // the test pool size; the server allows 100 connections in all
    let tasks: Vec<_> = (0..sessions)
        .map(|s| {
            let store = store.clone();
            let commits = commits.clone();
            tokio::spawn(async move {
                let client = store.pool().get().await.expect("connection");
                let stmt = client
                    .prepare("UPDATE bench_commits SET n = n + 1 WHERE id = $1")
                    .await
                    .expect("prepare");
                let mut i: i32 = s * 100;
                while Instant::now() < until {
                    client.execute(&stmt, &[&(i % 1000)]).await.expect("update");
                    commits.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    let pg = commits.load(Ordering::Relaxed) as f64 / duration.as_secs_f64();
    say!(
        cli,
        "\nraw ceilings (quorum queue, {} B messages, {n} messages)",
        body.len()
    );
    say!(cli, "  publish with confirms   {publish:>10.0} msg/s");
    say!(cli, "  consume + ack           {consume:>10.0} msg/s");
    say!(
        cli,
        "  Postgres commits        {pg:>10.0} commits/s ({sessions} sessions, a HOT single-row UPDATE of a two-column table: a floor for one commit, not an item's statements)"
    );
    world.cleanup().await;
    Ok(json!({
        "message_bytes": body.len(),
        "messages": n,
        "publish_confirm_per_s": publish.round(),
        "consume_ack_per_s": consume.round(),
        "postgres_commits_per_s": pg.round(),
        "postgres_sessions": sessions,
    }))
}

/// The account of the `i`-th Savings Plan: 200 accounts, like an organisation. The guard lists
/// the account's plans before each purchase, so 20,000 plans in one account (which no real
/// account holds) would make the run measure fakecloud listing plans.
fn sp_account(i: usize) -> String {
    format!("2{:011}", i % 200)
}

/// Recommendations for a mix, spread so EC2 purchases are not all serialised on one offering.
fn mix_documents(mix: &str, n: usize) -> Vec<ExecutionDocument> {
    let ec2_types = ["t3.medium", "m5.large", "m5.xlarge", "c5.large", "r5.large"];
    let regions = ["us-east-1", "us-west-2", "eu-west-1"];
    let recs: Vec<Value> = (0..n)
        .map(|i| {
            if mix == "savings-plans+ec2" && i % 2 == 1 {
                // Spread like an organisation: 50 accounts × 3 regions × 5 types, so the
                // fleet-wide serialisation per offering is not one long queue.
                let mut r = recommendation("ec2");
                r["account"] = format!("1000000000{:02}", (i / 30) % 50).into();
                r["resource_type"] = ec2_types[(i / 2) % ec2_types.len()].into();
                r["region"] = regions[(i / 10) % regions.len()].into();
                r["count"] = 1.into();
                r
            } else {
                let mut r = recommendation("savings-plans");
                r["commitment_usd_per_hour"] = json!(((i % 1000) as f64 + 1.0) / 100.0);
                r["account"] = sp_account(i).into();
                r
            }
        })
        .collect();
    recs.chunks(10_000)
        .enumerate()
        .map(|(k, chunk)| {
            execution(
                &format!("exec-bench-{}-{k}", mix.replace('+', "-")),
                chunk.to_vec(),
            )
        })
        .collect()
}

async fn count_status(store: &Store, status: &str) -> anyhow::Result<i64> {
    let client = store.pool().get().await?;
    Ok(client
        .query_one(
            "SELECT count(*) FROM purchase_items WHERE status = $1",
            &[&status],
        )
        .await?
        .get(0))
}

/// Items still queued or running, answered by the partial index on live items.
async fn count_live(store: &Store) -> anyhow::Result<i64> {
    let client = store.pool().get().await?;
    Ok(client
        .query_one(
            "SELECT count(*) FROM purchase_items WHERE status IN ('queued', 'running')",
            &[],
        )
        .await?
        .get(0))
}

async fn end_to_end(
    cli: &Cli,
    mix: &str,
    n: usize,
    consume_ceiling: Option<f64>,
) -> anyhow::Result<(Value, Option<Value>)> {
    let world = World::new().await;
    let logs = log_dir(&format!("e2e-{}", mix.replace('+', "-")))?;
    let concurrency = cli.concurrency.to_string();
    // Enqueue everything first, then start the workers: the purchase rate is the fleet's
    // alone, not the producer's and the fleet's sharing two cores.
    let docs = mix_documents(mix, n);
    let publisher = world.publisher().clone();
    let started = Instant::now();
    for doc in &docs {
        buyonce_producer::submit::submit(world.store(), &publisher, doc)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let enqueued = started.elapsed();
    let workers: Vec<KillOnDrop> = (0..cli.workers)
        .map(|i| {
            KillOnDrop::new(world.spawn_worker_process(
                &[
                    ("BUYONCE_CONCURRENCY", concurrency.as_str()),
                    ("BUYONCE_PER_ACCOUNT_CONCURRENCY", concurrency.as_str()),
                    ("BUYONCE_DATABASE_POOL_SIZE", "12"),
                    ("BUYONCE_DATABASE_GROUP_COMMIT", cli.group_commit.as_str()),
                    // Production default (the test harness uses 500 ms to keep tests fast).
                    ("BUYONCE_HEARTBEAT_INTERVAL", "10s"),
                ],
                &logs.path().join(format!("worker-{i}.log")),
            ))
        })
        .collect();
    // The clock starts when every worker consumes (process start and connecting excluded).
    let queue = world.broker.topology.purchases_queue();
    let ready_by = Instant::now() + Duration::from_secs(60);
    while consumers(&world, &queue).await? < cli.workers as u32 {
        if Instant::now() > ready_by {
            let kept = logs.keep();
            bail!(
                "{mix}: the workers did not start consuming; logs in {}",
                kept.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let pids: Vec<u32> = workers.iter().map(|w| w.id()).collect();
    let before = Usage::now(world.store(), &pids).await?;
    let started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(if cli.quick { 120 } else { 900 });
    // Watch fakecloud's purchase counters (in process) until every item has been bought, then
    // Postgres until every item is recorded: polling the database all along would load the
    // very thing being measured.
    let purchases = || -> u64 {
        [
            "savingsplans:CreateSavingsPlan",
            "ec2:PurchaseReservedInstancesOffering",
        ]
        .iter()
        .map(|op| world.fc.call_count(op))
        .sum()
    };
    while purchases() < n as u64 && Instant::now() <= deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while count_live(world.store()).await? > 0 {
        if Instant::now() > deadline {
            let done = count_status(world.store(), "succeeded").await?;
            let kept = logs.keep();
            bail!(
                "{mix}: only {done}/{n} items succeeded before the deadline; worker logs in {}",
                kept.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let used = Usage::now(world.store(), &pids).await?.since(&before, n);
    let failed =
        count_status(world.store(), "failed").await? + count_status(world.store(), "dead").await?;
    if failed > 0 {
        let kept = logs.keep();
        bail!(
            "{failed} items failed in the {mix} run; worker logs in {}",
            kept.display()
        );
    }
    let rate = n as f64 / elapsed.as_secs_f64();
    let ledger = world.fc.ledger().len();
    if ledger != n {
        bail!("{mix}: {ledger} commitments for {n} items");
    }
    let calls: BTreeMap<String, u64> = world.fc.calls();
    let provider_calls: u64 = calls.values().sum();
    say!(
        cli,
        "\nend to end: {mix}, {n} items, {} worker processes × concurrency {}",
        cli.workers,
        cli.concurrency
    );
    say!(
        cli,
        "  enqueue (record + publish)  {:>10.0} items/s",
        n as f64 / enqueued.as_secs_f64()
    );
    say!(
        cli,
        "  bought and recorded          {rate:>10.0} items/s  ({:.1}s)",
        elapsed.as_secs_f64()
    );
    if let Some(c) = consume_ceiling {
        say!(
            cli,
            "  ratio to consume+ack ceiling {:>10.1} %",
            100.0 * rate / c
        );
    }
    say!(
        cli,
        "  provider calls per item      {:>10.2}",
        provider_calls as f64 / n as f64
    );
    used.say(cli);
    let e2e = json!({
        "mix": mix,
        "items": n,
        "workers": cli.workers,
        "concurrency": cli.concurrency,
        "enqueue_items_per_s": (n as f64 / enqueued.as_secs_f64()).round(),
        "items_per_s": rate.round(),
        "seconds": elapsed.as_secs_f64(),
        "ratio_to_consume_ack_ceiling": consume_ceiling.map(|c| rate / c),
        "provider_calls_per_item": provider_calls as f64 / n as f64,
        "provider_calls": calls,
        "per_item": used.json(),
    });

    // Redelivery: every message again; the workers must answer from Postgres alone.
    let mut redelivery = None;
    if mix == "savings-plans" && wants(cli, "redelivery") {
        let calls_before: u64 = world.fc.calls().values().sum();
        let mut msgs = Vec::with_capacity(n);
        for doc in &docs {
            for item in world.store().items_of(&doc.execution_id).await? {
                msgs.push(item.to_message(&doc.lineage_key())?);
            }
        }
        let started = Instant::now();
        for chunk in msgs.chunks(1000) {
            for r in publisher.publish_purchases(chunk).await {
                r?;
            }
        }
        let queue = world.broker.topology.purchases_queue();
        // Drained = the queue is empty and stays empty for a moment (deliveries acked).
        loop {
            if world.broker.queue_len(&queue).await? == 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if world.broker.queue_len(&queue).await? == 0 {
                    break;
                }
            }
            if started.elapsed() > Duration::from_secs(600) {
                bail!("redelivery did not drain");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = started.elapsed();
        let new_calls = world.fc.calls().values().sum::<u64>() - calls_before;
        say!(
            cli,
            "\nredelivery: all {n} succeeded messages published again"
        );
        say!(
            cli,
            "  acked                        {:>10.0} items/s",
            n as f64 / elapsed.as_secs_f64()
        );
        say!(cli, "  provider calls               {new_calls:>10}");
        redelivery = Some(json!({
            "items": n,
            "items_per_s": (n as f64 / elapsed.as_secs_f64()).round(),
            "provider_calls": new_calls,
        }));
    }
    for w in &workers {
        signal(w, libc::SIGTERM);
    }
    for w in workers {
        let _ = w.terminate();
    }
    world.cleanup().await;
    Ok((e2e, redelivery))
}

/// Consumers on `queue` now.
async fn consumers(world: &World, queue: &str) -> anyhow::Result<u32> {
    let channel = world.broker.connection.create_channel().await?;
    let q = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let _ = channel.close(200, "".into()).await;
    Ok(q.consumer_count())
}

/// Linux reports process CPU time in clock ticks of `USER_HZ`, 100 on every architecture
/// Linux supports (`sysconf(_SC_CLK_TCK)`; the workspace forbids the `unsafe` to ask).
const TICKS_PER_S: f64 = 100.0;

/// CPU time so far by process group (clock ticks), and Postgres' write-transaction and WAL
/// counters: two snapshots give where one run's time went, per item.
struct Usage {
    worker: u64,
    postgres: u64,
    rabbitmq: u64,
    /// This process: fakecloud (in process), the producer, the bench's own polling.
    bench: u64,
    /// Every CPU of the machine, busy time.
    machine: u64,
    /// Transaction IDs handed out: one per transaction that wrote (a commit that flushes WAL).
    xid: i64,
    wal_bytes: f64,
}

/// Per item, between two [`Usage`] snapshots.
struct PerItem {
    cpu_ms: BTreeMap<&'static str, f64>,
    bench_share: f64,
    write_transactions: f64,
    wal_bytes: f64,
}

/// (own CPU ticks, ticks of waited-for children) of a process, from `/proc/<pid>/stat`.
fn proc_ticks(pid: &str) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses: state is field 3, utime 14, stime 15,
    // cutime 16, cstime 17.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some((field(14)? + field(15)?, field(16)? + field(17)?))
}

impl Usage {
    async fn now(store: &Store, workers: &[u32]) -> anyhow::Result<Self> {
        let mut usage = Usage {
            worker: 0,
            postgres: 0,
            rabbitmq: 0,
            bench: 0,
            machine: 0,
            xid: 0,
            wal_bytes: 0.0,
        };
        let me = std::process::id();
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let Some((own, children)) = proc_ticks(pid) else {
                continue;
            };
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let n: u32 = pid.parse().unwrap_or(0);
            // Children's time counts for Postgres: backends that exited are in the
            // postmaster's. A worker's children (none) or the bench's (the workers, once
            // reaped) would count twice.
            match comm.trim() {
                _ if workers.contains(&n) => usage.worker += own,
                _ if n == me => usage.bench += own,
                "postgres" => usage.postgres += own + children,
                "beam.smp" | "erl_child_setup" | "epmd" | "inet_gethost" => usage.rabbitmq += own,
                _ => {}
            }
        }
        let stat = std::fs::read_to_string("/proc/stat")?;
        let cpu: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal: busy = all but idle and iowait.
        usage.machine = cpu
            .iter()
            .take(8)
            .enumerate()
            .filter(|(i, _)| *i != 3 && *i != 4)
            .map(|(_, v)| v)
            .sum();
        let client = store.pool().get().await?;
        let row = client
            .query_one(
                "SELECT pg_current_xact_id()::text::bigint,
                        (pg_current_wal_lsn() - '0/0'::pg_lsn)::float8",
                &[],
            )
            .await?;
        usage.xid = row.get(0);
        usage.wal_bytes = row.get(1);
        Ok(usage)
    }

    fn since(&self, before: &Usage, items: usize) -> PerItem {
        let n = items.max(1) as f64;
        let ms = |after: u64, before: u64| {
            after.saturating_sub(before) as f64 * 1000.0 / TICKS_PER_S / n
        };
        let mut cpu_ms = BTreeMap::new();
        cpu_ms.insert("worker", ms(self.worker, before.worker));
        cpu_ms.insert("postgres", ms(self.postgres, before.postgres));
        cpu_ms.insert("rabbitmq", ms(self.rabbitmq, before.rabbitmq));
        cpu_ms.insert("bench", ms(self.bench, before.bench));
        let machine = ms(self.machine, before.machine);
        let known: f64 = cpu_ms.values().sum();
        cpu_ms.insert("other", (machine - known).max(0.0));
        PerItem {
            bench_share: if machine > 0.0 {
                cpu_ms["bench"] / machine
            } else {
                0.0
            },
            cpu_ms,
            // The second snapshot's own xid is not the run's.
            write_transactions: (self.xid - before.xid - 1).max(0) as f64 / n,
            wal_bytes: (self.wal_bytes - before.wal_bytes) / n,
        }
    }
}

impl PerItem {
    fn say(&self, cli: &Cli) {
        let cpu: Vec<String> = self
            .cpu_ms
            .iter()
            .map(|(k, v)| format!("{k} {v:.3}"))
            .collect();
        say!(cli, "  CPU ms per item              {}", cpu.join(" · "));
        say!(
            cli,
            "  bench's own share of CPU     {:>10.1} %  (fakecloud in process, polling)",
            self.bench_share * 100.0
        );
        say!(
            cli,
            "  Postgres per item            {:>10.2} write transactions · {:.0} B WAL",
            self.write_transactions,
            self.wal_bytes
        );
    }

    fn json(&self) -> Value {
        json!({
            "cpu_ms": self.cpu_ms,
            "bench_cpu_share": self.bench_share,
            "write_transactions": self.write_transactions,
            "wal_bytes": self.wal_bytes,
        })
    }
}

/// A directory for worker logs that survives the run (named in errors), emptied first.
fn log_dir(what: &str) -> anyhow::Result<tempfile::TempDir> {
    let base = std::env::temp_dir().join("buyonce-bench");
    std::fs::create_dir_all(&base)?;
    Ok(tempfile::Builder::new()
        .prefix(&format!("{what}-"))
        .tempdir_in(base)?)
}

/// (VmRSS, VmHWM) of a process in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn latency_scaling(cli: &Cli) -> anyhow::Result<(Vec<Value>, Value)> {
    let latency = Duration::from_millis(250);
    let world = World::new().await;
    world.fc.set_faults(Faults::rules([FaultRule::latency(
        "savingsplans:CreateSavingsPlan",
        latency,
    )]));
    let logs = log_dir("latency")?;
    say!(cli, "\nlatency-bound scaling: one worker, {latency:?} purchase latency (Savings Plans), a backlog per step");
    say!(
        cli,
        "  {:>11}  {:>8}  {:>9}  {:>10}  {:>10}",
        "concurrency",
        "items",
        "items/s",
        "ideal/s",
        "efficiency"
    );
    let mut rows = Vec::new();
    let steps: &[(usize, usize)] = if cli.quick {
        &[(1, 8), (10, 60), (50, 300), (200, 1200), (500, 3000)]
    } else {
        &[(1, 20), (10, 200), (50, 1000), (200, 4000), (500, 10_000)]
    };
    let publisher = world.publisher().clone();
    let mut idle_rss = 0;
    let mut peak_200 = 0;
    for (k, &(concurrency, items)) in steps.iter().enumerate() {
        let c = concurrency.to_string();
        let worker = KillOnDrop::new(world.spawn_worker_process(
            &[
                ("BUYONCE_CONCURRENCY", c.as_str()),
                ("BUYONCE_PER_ACCOUNT_CONCURRENCY", c.as_str()),
                ("BUYONCE_DATABASE_POOL_SIZE", "16"),
                ("BUYONCE_DATABASE_GROUP_COMMIT", cli.group_commit.as_str()),
                ("BUYONCE_HEARTBEAT_INTERVAL", "10s"),
            ],
            &logs.path().join(format!("worker-{concurrency}.log")),
        ));
        // Started and connected, nothing to do yet.
        tokio::time::sleep(Duration::from_secs(2)).await;
        if k == 0 {
            idle_rss = rss_kib(worker.id()).0;
        }
        let recs: Vec<Value> = (0..items)
            .map(|i| {
                let mut r = recommendation("savings-plans");
                r["commitment_usd_per_hour"] = json!(((k * 10_000 + i) as f64 + 1.0) / 100.0);
                r["account"] = sp_account(i).into();
                r
            })
            .collect();
        let doc = execution(&format!("exec-latency-{concurrency}"), recs);
        let bought_before = world.fc.call_count("savingsplans:CreateSavingsPlan");
        let submitted = Instant::now();
        buyonce_producer::submit::submit(world.store(), &publisher, &doc)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        // The clock starts at the first purchase call fakecloud sees (not at the submission,
        // which records and publishes a backlog the worker may not have seen yet).
        while world.fc.call_count("savingsplans:CreateSavingsPlan") == bought_before
            && submitted.elapsed() < Duration::from_secs(60)
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let started = Instant::now();
        // Purchases counted in process first, then Postgres for the last few records (see
        // `end_to_end`).
        while world.fc.call_count("savingsplans:CreateSavingsPlan") - bought_before < items as u64
            && started.elapsed() < Duration::from_secs(300)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        loop {
            if count_status_of(world.store(), doc.execution_id.as_str()).await? as usize >= items {
                break;
            }
            if started.elapsed() > Duration::from_secs(300) {
                bail!("latency step {concurrency} did not finish");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        if concurrency == 200 {
            peak_200 = rss_kib(worker.id()).1;
        }
        let _ = worker.terminate();
        let rate = items as f64 / elapsed;
        let ideal = concurrency as f64 / latency.as_secs_f64();
        say!(
            cli,
            "  {concurrency:>11}  {items:>8}  {rate:>9.1}  {ideal:>10.1}  {:>9.1}%",
            100.0 * rate / ideal
        );
        rows.push(json!({
            "concurrency": concurrency,
            "items": items,
            "items_per_s": rate,
            "ideal_per_s": ideal,
            "efficiency": rate / ideal,
        }));
    }
    say!(cli, "\nworker memory (RSS, release build)");
    say!(
        cli,
        "  idle                 {:>8.1} MiB",
        idle_rss as f64 / 1024.0
    );
    say!(
        cli,
        "  peak, 200 in flight  {:>8.1} MiB",
        peak_200 as f64 / 1024.0
    );
    world.cleanup().await;
    Ok((
        rows,
        json!({"idle_mib": idle_rss as f64 / 1024.0, "peak_200_in_flight_mib": peak_200 as f64 / 1024.0}),
    ))
}

async fn count_status_of(store: &Store, execution_id: &str) -> anyhow::Result<i64> {
    let client = store.pool().get().await?;
    Ok(client
        .query_one(
            "SELECT count(*) FROM purchase_items WHERE execution_id = $1 AND status = 'succeeded'",
            &[&execution_id],
        )
        .await?
        .get(0))
}

async fn reaper(cli: &Cli) -> anyhow::Result<Value> {
    let rows = cli
        .reaper_rows
        .unwrap_or(if cli.quick { 100_000 } else { 1_000_000 });
    let stale = (rows / 100).max(1);
    let world = World::new().await;
    let client = world.store().pool().get().await?;
    let started = Instant::now();
    // Executions of at most 10,000 items, as submissions are, each item a valid EC2
    // recommendation: the reaper reads stale rows back and refuses what no submission stores.
    let ec2 = execution("exec-reaper-bench", vec![recommendation("ec2")]);
    let rec = serde_json::to_value(&ec2.recommendations[0])?;
    client
        .batch_execute(&format!(
            "INSERT INTO executions (execution_id, idempotency_key, status, source, approved_by, document, item_count)
             SELECT 'exec-reaper-bench-' || e, 'exec-reaper-bench-' || e, 'completed', 'bench', 'bench', '{{}}', 10000
               FROM generate_series(0, {rows} / 10000) e"
        ))
        .await?;
    client
        .execute(
            "INSERT INTO purchase_items (execution_id, rec_index, token, provider, service, account, region,
                                         recommendation, status, attempts, published_at, heartbeat_at)
             SELECT 'exec-reaper-bench-' || (g / 10000), g % 10000, encode(sha256(g::text::bytea), 'hex'),
                    'aws', 'ec2', $1::jsonb ->> 'account', $1::jsonb ->> 'region', $1::jsonb, 'succeeded',
                    1, now(), now() - interval '1 day'
               FROM generate_series(0, $2::int - 1) g",
            &[&rec, &(rows as i32)],
        )
        .await?;
    client.batch_execute("ANALYZE purchase_items").await?;
    let loaded = started.elapsed();
    let mut config =
        ReaperConfig::from_source(&[("AWS_ENDPOINT_URL", world.fc.endpoint().as_str())])?;
    config.aws = world.aws_settings();
    config.common.amqp = world.broker.config.clone();
    config.common.queue_prefix = world.broker.topology.prefix.clone();
    config.common.retry_delays = world.broker.topology.retry_delays.clone();
    config.reap_after = Duration::from_secs(600);
    let reaper = Reaper::new(world.store().clone(), config).await;
    reaper.sweep().await?; // warm: broker connection, prepared statements
    let mut zero = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let r = reaper.sweep().await?.context("sweep skipped")?;
        zero.push(t.elapsed());
        if r.reaped != 0 {
            bail!("reaped {} on a table with nothing stale", r.reaped);
        }
    }
    zero.sort();
    let zero_median = zero[zero.len() / 2];
    let plan: Vec<String> = client
        .query(
            "EXPLAIN SELECT token FROM purchase_items i WHERE i.status = 'running'
               AND i.heartbeat_at < now() - make_interval(secs => 600.0)
             ORDER BY i.heartbeat_at, i.token LIMIT 1000",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    client
        .execute(
            &format!(
                "UPDATE purchase_items SET status = 'running' WHERE rec_index % {} = 0",
                rows / stale
            ),
            &[],
        )
        .await?;
    client.batch_execute("ANALYZE purchase_items").await?;
    let t = Instant::now();
    let r = reaper.sweep().await?.context("sweep skipped")?;
    let stale_sweep = t.elapsed();
    say!(
        cli,
        "\nreaper on {rows} items (loaded in {:.1}s)",
        loaded.as_secs_f64()
    );
    say!(
        cli,
        "  sweep, 0 stale          {:>10.1} ms (median of 5)",
        zero_median.as_secs_f64() * 1000.0
    );
    say!(
        cli,
        "  sweep, {stale} stale  {:>10.1} ms ({r})",
        stale_sweep.as_secs_f64() * 1000.0
    );
    say!(
        cli,
        "  stale-selection plan:   {}",
        plan.first().map(String::as_str).unwrap_or("")
    );
    for line in plan.iter().skip(1) {
        say!(cli, "                          {line}");
    }
    drop(client);
    world.cleanup().await;
    Ok(json!({
        "rows": rows,
        "zero_stale_ms": zero_median.as_secs_f64() * 1000.0,
        "stale": stale,
        "stale_ms": stale_sweep.as_secs_f64() * 1000.0,
        "reaped": r.reaped,
        "plan": plan,
    }))
}

fn goals(r: &Report) -> Vec<Value> {
    let mut g = Vec::new();
    let mut push = |what: String, measured: String, goal: &str, met: bool| {
        g.push(json!({"what": what, "measured": measured, "goal": goal, "met": met}));
    };
    for e in &r.e2e {
        let mix = e["mix"].as_str().unwrap_or("");
        let (goal, min) = if mix == "savings-plans" {
            (">= 17 %", 0.17)
        } else {
            (">= 10 %", 0.10)
        };
        if let Some(ratio) = e["ratio_to_consume_ack_ceiling"].as_f64() {
            push(
                format!("end-to-end {mix} vs consume+ack ceiling"),
                format!("{:.1} %", ratio * 100.0),
                goal,
                ratio >= min,
            );
        }
        let per_item = &e["per_item"];
        if mix == "savings-plans" {
            if let Some(w) = per_item["write_transactions"].as_f64() {
                push(
                    format!("Postgres write transactions per item, {mix}"),
                    format!("{w:.2}"),
                    "<= 1",
                    w <= 1.0,
                );
            }
        }
        if let Some(share) = per_item["bench_cpu_share"].as_f64() {
            push(
                format!("the bench's own share of CPU, {mix}"),
                format!("{:.1} %", share * 100.0),
                "< 10 %",
                share < 0.10,
            );
        }
    }
    for (concurrency, min) in [(200, 0.95), (500, 0.90)] {
        if let Some(step) = r.latency.iter().find(|l| l["concurrency"] == concurrency) {
            let eff = step["efficiency"].as_f64().unwrap_or(0.0);
            push(
                format!("latency-bound efficiency at concurrency {concurrency}"),
                format!("{:.1} %", eff * 100.0),
                if min >= 0.95 { ">= 95 %" } else { ">= 90 %" },
                eff >= min,
            );
        }
    }
    if let Some(idle) = r.memory["idle_mib"].as_f64() {
        push(
            "worker RSS idle".into(),
            format!("{idle:.1} MiB"),
            "<= 20 MiB",
            idle <= 20.0,
        );
    }
    if let Some(peak) = r.memory["peak_200_in_flight_mib"].as_f64() {
        push(
            "worker RSS peak at 200 in flight".into(),
            format!("{peak:.1} MiB"),
            "<= 40 MiB",
            peak <= 40.0,
        );
    }
    if let Some(calls) = r.redelivery["provider_calls"].as_u64() {
        push(
            "provider calls on redelivery of succeeded items".into(),
            calls.to_string(),
            "0",
            calls == 0,
        );
    }
    if let Some(ms) = r.reaper["zero_stale_ms"].as_f64() {
        push(
            format!("reaper sweep, {} rows, 0 stale", r.reaper["rows"]),
            format!("{ms:.1} ms"),
            "<= 20 ms",
            ms <= 20.0,
        );
    }
    if let Some(ms) = r.reaper["stale_ms"].as_f64() {
        push(
            format!("reaper sweep, {} stale", r.reaper["stale"]),
            format!("{ms:.0} ms"),
            "<= 2000 ms",
            ms <= 2000.0,
        );
    }
    g
}
