//! Group commit for the per-item compare-and-sets of the hot path (claim, pre-buy check,
//! record): statements that arrive while an earlier group is being written share one
//! transaction, so many items cost one commit (one WAL flush, one transaction start and end)
//! instead of one each.
//!
//! What does not change, and why that keeps the guarantees:
//!
//! * **The statements.** A grouped statement is the very same single-row compare-and-set, with
//!   the same parameters, that runs alone otherwise (`HOT_STATEMENTS`, whose plans
//!   `shared/tests/plans.rs` checks). Its outcome is read from its own rows, exactly as before;
//!   nothing is decided for a group as a whole. (A single `unnest` statement over the group
//!   would save more, but its plan is the planner's choice on tables without statistics — the
//!   issue measured one looping over all 10,000 live rows — and its per-row outcomes would be a
//!   new piece of SQL to trust.)
//! * **Atomicity decides the outcome.** A caller is answered only after `COMMIT` returned: a
//!   claim or a record it is told about is durable, as before. When any statement of a group
//!   fails (a deadlock, a lock or statement timeout, a constraint), the whole transaction rolled
//!   back, so nothing of it happened; each caller then writes its own statement alone, on its
//!   own connection, exactly as without group commit. A caller never learns of a write that did
//!   not commit, and no write of a failed group survives to be mistaken for another's.
//! * **Locks.** A group holds its rows' locks until its commit. The statements run in token
//!   order, so two groups (in one worker or in two) take the rows they share in the same order
//!   and cannot deadlock each other. A group waits at most [`GROUP_LOCK_TIMEOUT`] for a row
//!   someone else holds, then gives way (rolls back; see above): one locked row holds up only
//!   its own item, and in a lock cycle with a multi-row statement (the relay's
//!   `mark_published`, the reaper's batch, a cancel) the group yields before Postgres's
//!   deadlock check (after `deadlock_timeout`, 1 s by default) would fail that statement.
//! * **No waiting to form a group.** A statement that finds no group being written starts one
//!   at once, alone if it is alone (then `BEGIN`, the lock timeout and `COMMIT` cost two round
//!   trips more than a bare statement). Groups form from the statements that arrive while one is
//!   being written, i.e. under load, when they are worth it; a second writer (of at most
//!   [`CONCURRENT_GROUPS`]) starts once a full group waits.
//!
//! A group is written by a spawned task, so a caller that goes away (a drained consumer)
//! cannot cut another caller's statement off mid-transaction.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::oneshot;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::{Store, StoreError, StoreResult};

/// The most groups written at the same time, each on its own connection.
pub(crate) const CONCURRENT_GROUPS: usize = 2;
/// The most statements in one group: bounds how long a group holds its row locks.
pub(crate) const MAX_GROUP: usize = 32;
/// The longest a group waits for a row lock another transaction holds before it gives up
/// (rolls back; each statement is then written alone). Well under Postgres's default
/// `deadlock_timeout` (1 s): in a lock cycle with a multi-row statement of the relay, the
/// reaper or a cancel, the group gives way before the deadlock check would pick a victim, so
/// that statement is never the one failed.
pub(crate) const GROUP_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(200);

/// A parameter a grouped statement owns (it outlives its caller's borrow).
pub(crate) type Param = Box<dyn ToSql + Send + Sync>;

/// One statement waiting for a group.
struct Pending {
    /// Which store function it stands for (named in the pool's holders and in errors).
    what: &'static str,
    sql: &'static str,
    params: Vec<Param>,
    /// The item's token: groups lock their rows in this order.
    token: String,
    reply: oneshot::Sender<Answer>,
}

/// A group's answer to one of its statements.
enum Answer {
    /// The group committed; the statement's rows.
    Rows(Vec<Row>),
    /// The group failed as a whole and wrote nothing: write the statement alone.
    Alone(Vec<Param>),
}

/// The statements waiting, and how many groups are being written.
pub(crate) struct GroupQueue {
    /// `false`: every statement is written alone, at once (`BUYONCE_DATABASE_GROUP_COMMIT`).
    enabled: bool,
    state: Mutex<QueueState>,
    counters: GroupCounters,
}

#[derive(Default)]
struct QueueState {
    waiting: VecDeque<Pending>,
    writers: usize,
}

/// What the bench and tests read: how many statements went through groups, in how many
/// transactions.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GroupStats {
    /// Statements written.
    pub statements: u64,
    /// Transactions (a statement alone is one).
    pub transactions: u64,
    /// Groups that failed as a whole and were written again statement by statement.
    pub fallbacks: u64,
}

impl GroupQueue {
    pub(crate) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            state: Mutex::default(),
            counters: GroupCounters::default(),
        }
    }

    /// Adds to the counters [`Store::group_stats`] reads.
    fn count(&self, statements: u64, transactions: u64, fallbacks: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.counters.statements.fetch_add(statements, Relaxed);
        self.counters.transactions.fetch_add(transactions, Relaxed);
        self.counters.fallbacks.fetch_add(fallbacks, Relaxed);
    }
}

#[derive(Default)]
struct GroupCounters {
    statements: std::sync::atomic::AtomicU64,
    transactions: std::sync::atomic::AtomicU64,
    fallbacks: std::sync::atomic::AtomicU64,
}

impl Store {
    /// With `false`, every hot-path statement commits on its own (as before group commit).
    pub fn with_group_commit(mut self, enabled: bool) -> Self {
        self.groups = std::sync::Arc::new(GroupQueue::new(enabled));
        self
    }

