//! All SQL, one module per table. Every status change is a compare-and-set whose doc comment
//! says which states it moves between; a CAS that matches nothing is told apart as *not found*
//! or *not in the expected status* (a race lost), and a database error is an `Err`.

pub mod commitments;
pub mod control;
pub mod dead_letters;
pub mod executions;
mod group;
pub mod items;
pub mod locks;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use deadpool_postgres::{Object, Pool};
use tokio_postgres::Row;

pub use executions::{ExecutionRow, ExecutionStatus};
pub use group::GroupStats;
pub use items::{ItemRow, ItemStatus};

/// The statements an item runs on its way through the fleet (submit and the reaper aside), by
/// name: `shared/tests/plans.rs` EXPLAINs each on an un-analyzed 10,000-item execution and
/// fails unless it is an index lookup bounded by one item (a batch for `mark_published`).
#[cfg(feature = "testing")]
pub const HOT_STATEMENTS: &[(&str, &str)] = &[
    ("claim", items::claim::CLAIM_SQL),
    ("claim_miss", items::claim::CLAIM_MISS_SQL),
    ("heartbeat", items::claim::HEARTBEAT_SQL),
    ("confirm_before_buy", items::claim::CONFIRM_BEFORE_BUY_SQL),
    ("set_provider_state", items::claim::SET_PROVIDER_STATE_SQL),
    ("record_success", items::claim::RECORD_SUCCESS_SQL),
    ("release_for_retry", items::claim::RELEASE_FOR_RETRY_SQL),
    ("finish_unsuccessful", items::claim::FINISH_UNSUCCESSFUL_SQL),
    ("item_status", items::ITEM_STATUS),
    ("live_item", executions::LIVE_ITEM_SQL),
    ("mark_published", items::queries::MARK_PUBLISHED_SQL),
    ("attributed_among", commitments::ATTRIBUTED_AMONG_SQL),
];

/// A database failure (the pool could not give a connection, or a statement failed).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Postgres unavailable: {0}")]
    Pool(String),
    #[error("Postgres: {0}")]
    Db(String, #[source] tokio_postgres::Error),
    #[error("{0}")]
    Invalid(String),
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Pool(crate::db::pool_error_text(&e))
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Db(crate::db::pg_error_text(&e), e)
    }
}

impl StoreError {
    /// Whether retrying later may help (connection trouble), as opposed to a statement that will
    /// keep failing. Both are transient for a purchase: nothing was bought.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Pool(_) => true,
            StoreError::Db(_, e) => crate::db::is_connection_error(e),
            StoreError::Invalid(_) => false,
        }
    }

    /// Whether the same statement may succeed later unchanged: Postgres unreachable
    /// ([`StoreError::is_unavailable`]), or the statement cancelled (statement timeout), a
    /// serialization failure or deadlock, the server shutting down or short of resources
    /// (SQLSTATE classes 08, 40, 53, 57). Not a constraint violation or a bug, which fail again
    /// every time.
    pub fn is_retryable(&self) -> bool {
        self.is_unavailable()
            || matches!(self, StoreError::Db(_, e) if e.code().is_some_and(|code| {
                ["08", "40", "53", "57"]
                    .iter()
                    .any(|class| code.code().starts_with(class))
            }))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The outcome of a compare-and-set.
#[derive(Debug, Clone, PartialEq)]
pub enum Cas<T> {
    /// The row was in an allowed status and was moved.
    Applied(T),
    /// No such row.
    NotFound,
    /// The row exists but was in `actual`, not an allowed status: someone else moved it first.
    Conflict { actual: String },
}

impl<T> Cas<T> {
    pub fn is_applied(&self) -> bool {
        matches!(self, Cas::Applied(_))
    }
}

impl<T> fmt::Display for Cas<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cas::Applied(_) => f.write_str("applied"),
            Cas::NotFound => f.write_str("not found"),
            Cas::Conflict { actual } => write!(f, "not in expected status (is {actual})"),
        }
    }
}

/// Why a compare-and-set matched nothing: no such row (`NotFound`), or the status the row
/// has (`Conflict`). `status_sql` selects one row's status by `$1`. It runs on the connection
/// the CAS ran on: no code path in the store waits for a second pooled connection while
/// holding one (with every connection held by such a path, each waits for one that never
/// comes).
pub(crate) async fn cas_miss<T>(
    client: &deadpool_postgres::ClientWrapper,
    status_sql: &str,
    key: &str,
) -> StoreResult<Cas<T>> {
    let stmt = client.prepare_cached(status_sql).await?;
    let row = client.query_opt(&stmt, &[&key]).await?;
    Ok(match row {
        None => Cas::NotFound,
        Some(r) => Cas::Conflict {
            actual: r.try_get(0)?,
        },
    })
}

