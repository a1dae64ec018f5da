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

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use buyonce_shared::amqp::{self, Publisher, Topology};
use buyonce_shared::config::{self, vars, CommonConfig, ConfigError, EnvSource, ProcessEnv};
use buyonce_shared::duration::{format_duration, parse_go_duration};
use buyonce_shared::relay;
use buyonce_shared::store::{ItemRow, ItemStatus, Store};
use buyonce_shared::{db, IdempotencyToken, Recommendation, Service};
use deadpool_postgres::Object;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::aws::{AwsClients, AwsSettings};
use crate::executors::{self, Executor};
use crate::http::{self, Health, MetricsSource};

/// Default `reap_after`.
pub const DEFAULT_REAP_AFTER: Duration = Duration::from_secs(600);
/// Rows per batch: bounded statements and memory on tables of any size.
pub const BATCH: i64 = 1000;

/// Parses `PURCHASE_APPROVED_REAP_AFTER`. Unset, unparseable, zero or negative → a WARN naming
/// the value and the default (10m): a bad value must never crash the reaper, and must never
/// become a zero or negative cutoff that would reap live purchases.
pub fn reap_after_from(raw: Option<&str>) -> Duration {
    let name = vars::REAP_AFTER.name;
    let default = format_duration(DEFAULT_REAP_AFTER);
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
        warn!("{name} is not set; using the default {default}");
        return DEFAULT_REAP_AFTER;
    };
    match parse_go_duration(raw) {
        Ok(nanos) if nanos > 0 => Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)),
        Ok(_) => {
            warn!("{name}={raw:?} is zero or negative; using the default {default}");
            DEFAULT_REAP_AFTER
        }
        Err(e) => {
            warn!(
                "{name}={raw:?} is not a Go duration ({}); using the default {default}",
                e.why
            );
            DEFAULT_REAP_AFTER
        }
    }
}

/// The canonical, human-readable reason written on a reaped item.
pub fn reap_reason(reap_after: Duration) -> String {
    format!(
        "reaped after {} in running state — worker did not complete; safe to retry",
        format_duration(reap_after)
    )
}

/// Reaper configuration.
#[derive(Debug, Clone)]
pub struct ReaperConfig {
    pub common: CommonConfig,
    pub reap_after: Duration,
    pub interval: Duration,
    pub unpublished_grace: Duration,
    pub redrive_failed: bool,
    pub max_attempts: i32,
    pub tag_key: String,
    pub listen: SocketAddr,
    pub aws: AwsSettings,
    pub batch: i64,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9102";

impl ReaperConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&ProcessEnv)
    }

    pub fn from_source(env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let common = CommonConfig::from_source(env)?;
        crate::config::at_least_two_connections(
            &common,
            "the reaper",
            "its single-reaper lock holds one while the sweep works through another",
        )?;
        let listen_raw = config::get(env, &vars::LISTEN).unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen = listen_raw.parse().map_err(|e| ConfigError::Invalid {
            var: vars::LISTEN.name.into(),
            shown: format!("{listen_raw:?}"),
            problem: format!("{e}"),
            expected: vars::LISTEN.expected.into(),
        })?;
        Ok(Self {
            reap_after: reap_after_from(env.get(vars::REAP_AFTER.name).as_deref()),
            interval: config::parse_positive_duration(env, &vars::REAP_INTERVAL)?,
            unpublished_grace: config::parse_positive_duration(env, &vars::UNPUBLISHED_GRACE)?,
            redrive_failed: false,
            max_attempts: config::parse_number(env, &vars::MAX_ATTEMPTS, 1i32, 100)?,
            tag_key: config::get_or_default(env, &vars::TAG_KEY).unwrap_or_default(),
            listen,
            aws: AwsSettings {
                endpoint_url: config::get(env, &vars::AWS_ENDPOINT_URL),
                region: config::get_or_default(env, &vars::AWS_REGION),
                role_name: config::get(env, &vars::AWS_ROLE_NAME),
                static_credentials: None,
            },
            batch: BATCH,
            common,
        })
    }
}

