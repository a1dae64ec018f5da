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
//!   fails (a deadlock, a timeout, a constraint), the whole transaction rolled back, so nothing
//!   of it happened; every statement of the group then runs again alone, in its own
//!   transaction, and gets its own answer. A caller never learns of a write that did not
//!   commit, and no write of a failed group survives to be mistaken for another's.
//! * **Locks.** A group holds its rows' locks until its commit. The statements run in token
//!   order, so two groups (in one worker or in two) take the rows they share in the same order
//!   and cannot deadlock each other; a deadlock with some other multi-row statement (the
//!   reaper's batch) is detected by Postgres and ends in the fall-back above.
//! * **No waiting to form a group.** A statement that finds fewer than
//!   [`CONCURRENT_GROUPS`] groups in flight starts one at once, alone if it is alone: an idle
//!   fleet pays one autocommit statement, as before. Groups form only while others are being
//!   written, i.e. under load, when they are worth it.
//!
//! A group is written by a spawned task, so a caller that goes away (a drained consumer)
//! cannot cut another caller's statement off mid-transaction.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::oneshot;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::{Store, StoreError, StoreResult};

/// Groups written at the same time, each on its own connection.
pub(crate) const CONCURRENT_GROUPS: usize = 2;
/// The most statements in one group: bounds how long a group holds its row locks.
pub(crate) const MAX_GROUP: usize = 32;

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
    reply: oneshot::Sender<StoreResult<Vec<Row>>>,
}

/// The statements waiting, and how many groups are being written.
pub(crate) struct GroupQueue {
    /// `false`: every statement is written alone, at once (`BUYONCE_DATABASE_GROUP_COMMIT`).
    enabled: bool,
    state: Mutex<QueueState>,
    counters: GroupCounters,
}

impl GroupQueue {
    pub(crate) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            state: Mutex::default(),
            counters: GroupCounters::default(),
        }
    }
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
            let client = self.conn(what).await?;
            self.groups.count(1, 1, 0);
            let stmt = client.prepare_cached(sql).await?;
            return Ok(client.query(&stmt, &refs(&params)).await?);
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
            let start = state.writers < CONCURRENT_GROUPS;
            if start {
                state.writers += 1;
            }
            start
        };
        if start_writer {
            let store = self.clone();
            tokio::spawn(async move { store.write_groups().await });
        }
        answer
            .await
            .map_err(|_| StoreError::Invalid(format!("{what}: its group was abandoned")))?
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
        let mut client = match self.conn(what).await {
            Ok(c) => c,
            Err(e) => {
                let text = match &e {
                    StoreError::Pool(text) => text.clone(),
                    other => other.to_string(),
                };
                for p in group {
                    let _ = p.reply.send(Err(StoreError::Pool(text.clone())));
                }
                return;
            }
        };
        self.groups.count(group.len() as u64, 0, 0);
        if group.len() > 1 {
            match write_together(&mut client, &group).await {
                Ok(results) => {
                    self.groups.count(0, 1, 0);
                    for (p, rows) in group.into_iter().zip(results) {
                        let _ = p.reply.send(Ok(rows));
                    }
                    return;
                }
                Err(e) => {
                    self.groups.count(0, 0, 1);
                    tracing::debug!(error = %e, statements = group.len(), "a group transaction failed as a whole (rolled back); writing its statements one by one");
                }
            }
        }
        // Alone: each statement its own transaction, with its own answer.
        for p in group {
            self.groups.count(0, 1, 0);
            let result = write_alone(&client, &p).await;
            let _ = p.reply.send(result);
        }
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
    // Polled together, the queries go out back to back and Postgres runs them in this order.
    let results = futures::future::join_all(
        statements
            .iter()
            .zip(&params)
            .map(|(stmt, params)| tx.query(stmt, params)),
    )
    .await;
    let mut rows = Vec::with_capacity(results.len());
    for result in results {
        rows.push(result?);
    }
    tx.commit().await?;
    Ok(rows)
}

async fn write_alone(client: &deadpool_postgres::Object, p: &Pending) -> StoreResult<Vec<Row>> {
    let stmt = client.prepare_cached(p.sql).await?;
    Ok(client.query(&stmt, &refs(&p.params)).await?)
}
