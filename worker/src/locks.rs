//! Fleet-wide serialisation of purchases of one offering (EC2/Redshift attribution), with a
//! Postgres session advisory lock held on a dedicated pooled connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use deadpool_postgres::{Object, Pool};
use tokio::sync::OwnedMutexGuard;

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
    /// goes back to the pool, so waiters never starve the holder of connections.
    pub async fn acquire(pool: &Pool, key: &str) -> Result<Self, PurchaseError> {
        let started = Instant::now();
        let local = tokio::time::timeout(MAX_WAIT, local_mutex(key).lock_owned())
            .await
            .map_err(|_| {
                PurchaseError::transient(format!(
                    "offering lock {key} busy for more than {MAX_WAIT:?}"
                ))
            })?;
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
                });
            }
            drop(conn);
            if started.elapsed() > MAX_WAIT {
                return Err(PurchaseError::transient(format!(
                    "offering lock {key} busy for more than {MAX_WAIT:?}"
                )));
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
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if conn.query_one(UNLOCK_SQL, &[&key]).await.is_err() {
                        // Could not unlock: drop the connection instead of pooling it.
                        let _ = Object::take(conn);
                    }
                });
            }
            Err(_) => {
                let _ = Object::take(conn);
            }
        }
    }
}
