//! Do: consume the purchases queue and map each [`Outcome`] to ack / retry queue / dead letter.
//!
//! At-least-once: a message is acked only after its outcome is durable (the purchase recorded,
//! or the copy confirmed in a retry or dead-letter queue). A crash anywhere before the ack
//! makes the broker redeliver it, which the token makes safe.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use buyonce_shared::amqp::{self, dead_letters, headers, Publisher, Topology};
use buyonce_shared::db;
use buyonce_shared::envelope::PurchaseMessage;
use buyonce_shared::store::Store;
use buyonce_shared::Service;
use futures::{FutureExt as _, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::aws::AwsClients;
use crate::azure::AzureClient;
use crate::config::WorkerConfig;
use crate::executors::{self, Executor};
use crate::handler::{Handler, HandlerSettings, Outcome};
use crate::http::{self, Health};
use crate::metrics::Metrics;

/// A started worker.
pub struct RunningWorker {
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub http_addr: std::net::SocketAddr,
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub metrics: Arc<Metrics>,
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
    let store = Store::new(pool);
    let aws = AwsClients::new(config.aws.clone()).await;
    let azure = match &config.azure {
        Some(settings) => Some(AzureClient::new(settings).context("Azure client")?),
        None => None,
    };
    let metrics = Arc::new(Metrics::new());
    let mut registry = executors::registry(aws, azure);
    tweak_executors(&mut registry);
    let handler = Arc::new(Handler::new(
        store.clone(),
        registry,
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
        },
        metrics.clone(),
    ));
    let health = Arc::new(Health {
        metrics: metrics.clone(),
        store: store.clone(),
        broker_up: false.into(),
    });
    let http_addr = http::serve(config.listen, health.clone(), shutdown.clone()).await?;
    info!(listen = %http_addr, concurrency = config.concurrency, dry_run = config.dry_run, "worker started");
    let worker = Consumer {
        topology: Topology::from_config(&config.common),
        config,
        handler,
        metrics: metrics.clone(),
        health,
        store,
    };
    let handle = tokio::spawn(async move { worker.run(shutdown).await });
    Ok(RunningWorker {
        http_addr,
        handle,
        metrics,
    })
}

/// Runs until `shutdown` and the drain finish.
pub async fn run(config: WorkerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let running = spawn(config, shutdown).await?;
    running.handle.await.context("worker task")?
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

/// The one shutdown deadline: fixed when the drain starts, and every wait after it (the
/// session's, then `run`'s for purchases still in flight) ends by it. Two waits of a full grace
/// each took up to twice `BUYONCE_SHUTDOWN_GRACE`, past the pod's termination grace.
struct Drain {
    grace: Duration,
    deadline: OnceLock<Instant>,
}

impl Drain {
    fn new(grace: Duration) -> Self {
        Self {
            grace,
            deadline: OnceLock::new(),
        }
    }

    /// Waits for the tracked tasks until the deadline (set now if this is the first wait).
    /// Whether they all finished.
    async fn wait(&self, tracker: &TaskTracker) -> bool {
        let deadline = *self.deadline.get_or_init(|| Instant::now() + self.grace);
        tokio::time::timeout_at(deadline, tracker.wait())
            .await
            .is_ok()
    }
}

struct Consumer {
    config: WorkerConfig,
    topology: Topology,
    handler: Arc<Handler>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    store: Store,
}

impl Consumer {
    async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let tracker = TaskTracker::new();
        let drain = Drain::new(self.config.shutdown_grace);
        let mut backoff = Duration::from_millis(200);
        while !shutdown.is_cancelled() {
            match self.session(&tracker, &drain, &shutdown).await {
                Ok(()) => break,
                Err(e) => {
                    self.health.broker_up.store(false, Ordering::SeqCst);
                    self.metrics.reconnects.inc();
                    warn!(error = %format!("{e:#}"), retry_in = ?backoff, "broker session ended; reconnecting (unacked messages are redelivered, the token makes that safe)");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
            if !shutdown.is_cancelled() {
                backoff = backoff.max(Duration::from_millis(200));
            }
        }
        tracker.close();
        if !drain.wait(&tracker).await {
            warn!(grace = ?self.config.shutdown_grace, in_flight = tracker.len(), "shutdown grace over; exiting with purchases in flight (their messages are redelivered)");
        }
        info!("worker stopped");
        Ok(())
    }

    /// One connection: declare, consume, dispatch. Returns `Ok` only on shutdown (after the
    /// drain, so acks can still be sent), `Err` when the broker connection is lost.
    async fn session(
        &self,
        tracker: &TaskTracker,
        drain: &Drain,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let name = format!(
            "buyonce-worker@{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| std::process::id().to_string())
        );
        let conn = amqp::connect(&self.config.common.amqp, &name).await?;
        let channel = conn
            .create_channel()
            .await
            .context("opening the consume channel")?;
        self.topology.declare(&channel).await?;
        let publisher = Publisher::new(&conn, self.topology.clone()).await?;
        // Dead letters move from the queue into Postgres continuously (every replica may run
        // one; archiving is idempotent). Stopped when this session ends, whatever the reason.
        let session_stop = shutdown.child_token();
        let _stop_archiver = session_stop.clone().drop_guard();
        if self.config.archive_dead_letters {
            let archive_channel = conn
                .create_channel()
                .await
                .context("opening the dead-letter archiver channel")?;
            let store = self.store.clone();
            let topology = self.topology.clone();
            tokio::spawn(async move {
                if let Err(e) =
                    dead_letters::run_archiver_on(store, archive_channel, topology, session_stop)
                        .await
                {
                    warn!(error = %format!("{e:#}"), "dead-letter archiver stopped; the next session restarts it");
                }
            });
        }
        // Prefetch = concurrency: the broker hands out no more than the worker can work on, so
        // a crashed worker strands at most that many messages (redelivered to others).
        let prefetch = u16::try_from(self.config.concurrency).unwrap_or(u16::MAX);
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .context("setting prefetch")?;
        let tag = format!("{name}-{}", uuid::Uuid::new_v4().simple());
        let mut consumer = channel
            .basic_consume(
                self.topology.purchases_queue().as_str().into(),
                tag.as_str().into(),
                // Manual acks: a message is acked only once its outcome is durable.
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "consuming {}: {}",
                    self.topology.purchases_queue(),
                    amqp::describe_error(&e)
                )
            })?;
        self.health.broker_up.store(true, Ordering::SeqCst);
        info!(queue = %self.topology.purchases_queue(), prefetch, "consuming");
        let slots = Arc::new(Semaphore::new(self.config.concurrency));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    info!(in_flight = tracker.len(), "stopping: no new messages; draining in-flight purchases");
                    let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                    tracker.close();
                    if !drain.wait(tracker).await {
                        warn!(in_flight = tracker.len(), "shutdown grace over with purchases in flight");
                    }
                    let _ = conn.close(200, "shutdown".into()).await;
                    return Ok(());
                }
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        let permit = slots.clone().acquire_owned().await.context("slots")?;
                        let handler = self.handler.clone();
                        let publisher = publisher.clone();
                        let metrics = self.metrics.clone();
                        tracker.spawn(async move {
                            match AssertUnwindSafe(handler.handle(&delivery.data)).catch_unwind().await {
                                Ok(outcome) => apply(outcome, delivery, &publisher, &metrics).await,
                                Err(panic) => requeue_after_panic(delivery, panic, &metrics).await,
                            }
                            drop(permit);
                        });
                    }
                    Some(Err(e)) => return Err(anyhow::anyhow!("consumer error: {}", amqp::describe_error(&e))),
                    None => return Err(anyhow::anyhow!("consumer stream ended (channel or connection closed)")),
                }
            }
        }
    }
}

