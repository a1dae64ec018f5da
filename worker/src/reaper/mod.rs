//! The reaper: finds work a dead process left behind (DESIGN §6).
//!
//! * items `running` whose heartbeat is older than `reap_after` → `failed`, with a canonical
//!   reason saying the worker did not complete and a retry is safe (the CAS writes the reason in
//!   the same statement);
//! * `queued` items never published (the producer died between commit and publish) → republished
//!   with the same token;
//! * EC2 items bought but not yet tagged (`tag_pending`) → the tag write is retried;
//! * executions still open with no live item → their aggregate status is set;
//! * optionally (`--redrive-failed`) reaped items with attempts left go back to `queued`.
//!
//! One reaper is active at a time (a Postgres advisory lock per schema); a second one skips.
//! A CAS that finds the row moved or gone is a lost race (INFO: the real worker finished); any
//! other database error is ERROR; neither stops the sweep.

mod config;
mod metrics;
mod sweep;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use buyonce_shared::amqp::{self, Publisher, Topology};
use buyonce_shared::duration::format_duration;
use buyonce_shared::relay;
use buyonce_shared::store::locks::LockName;
use buyonce_shared::store::Store;
use buyonce_shared::{db, Service};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use self::config::{reap_after_from, ReaperConfig, BATCH, DEFAULT_LISTEN, DEFAULT_REAP_AFTER};
pub use self::metrics::ReaperMetrics;
pub use self::sweep::{reap_reason, SweepReport};
use crate::clients::aws::AwsClients;
use crate::executors::{self, Executor};
use crate::http::{self, Health};

/// The sweeper. Build with [`Reaper::new`]; tests drive the steps directly.
pub struct Reaper {
    pub store: Store,
    config: ReaperConfig,
    executors: std::collections::HashMap<Service, Arc<dyn Executor>>,
    metrics: Arc<ReaperMetrics>,
}

impl Reaper {
    pub async fn new(store: Store, config: ReaperConfig) -> Self {
        let aws = AwsClients::new(config.aws.clone()).await;
        Self {
            store,
            executors: executors::registry(aws, None),
            config,
            metrics: Arc::new(ReaperMetrics::new()),
        }
    }

    /// One sweep under the single-reaper lock; `None` when another reaper holds it.
    pub async fn sweep(&self) -> anyhow::Result<Option<SweepReport>> {
        let lock = self
            .store
            .try_advisory_lock(LockName::Reaper)
            .await
            .context("reaper lock")?;
        let Some(lock) = lock else {
            info!("another reaper holds the lock; skipping this sweep");
            self.metrics.skipped.inc();
            return Ok(None);
        };
        let started = Instant::now();
        let report = self.sweep_locked().await;
        lock.release().await;
        let report = report?;
        self.metrics.add(&report, started.elapsed());
        info!(
            took_ms = started.elapsed().as_millis() as u64,
            "sweep done: {report}"
        );
        Ok(Some(report))
    }

    async fn sweep_locked(&self) -> anyhow::Result<SweepReport> {
        let mut report = SweepReport::default();
        let reaped = self.reap_stale(&mut report).await?;
        let publisher = self.publisher().await;
        match &publisher {
            Some(p) => {
                let relayed = relay::relay_unpublished(
                    &self.store,
                    p,
                    self.config.unpublished_grace,
                    self.config.batch,
                )
                .await
                .context("republishing unpublished items")?;
                report.republished = relayed.published;
                if self.config.redrive_failed && !reaped.is_empty() {
                    report.redriven = self.redrive(p, &reaped).await;
                }
            }
            None => warn!("broker unavailable: unpublished items wait for the next sweep"),
        }
        report.retagged = self.retag().await;
        report.executions_finished = self.finish_open_executions().await;
        if let Some(p) = publisher {
            let _ = p.channel().close(200, "sweep done".into()).await;
        }
        Ok(report)
    }

    async fn publisher(&self) -> Option<Publisher> {
        let result = async {
            let conn = amqp::connect(&self.config.common.amqp, "buyonce-reaper").await?;
            let topology = Topology::from_config(&self.config.common);
            topology.declare(&conn).await?;
            Publisher::new(&conn, topology).await
        }
        .await;
        match result {
            Ok(p) => Some(p),
            Err(e) => {
                error!(error = %format!("{e:#}"), "cannot reach the broker");
                None
            }
        }
    }
}

/// Runs the reaper: one sweep with `once`, else a sweep every `interval` until `shutdown`.
/// Returns the last sweep's report (`None` if it was skipped).
pub async fn run(
    config: ReaperConfig,
    once: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<SweepReport>> {
    let pool = db::connect(&config.common.database).await?;
    let store = Store::new(pool);
    info!(
        reap_after = %format_duration(config.reap_after),
        interval = %format_duration(config.interval),
        once,
        redrive_failed = config.redrive_failed,
        "reaper started"
    );
    let reaper = Reaper::new(store.clone(), config.clone()).await;
    if once {
        return reaper.sweep().await;
    }
    let health = Arc::new(Health {
        metrics: reaper.metrics.clone(),
        store,
        broker_up: AtomicBool::new(true),
        database: None,
    });
    let addr = http::serve(config.listen, health, shutdown.clone()).await?;
    info!(listen = %addr, "metrics and health served");
    let mut last = None;
    loop {
        match reaper.sweep().await {
            Ok(r) => last = r,
            Err(e) => error!(error = %format!("{e:#}"), "sweep failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(config.interval) => {}
        }
    }
    info!("reaper stopped");
    Ok(last)
}
