//! The composition root: a worker built from its [`WorkerConfig`] — Postgres (connected with
//! retry, migrated), the provider clients and executors, the handler, the health endpoint and
//! the consumer. The binary and the test harness both build workers here, so a test runs the
//! worker production runs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use buyonce_shared::amqp::Topology;
use buyonce_shared::db;
use buyonce_shared::store::Store;
use buyonce_shared::Service;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clients::aws::AwsClients;
use crate::clients::azure::AzureClient;
use crate::config::WorkerConfig;
use crate::consumer::Consumer;
use crate::database_watch::DatabaseWatch;
use crate::executors::{self, Executor};
use crate::handler::{Handler, HandlerSettings};
use crate::http::{self, Health};
use crate::metrics::Metrics;

/// A started worker.
pub struct RunningWorker {
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub http_addr: SocketAddr,
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub metrics: Arc<Metrics>,
}

/// Runs until `shutdown` and the drain finish.
pub async fn run(config: WorkerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let running = spawn(config, shutdown).await?;
    running.handle.await.context("worker task")?
}

/// Starts the worker: connects to Postgres (creating and migrating it), builds the executors,
/// serves the health endpoint and consumes until `shutdown`, then drains in-flight purchases
/// for at most the shutdown grace.
pub async fn spawn(
    config: WorkerConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningWorker> {
    spawn_with(config, |_| {}, shutdown).await
}

/// [`spawn`], with a chance to change the executor registry first (tests put a misbehaving
/// executor in to see what the consumer does with it).
pub async fn spawn_with(
    config: WorkerConfig,
    tweak_executors: impl FnOnce(&mut HashMap<Service, Arc<dyn Executor>>),
    shutdown: CancellationToken,
) -> anyhow::Result<RunningWorker> {
    let pool = connect_db_with_retry(&config, &shutdown).await?;
    let store = Store::new(pool).with_group_commit(config.group_commit);
    let mut metrics = Metrics::new();
    metrics.watch_store(store.clone());
    let metrics = Arc::new(metrics);
    let mut registry = executors_for(&config).await?;
    tweak_executors(&mut registry);
    let handler = Arc::new(Handler::new(
        store.clone(),
        registry,
        handler_settings(&config),
        metrics.clone(),
    ));
    let database =
        DatabaseWatch::spawn(&config.common.database, metrics.clone(), shutdown.clone())?;
    let health = Arc::new(Health {
        metrics: metrics.clone(),
        store: store.clone(),
        broker_up: false.into(),
        database: Some(database.clone()),
    });
    let http_addr = http::serve(config.listen, health.clone(), shutdown.clone()).await?;
    info!(listen = %http_addr, concurrency = config.concurrency, dry_run = config.dry_run, "worker started");
    let consumer = Consumer {
        topology: Topology::from_config(&config.common),
        config,
        handler,
        metrics: metrics.clone(),
        health,
        store,
        database,
    };
    let handle = tokio::spawn(async move { consumer.run(shutdown).await });
    Ok(RunningWorker {
        http_addr,
        handle,
        metrics,
    })
}

/// The executors of every configured provider (Azure only when `config.azure` is set).
pub async fn executors_for(
    config: &WorkerConfig,
) -> anyhow::Result<HashMap<Service, Arc<dyn Executor>>> {
    let aws = AwsClients::new(config.aws.clone()).await;
    let azure = match &config.azure {
        Some(settings) => Some(AzureClient::new(settings).context("Azure client")?),
        None => None,
    };
    Ok(executors::registry(aws, azure))
}

/// The handler's knobs, from the worker's configuration.
pub fn handler_settings(config: &WorkerConfig) -> HandlerSettings {
    HandlerSettings {
        max_attempts: config.max_attempts,
        heartbeat_interval: config.heartbeat_interval,
        stale_after: config.stale_after,
        dry_run: config.dry_run,
        daily_budget_usd: config.daily_budget_usd,
        tag_key: config.tag_key.clone(),
        retry_delays: config.common.retry_delays.clone(),
        per_account_concurrency: config.per_account_concurrency,
        aws_settle_window: config.aws_settle_window,
        azure_settle_window: config.azure_settle_window,
    }
}

async fn connect_db_with_retry(
    config: &WorkerConfig,
    shutdown: &CancellationToken,
) -> anyhow::Result<deadpool_postgres::Pool> {
    let mut wait = Duration::from_millis(500);
    let mut tries = 0;
    loop {
        match db::connect(&config.common.database).await {
            Ok(pool) => return Ok(pool),
            // Waiting does not fix a refused certificate or password: fail at once, loudly.
            Err(e) if is_configuration_problem(&e) => return Err(e),
            Err(e) if tries < 8 => {
                warn!(error = %format!("{e:#}"), retry_in = ?wait, "Postgres not ready");
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(e),
                    _ = tokio::time::sleep(wait) => {}
                }
                tries += 1;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e),
        }
    }
}

fn is_configuration_problem(e: &anyhow::Error) -> bool {
    let text = format!("{e:#}").to_ascii_lowercase();
    [
        "certificate",
        "password authentication failed",
        "no pg_hba.conf entry",
        "does not exist",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}
