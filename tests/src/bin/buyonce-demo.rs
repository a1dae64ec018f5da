//! `buyonce-demo`: the whole job on one machine, against an embedded fakecloud.
//!
//! Starts fakecloud (AWS + Azure emulator) in-process, migrates a fresh Postgres schema, declares
//! a fresh queue topology, starts three workers and the reaper, enqueues
//! `examples/execution.json` (all 11 services, 12 recommendations) through the producer, kills one worker mid-run,
//! prints the results, then re-drives the execution, resubmits it and re-publishes every message —
//! and checks that the provider ledger still holds exactly one commitment per recommendation.
//! Exits 0 only if every invariant holds.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use buyonce_fakecloud::{FakeCloud, FakeCloudConfig, FaultRule, Faults, Realism, DEFAULT_TENANT};
use buyonce_shared::amqp::{self, Publisher, Topology};
use buyonce_shared::config::{redact_url, AmqpConfig, DatabaseConfig};
use buyonce_shared::store::{ItemRow, Store};
use buyonce_shared::{db, ExecutionDocument};
use buyonce_worker::clients::aws::AwsSettings;
use buyonce_worker::clients::azure::AzureSettings;
use buyonce_worker::config::WorkerConfig;
use buyonce_worker::reaper::{Reaper, ReaperConfig};
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// Run buyonce end to end on an embedded fake cloud and prove every recommendation is bought
/// exactly once, through a worker crash, a re-drive and a full re-publish.
#[derive(Parser, Debug)]
#[command(name = "buyonce-demo", version)]
struct Cli {
    /// The execution document to buy.
    #[arg(long, default_value = "examples/execution.json")]
    execution: PathBuf,
    /// Postgres server (a fresh schema is used and dropped afterwards).
    #[arg(
        long,
        env = "BUYONCE_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/buyonce_demo"
    )]
    database_url: String,
    /// RabbitMQ (fresh queue names are used and deleted afterwards).
    #[arg(
        long,
        env = "BUYONCE_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,
    /// Workers in the fleet.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Latency fakecloud adds to every purchase call (makes the crash visible).
    #[arg(long, default_value = "300ms", value_parser = parse_duration)]
    purchase_latency: Duration,
    /// How pessimistic the fake cloud is: `strict` (default: new commitments invisible for
    /// half a second, AWS pages of two, duplicate OpenSearch names allowed, Azure's session
    /// timeout on re-PUTs and 200 while creating — what the providers are allowed to do) or
    /// `friendly`.
    #[arg(long, default_value = "strict", value_parser = ["strict", "friendly"])]
    realism: String,
    /// Keep the schema and queues for inspection.
    #[arg(long)]
    keep: bool,
}

/// The demo's settle window (production: minutes, `BUYONCE_*_SETTLE_WINDOW`), longer than
/// the strict fake cloud's invisibility.
const SETTLE_WINDOW: Duration = Duration::from_secs(2);

fn parse_duration(s: &str) -> Result<Duration, String> {
    buyonce_shared::duration::parse_duration(s).map_err(|e| e.to_string())
}

