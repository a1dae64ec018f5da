//! Fleet-wide serialisation of purchases of one offering (EC2/Redshift attribution), with a
//! Postgres session advisory lock held on a dedicated pooled connection.
//!
//! A holder keeps its connection for the whole purchase and needs more connections meanwhile
//! (claim heartbeat, intent, recording). So a process never lets lock holders and pollers take
//! more than [`OfferingLocks::new`]'s share of its pool: with many distinct offerings in flight
//! they would otherwise take every connection and wait forever for one more.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use deadpool_postgres::{Object, Pool};
use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};

use crate::executors::PurchaseError;

/// Held while one offering is being bought. Released on drop: normally by unlocking, and if
/// the unlock cannot run (a panic, a cancelled task) by closing the connection, which makes
/// Postgres release the lock — a pooled connection never goes back holding it.
pub struct OfferingLock {
    conn: Option<Object>,
    key: String,
    /// The in-process queue for the same key: only one task per process polls Postgres for a
    /// key, the others wait here without holding a connection.
    _local: OwnedMutexGuard<()>,
    /// This process's share of the pool for locks, held as long as the connection (given back
    /// only after the unlock, see `Drop`).
    slot: Option<OwnedSemaphorePermit>,
}

/// Takes offering locks for one process, leaving part of its pool to everything else.
#[derive(Clone)]
pub struct OfferingLocks {
    pool: Pool,
    slots: Arc<Semaphore>,
}

impl OfferingLocks {
    /// At most half the pool (at least one connection) holds or polls offering locks.
    pub fn new(pool: Pool) -> Self {
        let share = (pool.status().max_size / 2).max(1);
        Self {
            pool,
            slots: Arc::new(Semaphore::new(share)),
        }
    }

    /// Takes the lock for `key`; see [`OfferingLock::acquire`].
    pub async fn acquire(&self, key: &str) -> Result<OfferingLock, PurchaseError> {
        OfferingLock::acquire(&self.pool, &self.slots, key).await
    }
}

/// Per-key in-process mutexes (entries are tiny and bounded by the number of offerings).
fn local_mutex(key: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCAL: OnceLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let map = LOCAL.get_or_init(Default::default);
    let mut map = map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    map.entry(key.to_owned()).or_default().clone()
}

/// Waits at most this long for the lock before giving up (transient: retried later).
const MAX_WAIT: Duration = Duration::from_secs(120);

const LOCK_SQL: &str =
    "SELECT pg_try_advisory_lock(hashtext('buyonce.offering.' || current_schema() || '.' || $1)::bigint)";
const UNLOCK_SQL: &str =
    "SELECT pg_advisory_unlock(hashtext('buyonce.offering.' || current_schema() || '.' || $1)::bigint)";

impl OfferingLock {
    /// Takes the lock for `key`, polling with a short backoff. Between tries the connection
    /// goes back to the pool, so waiters never starve the holder of connections. Queues first
    /// on the key (no connection held), then for one of `slots`.
    async fn acquire(
        pool: &Pool,
        slots: &Arc<Semaphore>,
        key: &str,
    ) -> Result<Self, PurchaseError> {
        let started = Instant::now();
        let busy = || {
            PurchaseError::transient(format!(
                "offering lock {key} busy for more than {MAX_WAIT:?}"
            ))
        };
        let local = tokio::time::timeout(MAX_WAIT, local_mutex(key).lock_owned())
            .await
            .map_err(|_| busy())?;
        let slot = tokio::time::timeout(
            MAX_WAIT.saturating_sub(started.elapsed()),
            slots.clone().acquire_owned(),
        )
        .await
        .map_err(|_| busy())?
        .map_err(|_| PurchaseError::transient("offering locks closed"))?;
        let mut wait = Duration::from_millis(5);
        loop {
            let conn = pool.get().await.map_err(|e| {
                PurchaseError::transient(format!("offering lock: Postgres unavailable: {e}"))
            })?;
            let row = conn
                .query_one(LOCK_SQL, &[&key])
                .await
                .map_err(|e| PurchaseError::transient(format!("offering lock: {e}")))?;
            if row.get::<_, bool>(0) {
                return Ok(Self {
                    conn: Some(conn),
                    key: key.to_owned(),
                    _local: local,
                    slot: Some(slot),
                });
            }
            drop(conn);
            if started.elapsed() > MAX_WAIT {
                return Err(busy());
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(250));
        }
    }
}

impl Drop for OfferingLock {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        let key = std::mem::take(&mut self.key);
        let slot = self.slot.take();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if conn.query_one(UNLOCK_SQL, &[&key]).await.is_err() {
                        // Could not unlock: drop the connection instead of pooling it.
                        let _ = Object::take(conn);
                    }
                    drop(slot);
                });
            }
            Err(_) => {
                let _ = Object::take(conn);
            }
        }
    }
}
