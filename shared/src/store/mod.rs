//! All SQL, one module per table. Every status change is a compare-and-set whose doc comment
//! says which states it moves between; a CAS that matches nothing is told apart as *not found*
//! or *not in the expected status* (a race lost), and a database error is an `Err`.

pub mod commitments;
pub mod control;
pub mod dead_letters;
pub mod executions;
pub mod items;

use std::fmt;

use deadpool_postgres::Pool;

pub use executions::{ExecutionRow, ExecutionStatus};
pub use items::{ItemRow, ItemStatus};

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

/// The store: a pool and the SQL. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

impl Store {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// `SELECT 1`, for readiness probes.
    pub async fn ping(&self) -> StoreResult<()> {
        let client = self.pool.get().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }
}
