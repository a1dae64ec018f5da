//! Whether Postgres answers this process, asked every [`PROBE_EVERY`] on a connection of its
//! own — a pool busy with purchases must not read as an outage, and a probe stuck on a
//! black-holed connection must not hold one of the pool's. The consumer stops taking
//! deliveries while it is down (and hands back what it had prefetched), `/readyz` and the
//! `buyonce_database_up` gauge report it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use buyonce_shared::config::DatabaseConfig;
use buyonce_shared::db;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::Metrics;

/// How often Postgres is asked.
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// How long one answer may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Failed probes in a row that make Postgres "down" (one slow answer is not an outage).
const DOWN_AFTER: u32 = 2;

/// The watcher's verdict, cheap to clone.
#[derive(Clone)]
pub struct DatabaseWatch {
    up: watch::Receiver<bool>,
}

impl DatabaseWatch {
    /// Starts probing until `shutdown`. Postgres counts as up until probes say otherwise (the
    /// worker only starts after connecting to it).
    pub fn spawn(
        config: &DatabaseConfig,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<DatabaseWatch> {
        let mut own = config.clone();
        own.pool_size = 1;
        let pool = db::pool(&own)?;
        let (tx, rx) = watch::channel(true);
        metrics.database_up.set(1);
        tokio::spawn(async move {
            let mut failures = 0u32;
            let mut down_since: Option<Instant> = None;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(PROBE_EVERY) => {}
                }
                match probe(&pool).await {
                    Ok(()) => {
                        failures = 0;
                        if let Some(since) = down_since.take() {
                            info!(down_for = ?since.elapsed(), "Postgres answers again; taking deliveries");
                            metrics.database_up.set(1);
                            let _ = tx.send(true);
                        }
                    }
                    Err(why) => {
                        failures += 1;
                        if failures == DOWN_AFTER {
                            warn!(error = %why, probes = failures, "Postgres unreachable: stopping deliveries and handing prefetched messages back to the broker until it answers");
                            down_since = Some(Instant::now());
                            metrics.database_up.set(0);
                            let _ = tx.send(false);
                        } else if failures > DOWN_AFTER && failures % 15 == 0 {
                            let since = down_since.map(|s| s.elapsed()).unwrap_or_default();
                            warn!(error = %why, down_for = ?since, "Postgres still unreachable");
                        }
                    }
                }
            }
        });
        Ok(DatabaseWatch { up: rx })
    }

    pub fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    /// Returns once Postgres is down (at once if it is now). Never, once the watcher stopped
    /// (at shutdown): a stopped watcher is no outage.
    pub async fn down(&mut self) {
        if self.up.wait_for(|up| !*up).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Returns once Postgres is up (at once if it is now). Never, once the watcher stopped.
    pub async fn up(&mut self) {
        if self.up.wait_for(|up| *up).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// One `SELECT 1` within [`PROBE_TIMEOUT`]. A connection that failed is thrown away, so the
/// next probe connects afresh instead of waiting on a dead socket.
async fn probe(pool: &deadpool_postgres::Pool) -> Result<(), String> {
    let attempt = async {
        let client = pool.get().await.map_err(|e| db::pool_error_text(&e))?;
        match client.simple_query("SELECT 1").await {
            Ok(_) => Ok(()),
            Err(e) => {
                let _ = deadpool_postgres::Object::take(client);
                Err(db::pg_error_text(&e))
            }
        }
    };
    match tokio::time::timeout(PROBE_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => {
            // The connection may be stuck on a black hole: start from a fresh one.
            pool.retain(|_, _| false);
            Err(format!("no answer within {PROBE_TIMEOUT:?}"))
        }
    }
}