    /// Runs one single-row statement for `token` as part of a group transaction and returns its
    /// rows once the transaction committed.
    pub(crate) async fn grouped(
        &self,
        what: &'static str,
        sql: &'static str,
        token: &str,
        params: Vec<Param>,
    ) -> StoreResult<Vec<Row>> {
        if !self.groups.enabled {
            self.groups.count(1, 0, 0);
            return self.write_alone(what, sql, &params).await;
        }
        let (reply, answer) = oneshot::channel();
        let start_writer = {
            let mut state = self
                .groups
                .state
                .lock()
                .map_err(|_| StoreError::Invalid("group queue poisoned".into()))?;
            state.waiting.push_back(Pending {
                what,
                sql,
                params,
                token: token.to_owned(),
                reply,
            });
            // One writer while it keeps up: the statements that wait for it make its next group
            // bigger (measured: one writer carried SP+EC2 at 638 items/s, two at 502). A second
            // starts only once a full group waits (a group stuck on a lock, or a burst).
            let start = state.writers == 0
                || (state.writers < CONCURRENT_GROUPS && state.waiting.len() >= MAX_GROUP);
            if start {
                state.writers += 1;
            }
            start
        };
        if start_writer {
            let store = self.clone();
            tokio::spawn(async move { store.write_groups().await });
        }
        match answer.await {
            Ok(Answer::Rows(rows)) => Ok(rows),
            Ok(Answer::Alone(params)) => self.write_alone(what, sql, &params).await,
            Err(_) => Err(StoreError::Invalid(format!(
                "{what}: its group was abandoned"
            ))),
        }
    }

    /// How many grouped statements went through how many transactions, since start.
    pub fn group_stats(&self) -> GroupStats {
        use std::sync::atomic::Ordering::Relaxed;
        GroupStats {
            statements: self.groups.counters.statements.load(Relaxed),
            transactions: self.groups.counters.transactions.load(Relaxed),
            fallbacks: self.groups.counters.fallbacks.load(Relaxed),
        }
    }

    /// A writer: takes what is waiting, writes it as one group, and again, until nothing waits.
    async fn write_groups(self) {
        loop {
            let group: Vec<Pending> = {
                let Ok(mut state) = self.groups.state.lock() else {
                    return;
                };
                if state.waiting.is_empty() {
                    // Decided under the lock a caller pushes under: a statement pushed after
                    // this sees one writer fewer and starts its own.
                    state.writers -= 1;
                    return;
                }
                let n = state.waiting.len().min(MAX_GROUP);
                state.waiting.drain(..n).collect()
            };
            self.write_group(group).await;
        }
    }

    async fn write_group(&self, mut group: Vec<Pending>) {
        group.sort_by(|a, b| a.token.cmp(&b.token));
        let what = if group.len() == 1 {
            group[0].what
        } else {
            "group"
        };
        self.groups.count(group.len() as u64, 0, 0);
        let written = match self.conn(what).await {
            Ok(mut client) => write_together(&mut client, &group).await,
            Err(e) => Err(e),
        };
        match written {
            Ok(results) => {
                self.groups.count(0, 1, 0);
                for (p, rows) in group.into_iter().zip(results) {
                    let _ = p.reply.send(Answer::Rows(rows));
                }
            }
            Err(e) => {
                // Nothing of the group happened. Each caller writes its own statement on its
                // own connection, exactly as without group commit: one row lock held elsewhere
                // then holds up only the item it belongs to.
                self.groups.count(0, 0, 1);
                tracing::debug!(error = %e, statements = group.len(), "a group transaction failed as a whole (rolled back); each statement is written on its own");
                for p in group {
                    let _ = p.reply.send(Answer::Alone(p.params));
                }
            }
        }
    }

    /// One statement in its own transaction on a connection of its own (the path without group
    /// commit, and a failed group's fall-back).
    async fn write_alone(
        &self,
        what: &'static str,
        sql: &'static str,
        params: &[Param],
    ) -> StoreResult<Vec<Row>> {
        let client = self.conn(what).await?;
        self.groups.count(0, 1, 0);
        let stmt = client.prepare_cached(sql).await?;
        Ok(client.query(&stmt, &refs(params)).await?)
    }
}

fn refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// The group in one transaction, its statements pipelined in the group's (token) order; every
/// row of every statement, or the first error (the transaction is then rolled back as the
/// `Transaction` drops).
async fn write_together(
    client: &mut deadpool_postgres::Object,
    group: &[Pending],
) -> StoreResult<Vec<Vec<Row>>> {
    let mut statements = Vec::with_capacity(group.len());
    for p in group {
        statements.push(client.prepare_cached(p.sql).await?);
    }
    let tx = client.transaction().await?;
    let params: Vec<_> = group.iter().map(|p| refs(&p.params)).collect();
    // Polled together, the commands go out back to back and Postgres runs them in this order:
    // first the group's lock timeout, then the statements.
    let lock_timeout = format!(
        "SET LOCAL lock_timeout = {}",
        GROUP_LOCK_TIMEOUT.as_millis()
    );
    let (limited, results) = futures::future::join(
        tx.batch_execute(&lock_timeout),
        futures::future::join_all(
            statements
                .iter()
                .zip(&params)
                .map(|(stmt, params)| tx.query(stmt, params)),
        ),
    )
    .await;
    limited?;
    let mut rows = Vec::with_capacity(results.len());
    for result in results {
        rows.push(result?);
    }
    tx.commit().await?;
    Ok(rows)
}