struct Fleet {
    /// One runtime per worker, so "killing" a worker drops its sockets mid-purchase like a
    /// crash would (no graceful close, no acks).
    runtimes: Vec<Option<tokio::runtime::Runtime>>,
    shutdowns: Vec<CancellationToken>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    buyonce_shared::tls::install_crypto_provider();
    if std::env::var_os("RUST_LOG").is_none() {
        // The demo prints its own story; worker logs only when something is wrong.
        std::env::set_var("RUST_LOG", "error");
    }
    buyonce_shared::telemetry::init(buyonce_shared::config::LogFormat::Pretty);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("buyonce-demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(demo(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nbuyonce-demo FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(cli: Cli) -> anyhow::Result<()> {
    let started = Instant::now();
    let doc_bytes = std::fs::read(&cli.execution).with_context(|| {
        format!(
            "reading {} (run from the repository root)",
            cli.execution.display()
        )
    })?;
    let doc = ExecutionDocument::from_json(&doc_bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", cli.execution.display()))?;
    let n = doc.recommendations.len();
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();

    // The world: fakecloud, a fresh schema, fresh queues.
    let fc = FakeCloud::start(FakeCloudConfig {
        faults: Faults::rules([FaultRule::latency("*Purchase*", cli.purchase_latency)]),
        azure_provisioning_delay: Duration::from_millis(300),
        ri_activation_delay: Duration::from_millis(300),
        realism: match cli.realism.as_str() {
            "friendly" => Realism::friendly(),
            _ => Realism::strict_deterministic(Duration::from_millis(500)),
        },
        ..FakeCloudConfig::default()
    })
    .await?;
    let mut database = DatabaseConfig::new(cli.database_url.clone());
    database.schema = Some(format!("demo_{run_id}"));
    database.pool_size = 4;
    let store = Store::new(
        db::connect(&database)
            .await
            .context("Postgres (is it running? BUYONCE_DATABASE_URL)")?,
    );
    let amqp_config = AmqpConfig::new(cli.amqp_url.clone());
    let prefix = format!("demo-{run_id}");
    let delays = vec![
        Duration::from_millis(200),
        Duration::from_millis(500),
        Duration::from_secs(1),
        Duration::from_secs(2),
    ];
    let topology = Topology::new(prefix.clone(), 20, delays.clone());
    let conn = amqp::connect(&amqp_config, "buyonce-demo")
        .await
        .context("RabbitMQ (is it running? BUYONCE_AMQP_URL)")?;
    topology.declare(&conn).await?;
    let publisher = Publisher::new(&conn, topology.clone()).await?;

    println!(
        "buyonce demo — {n} recommendations, {} workers, the reaper, an embedded fake cloud",
        cli.workers
    );
    println!(
        "  fakecloud  {} (AWS + Azure emulator, {:?} per purchase call, {} realism)",
        fc.endpoint(),
        cli.purchase_latency,
        cli.realism
    );
    println!(
        "  postgres   {} (schema demo_{run_id})",
        redact_url(&cli.database_url)
    );
    println!(
        "  rabbitmq   {} (queues {prefix}.*)",
        redact_url(&cli.amqp_url)
    );

    // The fleet.
    let worker_config = |i: usize| -> anyhow::Result<WorkerConfig> {
        let empty: [(&str, &str); 0] = [];
        let mut c = WorkerConfig::from_source(&empty)?;
        c.common.database = database.clone();
        c.common.amqp = amqp_config.clone();
        c.common.queue_prefix = prefix.clone();
        c.common.retry_delays = delays.clone();
        c.concurrency = 8;
        c.heartbeat_interval = Duration::from_millis(500);
        c.stale_after = Duration::from_millis(1500);
        c.aws_settle_window = SETTLE_WINDOW;
        c.azure_settle_window = SETTLE_WINDOW;
        c.listen = "127.0.0.1:0".parse()?;
        c.aws = AwsSettings {
            endpoint_url: Some(fc.endpoint()),
            region: Some("us-east-1".into()),
            role_name: Some("buyonce-purchaser".into()),
            static_credentials: Some(("test".into(), "test".into())),
        };
        c.azure = Some(AzureSettings::emulator(
            &fc.endpoint(),
            DEFAULT_TENANT,
            "test",
            "test",
        )?);
        let _ = i;
        Ok(c)
    };
    let mut fleet = Fleet {
        runtimes: Vec::new(),
        shutdowns: Vec::new(),
    };
    for i in 0..cli.workers {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("worker-{}", i + 1))
            .enable_all()
            .build()?;
        let shutdown = CancellationToken::new();
        let config = worker_config(i)?;
        let token = shutdown.clone();
        rt.spawn(async move {
            if let Err(e) = buyonce_worker::startup::run(config, token).await {
                eprintln!("worker failed: {e:#}");
            }
        });
        fleet.runtimes.push(Some(rt));
        fleet.shutdowns.push(shutdown);
    }
    let empty: [(&str, &str); 0] = [];
    let mut reaper_config = ReaperConfig::from_source(&empty)?;
    reaper_config.reap_after = Duration::from_secs(5);
    reaper_config.unpublished_grace = Duration::from_secs(2);
    reaper_config.aws = worker_config(0)?.aws;
    reaper_config.common.amqp = amqp_config.clone();
    reaper_config.common.queue_prefix = prefix.clone();
    reaper_config.common.retry_delays = delays.clone();
    let reaper = Reaper::new(store.clone(), reaper_config).await;

    // 1. Enqueue through the producer.
    let report = buyonce_producer::submit::submit(&store, &publisher, &doc)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "\n[1/4] enqueued {}: {} items recorded in Postgres, {} messages published",
        cli.execution.display(),
        report.items.len(),
        report.published
    );