/// Counters of one sweep.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Stale `running` items found.
    pub found: usize,
    pub reaped: usize,
    /// The row moved on (or vanished) between the select and the CAS.
    pub race_lost: usize,
    /// Database errors on individual rows.
    pub errored: usize,
    /// Unpublished `queued` items republished.
    pub republished: usize,
    /// Tags written for `tag_pending` items.
    pub retagged: usize,
    /// Reaped items put back in the queue (`--redrive-failed`).
    pub redriven: usize,
    /// Executions whose aggregate status was set.
    pub executions_finished: usize,
}

impl fmt::Display for SweepReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "found={} reaped={} race_lost={} errored={} republished={} retagged={}",
            self.found, self.reaped, self.race_lost, self.errored, self.republished, self.retagged
        )?;
        if self.redriven > 0 {
            write!(f, " redriven={}", self.redriven)?;
        }
        Ok(())
    }
}

/// The reaper's metrics.
pub struct ReaperMetrics {
    registry: Registry,
    pub sweeps: Counter,
    pub skipped: Counter,
    pub found: Counter,
    pub reaped: Counter,
    pub race_lost: Counter,
    pub errored: Counter,
    pub republished: Counter,
    pub retagged: Counter,
    pub last_sweep_ms: Gauge,
}

impl ReaperMetrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("buyonce_reaper");
        let m = Self {
            sweeps: Counter::default(),
            skipped: Counter::default(),
            found: Counter::default(),
            reaped: Counter::default(),
            race_lost: Counter::default(),
            errored: Counter::default(),
            republished: Counter::default(),
            retagged: Counter::default(),
            last_sweep_ms: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("sweeps", "Sweeps run", m.sweeps.clone());
        registry.register(
            "skipped",
            "Sweeps skipped: another reaper held the lock",
            m.skipped.clone(),
        );
        registry.register("found", "Stale running items found", m.found.clone());
        registry.register("reaped", "Items moved running → failed", m.reaped.clone());
        registry.register(
            "race_lost",
            "CAS found the row moved on",
            m.race_lost.clone(),
        );
        registry.register(
            "errored",
            "Rows that hit a database error",
            m.errored.clone(),
        );
        registry.register(
            "republished",
            "Unpublished items republished",
            m.republished.clone(),
        );
        registry.register(
            "retagged",
            "Tags written for tag_pending items",
            m.retagged.clone(),
        );
        registry.register(
            "last_sweep_milliseconds",
            "Duration of the last sweep",
            m.last_sweep_ms.clone(),
        );
        Self { registry, ..m }
    }

    fn add(&self, r: &SweepReport, took: Duration) {
        self.sweeps.inc();
        self.found.inc_by(r.found as u64);
        self.reaped.inc_by(r.reaped as u64);
        self.race_lost.inc_by(r.race_lost as u64);
        self.errored.inc_by(r.errored as u64);
        self.republished.inc_by(r.republished as u64);
        self.retagged.inc_by(r.retagged as u64);
        self.last_sweep_ms.set(took.as_millis() as i64);
    }
}

impl MetricsSource for ReaperMetrics {
    fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Holds the single-reaper advisory lock on a dedicated connection.
struct ReaperLock(Option<Object>);

impl ReaperLock {
    const SQL: &'static str =
        "SELECT pg_try_advisory_lock(hashtext('buyonce.reaper.' || current_schema())::bigint)";

    async fn try_acquire(store: &Store) -> anyhow::Result<Option<Self>> {
        let conn = store
            .pool()
            .get()
            .await
            .map_err(|e| anyhow::anyhow!("reaper lock: {}", db::pool_error_text(&e)))?;
        let got: bool = conn.query_one(Self::SQL, &[]).await?.get(0);
        Ok(got.then(|| Self(Some(conn))))
    }

