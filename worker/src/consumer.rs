//! Do: consume the purchases queue and map each [`Outcome`] to ack / retry queue / dead letter.
//!
//! At-least-once: a message is acked only after its outcome is durable (the purchase recorded,
//! or the copy confirmed in a retry or dead-letter queue). A crash anywhere before the ack
//! makes the broker redeliver it, which the token makes safe.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use buyonce_shared::amqp::{self, dead_letters, headers, Publisher, Topology};
use buyonce_shared::envelope::PurchaseMessage;
use buyonce_shared::store::Store;
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

use crate::config::WorkerConfig;
use crate::database_watch::DatabaseWatch;
use crate::handler::{Handler, Outcome};
use crate::http::Health;
use crate::metrics::Metrics;

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

/// The consume loop of one worker, built by [`crate::startup`].
pub struct Consumer {
    pub config: WorkerConfig,
    pub topology: Topology,
    pub handler: Arc<Handler>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub store: Store,
    /// Whether Postgres answers: while it does not, nothing is consumed.
    pub database: DatabaseWatch,
}

/// Why the consume loop stopped taking deliveries.
enum Stop {
    Shutdown,
    DatabaseDown,
}

impl Consumer {
    /// Consumes (reconnecting after broker trouble) until `shutdown`, then drains in-flight
    /// purchases until the one shutdown deadline.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let tracker = TaskTracker::new();
        let drain = Drain::new(self.config.shutdown_grace);
        let mut backoff = Duration::from_millis(200);
        while !shutdown.is_cancelled() {
            match self.session(&tracker, &drain, &shutdown).await {
                Ok(()) => break,
                Err(e) => {
                    self.health.broker_up.store(false, Ordering::SeqCst);
                    self.metrics.broker_up.set(0);
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
        self.topology.declare(&conn).await?;
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
        let slots = Arc::new(Semaphore::new(self.config.concurrency));
        let mut database = self.database.clone();
        loop {
            // Nothing is taken while Postgres does not answer: every delivery would only wait.
            if !database.is_up() {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return self.stop(&conn, tracker, drain).await,
                    _ = database.up() => {}
                }
            }
            let (channel, tag, mut consumer) = self.consume(&conn, &name, prefetch).await?;
            match self
                .dispatch(
                    &mut consumer,
                    &slots,
                    &publisher,
                    tracker,
                    &mut database,
                    shutdown,
                )
                .await?
            {
                Stop::Shutdown => {
                    info!(
                        in_flight = tracker.len(),
                        "stopping: no new messages; draining in-flight purchases"
                    );
                    let _ = channel
                        .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                        .await;
                    return self.stop(&conn, tracker, drain).await;
                }
                Stop::DatabaseDown => {
                    // Closing the channel returns every unacked delivery to the queue — the
                    // prefetched ones and those whose handlers wait on Postgres — so that
                    // workers that reach Postgres take them. A handler that finishes later
                    // finds its ack refused; its message was redelivered, which the token
                    // makes safe.
                    self.metrics.consume_stops.inc();
                    self.metrics.broker_up.set(0);
                    warn!(
                        in_flight = tracker.len(),
                        "Postgres unreachable: closed the consume channel, handing every unacked message back to the broker; consuming again once Postgres answers"
                    );
                    let closed = tokio::time::timeout(
                        Duration::from_secs(5),
                        channel.close(200, "postgres unreachable: handing messages back".into()),
                    )
                    .await;
                    if !matches!(closed, Ok(Ok(()))) {
                        return Err(anyhow::anyhow!(
                            "closing the consume channel failed; reconnecting to hand the messages back"
                        ));
                    }
                }
            }
        }
    }

    /// A channel consuming the purchases queue with `prefetch`, its consumer tag and stream.
    async fn consume(
        &self,
        conn: &lapin::Connection,
        name: &str,
        prefetch: u16,
    ) -> anyhow::Result<(lapin::Channel, String, lapin::Consumer)> {
        let channel = conn
            .create_channel()
            .await
            .context("opening the consume channel")?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .context("setting prefetch")?;
        let tag = format!("{name}-{}", uuid::Uuid::new_v4().simple());
        let consumer = channel
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
        self.metrics.broker_up.set(1);
        info!(queue = %self.topology.purchases_queue(), prefetch, "consuming");
        Ok((channel, tag, consumer))
    }

    /// Hands deliveries to handlers, one slot each, until shutdown or Postgres stops
    /// answering; `Err` when the broker connection is lost.
    async fn dispatch(
        &self,
        consumer: &mut lapin::Consumer,
        slots: &Arc<Semaphore>,
        publisher: &Publisher,
        tracker: &TaskTracker,
        database: &mut DatabaseWatch,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Stop> {
        loop {
            // A slot first, so that waiting for one still notices shutdown and an outage.
            let permit = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(Stop::Shutdown),
                _ = database.down() => return Ok(Stop::DatabaseDown),
                permit = slots.clone().acquire_owned() => permit.context("slots")?,
            };
            let delivery = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(Stop::Shutdown),
                _ = database.down() => return Ok(Stop::DatabaseDown),
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => delivery,
                    Some(Err(e)) => return Err(anyhow::anyhow!("consumer error: {}", amqp::describe_error(&e))),
                    None => return Err(anyhow::anyhow!("consumer stream ended (channel or connection closed)")),
                },
            };
            let handler = self.handler.clone();
            let publisher = publisher.clone();
            let metrics = self.metrics.clone();
            tracker.spawn(async move {
                match AssertUnwindSafe(handler.handle(&delivery.data))
                    .catch_unwind()
                    .await
                {
                    Ok(outcome) => apply(outcome, delivery, &publisher, &metrics).await,
                    Err(panic) => requeue_after_panic(delivery, panic, &metrics).await,
                }
                drop(permit);
            });
        }
    }

    /// Shutdown: waits for in-flight purchases until the one shutdown deadline (their acks
    /// still go out on `conn`), then closes the connection.
    async fn stop(
        &self,
        conn: &lapin::Connection,
        tracker: &TaskTracker,
        drain: &Drain,
    ) -> anyhow::Result<()> {
        tracker.close();
        if !drain.wait(tracker).await {
            warn!(
                in_flight = tracker.len(),
                "shutdown grace over with purchases in flight"
            );
        }
        let _ = conn.close(200, "shutdown".into()).await;
        Ok(())
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
            if delivery.acker.usable() {
                let props = with_headers(&delivery, &[(headers::RETRY_REASON, reason)]);
                publisher
                    .publish_retry(&delivery.data, props, *level, *after)
                    .await
                    .map_err(|e| format!("parking in the retry queue failed: {e}"))
            } else {
                // Its channel closed (Postgres was unreachable, or the broker connection
                // died): the broker has requeued the original, a retry copy would be a second.
                Ok(())
            }
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
        Ok(()) => match delivery.ack(BasicAckOptions::default()).await {
            Ok(true) => {}
            // The channel is gone: the broker redelivers; the outcome is already durable.
            Ok(false) => {
                info!("not acked: the delivery's channel closed; the broker redelivers the message")
            }
            Err(e) => {
                warn!(error = %amqp::describe_error(&e), "ack failed; the message will be redelivered")
            }
        },
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
