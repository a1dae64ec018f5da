//! Postgres session advisory locks, per schema: the single-reaper lock and the fleet-wide
//! offering locks (EC2/Redshift attribution). A lock lives on a connection of its own for as
//! long as it is held, while its holder keeps using the store through other connections: so
//! the held connection is listed among the store's holders (pool diagnostics) but is not a
//! "second connection in the same task" — bounding how many of them a process holds is the
//! caller's job (the worker's offering locks take at most half the pool).

use deadpool_postgres::Object;

use super::{Holder, Store, StoreResult};

/// Which lock. The key strings (and so the lock IDs) are the ones every earlier version used,
/// so old and new processes exclude each other during a rolling deploy.
#[derive(Debug, Clone, Copy)]
pub enum LockName<'a> {
    /// One reaper sweeps a schema at a time.
    Reaper,
    /// Purchases of one (account, region, offering) are serialised across the fleet.
    Offering(&'a str),
}

impl LockName<'_> {
    /// `$1 || current_schema() || $2` is hashed into the lock ID.
    fn parts(&self) -> (&'static str, String) {
        match self {
            LockName::Reaper => ("buyonce.reaper.", String::new()),
            LockName::Offering(key) => ("buyonce.offering.", format!(".{key}")),
        }
    }

    fn what(&self) -> &'static str {
        match self {
            LockName::Reaper => "reaper-lock",
            LockName::Offering(_) => "offering-lock",
        }
    }
}

const TRY_LOCK_SQL: &str =
    "SELECT pg_try_advisory_lock(hashtext($1 || current_schema() || $2)::bigint)";
const UNLOCK_SQL: &str =
    "SELECT pg_advisory_unlock(hashtext($1 || current_schema() || $2)::bigint)";

/// A held advisory lock. [`AdvisoryLock::release`] unlocks and pools the connection; dropped
/// without it (a panic, a cancelled task) — or when the unlock fails — the connection is closed
/// instead, which makes Postgres release the lock: a pooled connection never goes back holding one.
pub struct AdvisoryLock {
    conn: Option<Object>,
    parts: (&'static str, String),
    id: u64,
    store: Store,
}

impl Store {
    /// Tries once to take `name`; `None` when another session holds it.
    pub async fn try_advisory_lock(&self, name: LockName<'_>) -> StoreResult<Option<AdvisoryLock>> {
        let object = self.pool.get().await?;
        let parts = name.parts();
        let stmt = object.prepare_cached(TRY_LOCK_SQL).await?;
        let row = object.query_one(&stmt, &[&parts.0, &parts.1]).await?;
        if !row.try_get::<_, bool>(0)? {
            return Ok(None);
        }
        let id = self.register(Holder {
            what: name.what(),
            since: std::time::Instant::now(),
            // Not the task's: holding a lock while using the store is the point.
            task: None,
        });
        Ok(Some(AdvisoryLock {
            conn: Some(object),
            parts,
            id,
            store: self.clone(),
        }))
    }
}

/// Session advisory locks are only ever released by an unlock or by the session's end: a
/// granted one of our backend is the one we took (a lock connection holds no other).
const HELD_SQL: &str = "SELECT EXISTS (SELECT 1 FROM pg_locks
                          WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted)";

impl AdvisoryLock {
    /// Whether the session still holds the lock, asked of the server on the lock's own
    /// connection (an error when that connection is gone).
    pub async fn confirm(&self) -> StoreResult<bool> {
        let conn = self
            .conn
            .as_ref()
            .ok_or_else(|| super::StoreError::Invalid("advisory lock already released".into()))?;
        let stmt = conn.prepare_cached(HELD_SQL).await?;
        Ok(conn.query_one(&stmt, &[]).await?.try_get(0)?)
    }

    /// Unlocks; the connection goes back to the pool only if the unlock ran.
    pub async fn release(mut self) {
        if let Some(conn) = self.conn.take() {
            unlock(conn, &self.parts).await;
        }
    }
}

async fn unlock(conn: Object, parts: &(&'static str, String)) {
    let unlocked = match conn.prepare_cached(UNLOCK_SQL).await {
        Ok(stmt) => conn.query_one(&stmt, &[&parts.0, &parts.1]).await.is_ok(),
        Err(_) => false,
    };
    if !unlocked {
        let _ = Object::take(conn);
    }
}

impl Drop for AdvisoryLock {
    fn drop(&mut self) {
        self.store.unregister(self.id);
        let Some(conn) = self.conn.take() else { return };
        // Dropped without `release`: unlock in the background if there is a runtime to do it,
        // else close the connection (Postgres frees the lock with the session).
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let parts = std::mem::take(&mut self.parts.1);
                let prefix = self.parts.0;
                handle.spawn(async move { unlock(conn, &(prefix, parts)).await });
            }
            Err(_) => {
                let _ = Object::take(conn);
            }
        }
    }
}
