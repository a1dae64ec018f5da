//! Fleet-wide serialisation of purchases of one offering (EC2/Redshift attribution), with a
//! Postgres session advisory lock held on a dedicated pooled connection.

use std::time::{Duration, Instant};

use deadpool_postgres::{Object, Pool};

use crate::executors::PurchaseError;

/// Held while one offering is being bought. Released on drop: normally by unlocking, and if
/// the unlock cannot run (a panic, a cancelled task) by closing the connection, which makes
/// Postgres release the lock — a pooled connection never goes back holding it.
pub struct OfferingLock {
    conn: Option<Object>,
    key: String,
}

/// Waits at most this long for the lock before giving up (transient: retried later).
const MAX_WAIT: Duration = Duration::from_secs(120);

const LOCK_SQL: &str =
    "SELECT pg_try_advisory_lock(hashtext('buyonce.offering.' || current_schema() || '.' || $1)::bigint)";
const UNLOCK_SQL: &str =
    "SELECT pg_advisory_unlock(hashtext('buyonce.offering.' || current_schema() || '.' || $1)::bigint)";

impl OfferingLock {
    /// Takes the lock for `key`, polling with a short backoff.
    pub async fn acquire(pool: &Pool, key: &str) -> Result<Self, PurchaseError> {
        let conn = pool.get().await.map_err(|e| {
            PurchaseError::transient(format!("offering lock: Postgres unavailable: {e}"))
        })?;
        let started = Instant::now();
        let mut wait = Duration::from_millis(5);
        loop {
            let row = conn
                .query_one(LOCK_SQL, &[&key])
                .await
                .map_err(|e| PurchaseError::transient(format!("offering lock: {e}")))?;
            if row.get::<_, bool>(0) {
                return Ok(Self {
                    conn: Some(conn),
                    key: key.to_owned(),
                });
            }
            if started.elapsed() > MAX_WAIT {
                return Err(PurchaseError::transient(format!(
                    "offering lock {key} busy for more than {MAX_WAIT:?}"
                )));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(200));
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
