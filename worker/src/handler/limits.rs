//! What bounds purchases in one worker process: the per-account limiter (one throttled account
//! cannot take every slot) and the fleet-wide offering locks (EC2/Redshift attribution), held
//! as Postgres advisory locks through the store.
//!
//! An offering-lock holder keeps its connection for the whole purchase and needs more
//! connections meanwhile (claim heartbeat, intent, recording). So a process never lets lock
//! holders and pollers take more than [`OfferingLocks::new`]'s share of its pool: with many
//! distinct offerings in flight they would otherwise take every connection and wait forever
//! for one more.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use buyonce_shared::store::locks::{AdvisoryLock, LockName};
use buyonce_shared::store::Store;
use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};

use crate::error::PurchaseError;

/// Limits in-flight purchases per cloud account.
pub struct AccountLimiter {
    limit: usize,
    semaphores: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl AccountLimiter {
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            semaphores: Mutex::default(),
        }
    }

    /// A slot for `account`, held as long as the permit lives (`None` if the map is poisoned).
    pub async fn acquire(&self, account: &str) -> Option<OwnedSemaphorePermit> {
        let sem = {
            let mut map = self.semaphores.lock().ok()?;
            map.entry(account.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.limit)))
                .clone()
        };
        sem.acquire_owned().await.ok()
    }
}

/// Held while one offering is being bought; give it back with [`OfferingLock::release`]. If
/// it is dropped instead (a panic, a cancelled task), the store's lock unlocks in the
/// background or closes its connection — a pooled connection never goes back holding it.
pub struct OfferingLock {
    lock: AdvisoryLock,
    /// The in-process queue for the same key: only one task per process polls Postgres for a
    /// key, the others wait here without holding a connection.
    _local: OwnedMutexGuard<()>,
    /// This process's share of the pool for locks, given back only after the unlock.
    slot: OwnedSemaphorePermit,
}

/// How long the check before a buy call may take: well inside the time in which the server
/// could drop a partitioned session (`BUYONCE_DATABASE_TCP_TIMEOUT`, at least 10 s).
const CONFIRM_WITHIN: Duration = Duration::from_secs(2);

impl OfferingLock {
    /// That the lock's session is alive and still holds it, asked of the server within
    /// [`CONFIRM_WITHIN`]; anything else is "do not buy".
    pub async fn confirm(&self) -> Result<(), PurchaseError> {
        match tokio::time::timeout(CONFIRM_WITHIN, self.lock.confirm()).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(PurchaseError::Fenced(
                "the offering lock's Postgres session no longer holds the lock; not buying".into(),
            )),
            Ok(Err(e)) => Err(PurchaseError::Fenced(format!(
                "cannot confirm the offering lock, not buying: {e}"
            ))),
            Err(_) => Err(PurchaseError::Fenced(format!(
                "the offering lock's Postgres session did not answer within {CONFIRM_WITHIN:?}; \
                 not buying"
            ))),
        }
    }

    /// Unlocks, then gives back the pool share.
    pub async fn release(self) {
        let Self { lock, _local, slot } = self;
        lock.release().await;
        drop(slot);
    }
}

/// Takes offering locks for one process, leaving part of its pool to everything else.
#[derive(Clone)]
pub struct OfferingLocks {
    store: Store,
    slots: Arc<Semaphore>,
}

/// Waits at most this long for the lock before giving up (transient: retried later).
const MAX_WAIT: Duration = Duration::from_secs(120);

impl OfferingLocks {
    /// At most half the pool (at least one connection) holds or polls offering locks.
    pub fn new(store: Store) -> Self {
        let share = (store.pool().status().max_size / 2).max(1);
        Self {
            store,
            slots: Arc::new(Semaphore::new(share)),
        }
    }

    /// Takes the lock for `key`, polling with a short backoff. Between tries the connection
    /// goes back to the pool, so waiters never starve the holder of connections. Queues first
    /// on the key (no connection held), then for one of the process's slots.
    pub async fn acquire(&self, key: &str) -> Result<OfferingLock, PurchaseError> {
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
            self.slots.clone().acquire_owned(),
        )
        .await
        .map_err(|_| busy())?
        .map_err(|_| PurchaseError::transient("offering locks closed"))?;
        let mut wait = Duration::from_millis(5);
        loop {
            match self.store.try_advisory_lock(LockName::Offering(key)).await {
                Ok(Some(lock)) => {
                    return Ok(OfferingLock {
                        lock,
                        _local: local,
                        slot,
                    })
                }
                Ok(None) => {}
                Err(e) => return Err(PurchaseError::transient(format!("offering lock: {e}"))),
            }
            if started.elapsed() > MAX_WAIT {
                return Err(busy());
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(250));
        }
    }
}

/// Per-key in-process mutexes (entries are tiny and bounded by the number of offerings).
fn local_mutex(key: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCAL: OnceLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let map = LOCAL.get_or_init(Default::default);
    let mut map = map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    map.entry(key.to_owned()).or_default().clone()
}