/// Reads a text column holding a validated value (a token, an execution ID) with `parse`. A
/// value that does not parse is [`StoreError::Invalid`] naming the column, never a panic: the
/// rest of the code then takes the typed value as given.
pub(crate) fn parsed<T, E: fmt::Display>(
    row: &Row,
    idx: usize,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> StoreResult<T> {
    let raw: String = row.try_get(idx)?;
    parse(&raw).map_err(|e| invalid_column(row, idx, e))
}

/// [`parsed`] for a nullable column.
pub(crate) fn parsed_opt<T, E: fmt::Display>(
    row: &Row,
    idx: usize,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> StoreResult<Option<T>> {
    let raw: Option<String> = row.try_get(idx)?;
    raw.map(|raw| parse(&raw).map_err(|e| invalid_column(row, idx, e)))
        .transpose()
}

/// `stored token is invalid: …`, with the column's name.
pub(crate) fn invalid_column(row: &Row, idx: usize, e: impl fmt::Display) -> StoreError {
    let column = row.columns().get(idx).map_or("?", |c| c.name());
    StoreError::Invalid(format!("stored {column} is invalid: {e}"))
}

/// The store: a pool and the SQL. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    /// Who holds each checked-out connection, since when: when the pool runs dry, the error
    /// says where the connections are instead of only "timeout".
    held: Arc<Mutex<HashMap<u64, Holder>>>,
    next_id: Arc<AtomicU64>,
    /// The hot path's compare-and-sets waiting to share a transaction ([`group`]).
    groups: Arc<group::GroupQueue>,
}

/// One checked-out connection: which store function, since when, in which task.
struct Holder {
    what: &'static str,
    since: Instant,
    task: Option<tokio::task::Id>,
}

/// A pooled connection checked out by a named store function.
pub(crate) struct Conn {
    object: Object,
    id: u64,
    held: Arc<Mutex<HashMap<u64, Holder>>>,
}

impl std::ops::Deref for Conn {
    type Target = Object;
    fn deref(&self) -> &Object {
        &self.object
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Object {
        &mut self.object
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Ok(mut held) = self.held.lock() {
            held.remove(&self.id);
        }
    }
}

impl Store {
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            held: Arc::default(),
            next_id: Arc::default(),
            groups: Arc::new(group::GroupQueue::new(true)),
        }
    }

    /// Checks out a connection for `what` (a store function's name).
    ///
    /// A task that already holds one must not wait for another: with every connection held
    /// by such tasks, each waits forever for one more (the pool deadlocks itself). Debug
    /// builds (the tests) panic on it, so a new nested path fails the suite that reaches it;
    /// release builds log it.
    pub(crate) async fn conn(&self, what: &'static str) -> StoreResult<Conn> {
        let task = tokio::task::try_id();
        if let Some(task) = task {
            let nested = self
                .held
                .lock()
                .ok()
                .and_then(|held| held.values().find(|h| h.task == Some(task)).map(|h| h.what));
            if let Some(outer) = nested {
                if cfg!(debug_assertions) {
                    panic!("store: {what} waits for a second connection while {outer} holds one in the same task");
                }
                tracing::error!(what, outer, "store: a task waits for a second database connection while holding one; the pool can deadlock");
            }
        }
        let object = match self.pool.get().await {
            Ok(o) => o,
            Err(e) => {
                let mut text = crate::db::pool_error_text(&e);
                if matches!(e, deadpool_postgres::PoolError::Timeout(_)) {
                    text.push_str(&format!(" (connections held by: {})", self.holders()));
                }
                return Err(StoreError::Pool(text));
            }
        };
        let id = self.register(Holder {
            what,
            since: Instant::now(),
            task,
        });
        Ok(Conn {
            object,
            id,
            held: self.held.clone(),
        })
    }

    /// Lists a checked-out connection among the holders; the ID unregisters it.
    fn register(&self, holder: Holder) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut held) = self.held.lock() {
            held.insert(id, holder);
        }
        id
    }

    fn unregister(&self, id: u64) {
        if let Ok(mut held) = self.held.lock() {
            held.remove(&id);
        }
    }

    /// `claim×3 (longest 1.2s), heartbeat×1 (0.0s)`.
    pub fn holders(&self) -> String {
        let Ok(held) = self.held.lock() else {
            return "unknown".into();
        };
        let mut by: std::collections::BTreeMap<&str, (usize, f64)> = Default::default();
        for h in held.values() {
            let e = by.entry(h.what).or_default();
            e.0 += 1;
            e.1 = e.1.max(h.since.elapsed().as_secs_f64());
        }
        if by.is_empty() {
            return "nobody in this process".into();
        }
        by.iter()
            .map(|(w, (n, longest))| format!("{w}×{n} (longest {longest:.1}s)"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// `SELECT 1`, for readiness probes.
    pub async fn ping(&self) -> StoreResult<()> {
        let client = self.conn("ping").await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }
}