    async fn release(mut self) {
        if let Some(conn) = self.0.take() {
            let unlocked = conn
                .query_one(
                    "SELECT pg_advisory_unlock(hashtext('buyonce.reaper.' || current_schema())::bigint)",
                    &[],
                )
                .await;
            if unlocked.is_err() {
                let _ = Object::take(conn);
            }
        }
    }
}

impl Drop for ReaperLock {
    fn drop(&mut self) {
        // Not released normally: close the connection so Postgres frees the lock.
        if let Some(conn) = self.0.take() {
            let _ = Object::take(conn);
        }
    }
}

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
        let Some(lock) = ReaperLock::try_acquire(&self.store).await? else {
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
            let channel = conn.create_channel().await?;
            let topology = Topology::from_config(&self.config.common);
            topology.declare(&channel).await?;
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

    /// Selects stale `running` items batch by batch (keyset pagination, so rows that failed to
    /// reap are not selected again in this sweep) and reaps them; returns the reaped items.
    pub async fn reap_stale(&self, report: &mut SweepReport) -> anyhow::Result<Vec<ItemRow>> {
        let mut all_reaped = Vec::new();
        let mut cursor = None;
        // Bounded: at most this many batches per sweep, so one sweep cannot run forever.
        for _ in 0..10_000 {
            let candidates = self
                .store
                .stale_running(self.config.reap_after, self.config.batch, cursor.take())
                .await
                .context("selecting stale running items")?;
            let Some(last) = candidates.last() else { break };
            cursor = last.heartbeat_at.map(|at| (at, last.token.clone()));
            let full = candidates.len() as i64 == self.config.batch;
            all_reaped.extend(self.reap_candidates(&candidates, report).await);
            if !full || cursor.is_none() {
                break;
            }
        }
        Ok(all_reaped)
    }

    /// CASes each candidate `running → failed`; counts reaped, race_lost and errored. A batch
    /// statement first; if it fails, row by row so one bad row cannot stop the others.
    pub async fn reap_candidates(
        &self,
        candidates: &[ItemRow],
        report: &mut SweepReport,
    ) -> Vec<ItemRow> {
        report.found += candidates.len();
        let reason = reap_reason(self.config.reap_after);
        let tokens: Vec<String> = candidates.iter().map(|c| c.token.clone()).collect();
        let reaped_tokens: Vec<String> = match self
            .store
            .reap_batch(&tokens, self.config.reap_after, &reason)
            .await
        {
            Ok(rows) => {
                let moved: Vec<String> = rows.into_iter().map(|(t, _)| t).collect();
                let lost: Vec<String> = tokens
                    .iter()
                    .filter(|t| !moved.contains(t))
                    .cloned()
                    .collect();
                if !lost.is_empty() {
                    let now = self.store.statuses_of(&lost).await.unwrap_or_default();
                    for t in &lost {
                        let status = now
                            .iter()
                            .find(|(tok, _)| tok == t)
                            .map(|(_, s)| s.as_str())
                            .unwrap_or("gone");
                        info!(token = %buyonce_shared::token::mask(t), now = status, "race lost: the item moved on before the reaper's CAS");
                    }
                }
                report.race_lost += lost.len();
                moved
            }
            Err(e) => {
                warn!(error = %e, "batch reap failed; reaping row by row");
                let mut moved = Vec::new();
                for t in &tokens {
                    match self
                        .store
                        .reap_if_stale(t, self.config.reap_after, &reason)
                        .await
                    {
                        Ok(buyonce_shared::store::Cas::Applied(_)) => moved.push(t.clone()),
                        Ok(other) => {
                            info!(token = %buyonce_shared::token::mask(t), cas = %other, "race lost: the item moved on before the reaper's CAS");
                            report.race_lost += 1;
                        }
                        Err(e) => {
                            error!(token = %buyonce_shared::token::mask(t), error = %e, "reaping this item failed");
                            report.errored += 1;
                        }
                    }
                }
                moved
            }
        };
        report.reaped += reaped_tokens.len();
        let reaped: Vec<ItemRow> = candidates
            .iter()
            .filter(|c| reaped_tokens.contains(&c.token))
            .cloned()
            .collect();
        for item in &reaped {
            warn!(
                execution.id = %item.execution_id,
                item.rec_index = item.rec_index,
                token = %item.masked_token(),
                "{reason}"
            );
        }
        let executions: std::collections::BTreeSet<&str> =
            reaped.iter().map(|i| i.execution_id.as_str()).collect();
        for e in executions {
            let _ = self.store.finish_execution_if_done(e).await;
        }
        reaped
    }

    async fn redrive(&self, publisher: &Publisher, reaped: &[ItemRow]) -> usize {
        let mut by_execution: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        for item in reaped
            .iter()
            .filter(|i| i.attempts < self.config.max_attempts)
        {
            by_execution
                .entry(&item.execution_id)
                .or_default()
                .push(item.token.clone());
        }
        let mut count = 0;
        for (execution_id, tokens) in by_execution {
            match self
                .store
                .requeue(
                    execution_id,
                    &[ItemStatus::Failed],
                    Some(&tokens),
                    false,
                    Some(self.config.max_attempts),
                )
                .await
            {
                Ok(moved) => match relay::publish_items(&self.store, publisher, &moved).await {
                    Ok(outcome) => count += outcome.published.len(),
                    Err(e) => {
                        error!(error = %e, "re-driven items not marked published; the relay will publish them")
                    }
                },
                Err(e) => {
                    error!(execution.id = %execution_id, error = %e, "automatic re-drive failed")
                }
            }
        }
        count
    }

    /// Retries the token tag of bought-but-untagged EC2 items.
    pub async fn retag(&self) -> usize {
        let items = match self.store.tag_pending(self.config.batch).await {
            Ok(items) => items,
            Err(e) => {
                error!(error = %e, "cannot list tag_pending items");
                return 0;
            }
        };
        let mut done = 0;
        for item in items {
            let (Some(commitment_id), Ok(token)) = (
                item.commitment_id.clone(),
                IdempotencyToken::parse(&item.token),
            ) else {
                continue;
            };
            let Ok(rec) = serde_json::from_value::<Recommendation>(item.recommendation.clone())
            else {
                error!(token = %item.masked_token(), "stored recommendation unreadable; cannot retag");
                continue;
            };
            let Some(executor) = self.executors.get(&rec.service) else {
                continue;
            };
            match executor
                .retag(&rec, &token, &commitment_id, &self.config.tag_key)
                .await
            {
                Ok(true) => {
                    if self
                        .store
                        .clear_tag_pending(&item.token)
                        .await
                        .unwrap_or(false)
                    {
                        info!(token = %item.masked_token(), commitment.id = %commitment_id, "token tag written");
                        done += 1;
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    warn!(token = %item.masked_token(), commitment.id = %commitment_id, error = %e, "tag write still failing; will retry next sweep")
                }
            }
        }
        done
    }

    async fn finish_open_executions(&self) -> usize {
        let ids = match self
            .store
            .open_executions_without_live_items(self.config.batch)
            .await
        {
            Ok(ids) => ids,
            Err(e) => {
                error!(error = %e, "cannot list open executions");
                return 0;
            }
        };
        let mut n = 0;
        for id in ids {
            if let Ok(Some(status)) = self.store.finish_execution_if_done(&id).await {
                info!(execution.id = %id, status = status.as_str(), "execution finished (no live items left)");
                n += 1;
            }
        }
        n
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by running the suites with a pool of 2: the reaper holds its lock on one
    /// connection for the whole sweep, so with a pool of one every sweep waited 30 s for
    /// itself and failed.
    #[test]
    fn a_reaper_needs_at_least_two_database_connections() {
        let e = ReaperConfig::from_source(&[("BUYONCE_DATABASE_POOL_SIZE", "1")]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("BUYONCE_DATABASE_POOL_SIZE=\"1\" is invalid"),
            "{text}"
        );
        assert!(text.contains("the reaper needs at least 2"), "{text}");
        assert!(ReaperConfig::from_source(&[("BUYONCE_DATABASE_POOL_SIZE", "2")]).is_ok());
    }

    #[test]
    fn reap_after_falls_back_to_ten_minutes_on_bad_values() {
        assert_eq!(reap_after_from(None), DEFAULT_REAP_AFTER);
        assert_eq!(reap_after_from(Some("")), DEFAULT_REAP_AFTER);
        assert_eq!(reap_after_from(Some("garbage")), DEFAULT_REAP_AFTER);
        assert_eq!(reap_after_from(Some("0s")), DEFAULT_REAP_AFTER);
        assert_eq!(reap_after_from(Some("-5m")), DEFAULT_REAP_AFTER);
        assert_eq!(reap_after_from(Some("2h30m")), Duration::from_secs(9000));
        assert_eq!(reap_after_from(Some("15m")), Duration::from_secs(900));
    }

    #[test]
    fn canonical_reason() {
        assert_eq!(
            reap_reason(DEFAULT_REAP_AFTER),
            "reaped after 10m in running state — worker did not complete; safe to retry"
        );
    }

    #[test]
    fn summary_line() {
        let r = SweepReport {
            found: 3,
            reaped: 2,
            race_lost: 1,
            ..Default::default()
        };
        assert_eq!(
            r.to_string(),
            "found=3 reaped=2 race_lost=1 errored=0 republished=0 retagged=0"
        );
    }
}