/// The one place outcomes become broker actions. The copy goes out (confirmed) before the ack:
/// a crash in between duplicates a message, never loses one.
pub async fn apply(outcome: Outcome, delivery: Delivery, publisher: &Publisher, metrics: &Metrics) {
    let label = |outcome: &str, note: &str| {
        vec![("outcome", outcome.to_owned()), ("note", note.to_owned())]
    };
    let result = match &outcome {
        Outcome::Done { note } => {
            metrics.deliveries.get_or_create(&label("done", note)).inc();
            Ok(())
        }
        Outcome::Ended { status, note } => {
            metrics
                .deliveries
                .get_or_create(&label(&format!("ended-{}", status.as_str()), note))
                .inc();
            Ok(())
        }
        Outcome::Retry {
            level,
            after,
            reason,
        } => {
            metrics
                .deliveries
                .get_or_create(&label("retry", reason))
                .inc();
            metrics
                .retries
                .get_or_create(&vec![("reason", reason.to_string())])
                .inc();
            let props = with_headers(&delivery, &[(headers::RETRY_REASON, reason)]);
            publisher
                .publish_retry(&delivery.data, props, *level, *after)
                .await
                .map_err(|e| format!("parking in the retry queue failed: {e}"))
        }
        Outcome::Dead { reason, error } => {
            metrics
                .deliveries
                .get_or_create(&label("dead", reason.as_str()))
                .inc();
            metrics
                .dead_letters
                .get_or_create(&vec![("reason", reason.as_str().to_owned())])
                .inc();
            let error: String = error.chars().take(2000).collect();
            let id = uuid::Uuid::new_v4().to_string();
            let now = chrono::Utc::now().to_rfc3339();
            let props = with_headers(
                &delivery,
                &[
                    (headers::REASON, reason.as_str()),
                    (headers::ERROR, &error),
                    (headers::DEAD_LETTER_ID, &id),
                    (headers::DEAD_AT, &now),
                ],
            );
            publisher
                .publish_dead(&delivery.data, props)
                .await
                .map_err(|e| format!("dead-lettering failed: {e}"))
        }
    };
    match result {
        Ok(()) => {
            if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                // The channel is gone: the broker redelivers; the outcome is already durable.
                warn!(error = %amqp::describe_error(&e), "ack failed; the message will be redelivered");
            }
        }
        Err(problem) => {
            error!(%problem, "outcome not durable; returning the message to the queue");
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await;
        }
    }
}

/// A handler panicked: nothing recorded this delivery's fate, so it goes back to the queue (the
/// token guard makes the retry safe; the quorum queue's delivery limit dead-letters a message
/// that panics every time). Without this the delivery stayed unacked until the channel died.
async fn requeue_after_panic(
    delivery: Delivery,
    panic: Box<dyn std::any::Any + Send>,
    metrics: &Metrics,
) {
    metrics.handler_panics.inc();
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(not a string)".into());
    match PurchaseMessage::decode(&delivery.data) {
        Ok(msg) => error!(
            panic = %what,
            execution.id = %msg.execution_id,
            item.rec_index = msg.rec_index.get(),
            token = %msg.token,
            service = %msg.recommendation.service.as_str(),
            "handler panicked; returning the message to the queue"
        ),
        Err(_) => {
            error!(panic = %what, "handler panicked on an undecodable message; returning it to the queue")
        }
    }
    let _ = delivery
        .nack(BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        })
        .await;
}

/// The delivery's properties with extra string headers.
fn with_headers(delivery: &Delivery, extra: &[(&str, &str)]) -> lapin::BasicProperties {
    let mut table = delivery.properties.headers().clone().unwrap_or_default();
    for (k, v) in extra {
        table.insert((*k).into(), headers::long(v));
    }
    delivery.properties.clone().with_headers(table)
}