    // 2. Buy, with one worker killed mid-run and the reaper sweeping.
    println!("[2/4] buying");
    let execution_id = doc.execution_id.clone();
    let mut killed = false;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last_sweep = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let mut last_line = String::new();
    loop {
        let items = store.items_of(&execution_id).await?;
        let counts = count(&items);
        let done = counts.get("succeeded").copied().unwrap_or(0)
            + counts.get("failed").copied().unwrap_or(0)
            + counts.get("dead").copied().unwrap_or(0);
        let line = format!(
            "      succeeded {:>2}/{n}   running {:>2}   queued {:>2}   failed {:>2}",
            counts.get("succeeded").copied().unwrap_or(0),
            counts.get("running").copied().unwrap_or(0),
            counts.get("queued").copied().unwrap_or(0),
            counts.get("failed").copied().unwrap_or(0) + counts.get("dead").copied().unwrap_or(0),
        );
        if tty {
            print!("\r{line}   ({:.1}s)   ", started.elapsed().as_secs_f64());
            let _ = std::io::stdout().flush();
        } else if line != last_line {
            // Not a terminal: one line per change, not a carriage-return animation.
            println!("{line}   ({:.1}s)", started.elapsed().as_secs_f64());
        }
        last_line = line;
        if !killed && counts.get("running").copied().unwrap_or(0) >= 2 && cli.workers > 1 {
            // Crash worker 2: its runtime is dropped with purchases in flight.
            if let Some(rt) = fleet.runtimes[1].take() {
                rt.shutdown_background();
            }
            killed = true;
            if tty {
                println!();
            }
            println!("      ✗ killed worker 2 mid-purchase: its unacked messages go back to the queue and another worker takes over");
        }
        if done == n {
            break;
        }
        if last_sweep.elapsed() > Duration::from_secs(2) {
            if let Some(r) = reaper.sweep().await? {
                if r.reaped + r.republished > 0 {
                    println!("{}      reaper: {r}", if tty { "\n" } else { "" });
                }
            }
            last_sweep = Instant::now();
        }
        if Instant::now() > deadline {
            bail!("not every item finished within 90s: {counts:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if tty {
        println!();
    }

    // 3. Results.
    let items = store.items_of(&execution_id).await?;
    println!("[3/4] results");
    print_table(&items);
    let failed: Vec<&ItemRow> = items
        .iter()
        .filter(|i| i.status.as_str() != "succeeded")
        .collect();

    // 4. Re-drive, resubmit and re-publish everything: nothing may be bought twice.
    println!("[4/4] re-drive the execution, resubmit it, and re-publish every message");
    let redriven = buyonce_producer::redrive::redrive(&store, &publisher, &execution_id)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "      re-drive: {} failed/dead items requeued",
        redriven.items.len()
    );
    let again = buyonce_producer::submit::submit(&store, &publisher, &doc)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("      resubmission: {:?}, {} new rows", again.outcome, 0);
    let msgs: Vec<_> = items
        .iter()
        .map(|i| i.to_message(&doc.lineage_key()))
        .collect::<Result<_, _>>()?;
    let mut republished = 0;
    for r in publisher.publish_purchases(&msgs).await {
        r?;
        republished += 1;
    }
    println!("      re-published all {republished} messages with their tokens");
    let calls_before = purchase_calls(&fc);
    let drain_deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = buyonce_shared::amqp::queue_len(&conn, &topology.purchases_queue()).await?;
        let items = store.items_of(&execution_id).await?;
        let live = items
            .iter()
            .filter(|i| matches!(i.status.as_str(), "queued" | "running"))
            .count();
        if ready == 0 && live == 0 {
            break;
        }
        if Instant::now() > drain_deadline {
            bail!("the re-published messages did not drain within 60s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let purchase_calls_after = purchase_calls(&fc) - calls_before;

    // The invariants.
    let ledger = fc.ledger();
    let items = store.items_of(&execution_id).await?;
    let commitments = store.commitments(Some(&execution_id)).await?;
    let succeeded = items
        .iter()
        .filter(|i| i.status.as_str() == "succeeded")
        .count();
    let mut per_handle: BTreeMap<&str, usize> = BTreeMap::new();
    for entry in &ledger {
        *per_handle.entry(entry.commitment_id.as_str()).or_default() += 1;
    }
    let mut problems = Vec::new();
    if ledger.len() != succeeded {
        problems.push(format!(
            "{} commitments in the provider ledger for {succeeded} succeeded items",
            ledger.len()
        ));
    }
    if commitments.len() != succeeded {
        problems.push(format!(
            "{} rows in the commitments table for {succeeded} succeeded items",
            commitments.len()
        ));
    }
    for item in items.iter().filter(|i| i.status.as_str() == "succeeded") {
        let id = item.commitment_id.as_deref().unwrap_or_default();
        if per_handle.get(id) != Some(&1) {
            problems.push(format!(
                "item {} ({}): commitment {id} not in the ledger exactly once",
                item.rec_index, item.service
            ));
        }
    }
    if !failed.is_empty() {
        problems.push(format!("{} items did not succeed", failed.len()));
    }
    println!(
        "      after the re-drive and {republished} duplicate messages: {} new purchase calls",
        purchase_calls_after
    );
    println!(
        "      provider ledger: {} commitments for {n} recommendations; Postgres ledger: {} rows",
        ledger.len(),
        commitments.len()
    );
    let mut how: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &commitments {
        *how.entry(c.how.as_str()).or_default() += 1;
    }
    println!(
        "      how each was obtained: {}",
        how.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Stop the fleet and clean up.
    for s in &fleet.shutdowns {
        s.cancel();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for rt in fleet.runtimes.iter_mut().filter_map(Option::take) {
        rt.shutdown_background();
    }
    if !cli.keep {
        cleanup(&store, &database, &conn, &topology).await;
    }
    fc.shutdown().await;

    if problems.is_empty() {
        println!(
            "\n✓ exactly one commitment per recommendation ({n}/{n}), through a worker crash, a re-drive and a full re-publish — {:.1}s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    } else {
        for p in &problems {
            println!("✗ {p}");
        }
        bail!("{} invariant(s) violated", problems.len())
    }
}

fn count(items: &[ItemRow]) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for i in items {
        *m.entry(i.status.as_str()).or_default() += 1;
    }
    m
}

fn purchase_calls(fc: &FakeCloud) -> u64 {
    fc.calls()
        .iter()
        .filter(|(op, _)| op.contains("Purchase") || op.ends_with("CreateSavingsPlan"))
        .map(|(_, n)| n)
        .sum()
}

fn print_table(items: &[ItemRow]) {
    println!(
        "      {:>2}  {:<14} {:<38} {:>5}  {:<10} {:<40} {:>12}",
        "#", "service", "account", "count", "status", "commitment ID", "upfront USD"
    );
    let mut total = 0.0;
    for i in items {
        let count = i
            .recommendation
            .count
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into());
        let cost = i.cost_usd.unwrap_or(0.0);
        total += cost;
        println!(
            "      {:>2}  {:<14} {:<38} {:>5}  {:<10} {:<40} {:>12.2}",
            i.rec_index,
            i.service,
            i.account,
            count,
            i.status.as_str(),
            i.commitment_id.as_deref().unwrap_or("-"),
            cost
        );
    }
    println!("      {:>125}", format!("total upfront: {total:.2} USD"));
}

async fn cleanup(
    store: &Store,
    database: &DatabaseConfig,
    conn: &lapin::Connection,
    topology: &Topology,
) {
    if let (Ok(client), Some(schema)) = (store.pool().get().await, &database.schema) {
        let _ = client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                db::quote_ident(schema)
            ))
            .await;
    }
    if let Ok(channel) = conn.create_channel().await {
        let mut queues = vec![topology.purchases_queue(), topology.dead_queue()];
        queues.extend((0..topology.retry_delays.len()).map(|i| topology.retry_queue(i)));
        for q in queues {
            let _ = channel
                .queue_delete(q.as_str().into(), Default::default())
                .await;
        }
        for x in [
            topology.work_exchange(),
            topology.dead_exchange(),
            topology.retry_exchange(),
        ] {
            let _ = channel
                .exchange_delete(x.as_str().into(), Default::default())
                .await;
        }
    }
}
