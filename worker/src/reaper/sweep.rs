//! The steps of one sweep: reap stale `running` items, re-drive them (`--redrive-failed`),
//! retry pending EC2 tags and finish executions with no live item; and the report they fill.

use std::fmt;
use std::time::Duration;

use anyhow::Context;
use buyonce_shared::amqp::Publisher;
use buyonce_shared::duration::format_duration;
use buyonce_shared::relay;
use buyonce_shared::store::{ItemRow, ItemStatus};
use buyonce_shared::{ExecutionId, IdempotencyToken};
use tracing::{error, info, warn};

use super::Reaper;

/// The canonical, human-readable reason written on a reaped item.
pub fn reap_reason(reap_after: Duration) -> String {
    format!(
        "reaped after {} in running state — worker did not complete; safe to retry",
        format_duration(reap_after)
    )
}

/// Counters of one sweep.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Stale `running` items found.
    pub found: usize,
    pub reaped: usize,
    /// The row moved on (or vanished) between the select and the CAS.
    pub race_lost: usize,
    /// Database errors on individual rows.
    pub errored: usize,
    /// Unpublished `queued` items republished.
    pub republished: usize,
    /// Tags written for `tag_pending` items.
    pub retagged: usize,
    /// Reaped items put back in the queue (`--redrive-failed`).
    pub redriven: usize,
    /// Executions whose aggregate status was set.
    pub executions_finished: usize,
}

impl fmt::Display for SweepReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "found={} reaped={} race_lost={} errored={} republished={} retagged={}",
            self.found, self.reaped, self.race_lost, self.errored, self.republished, self.retagged
        )?;
        if self.redriven > 0 {
            write!(f, " redriven={}", self.redriven)?;
        }
        Ok(())
    }
}

impl Reaper {
    /// Selects stale `running` items batch by batch (keyset pagination, so rows that failed to
    /// reap are not selected again in this sweep) and reaps them; returns the reaped items.
    pub async fn reap_stale(&self, report: &mut SweepReport) -> anyhow::Result<Vec<ItemRow>> {
        let mut all_reaped = Vec::new();
        let mut cursor = None;
        // Bounded: at most this many batches per sweep, so one sweep cannot run forever.
        for _ in 0..10_000 {
            let candidates = self
                .store
                .stale_running(self.config.reap_after, self.config.batch, cursor.take())
                .await
                .context("selecting stale running items")?;
            let Some(last) = candidates.last() else { break };
            cursor = last.heartbeat_at.map(|at| (at, last.token.clone()));
            let full = candidates.len() as i64 == self.config.batch;
            all_reaped.extend(self.reap_candidates(&candidates, report).await);
            if !full || cursor.is_none() {
                break;
            }
        }
        Ok(all_reaped)
    }

    /// CASes each candidate `running → failed`; counts reaped, race_lost and errored. A batch
    /// statement first; if it fails, row by row so one bad row cannot stop the others.
    pub async fn reap_candidates(
        &self,
        candidates: &[ItemRow],
        report: &mut SweepReport,
    ) -> Vec<ItemRow> {
        report.found += candidates.len();
        let reason = reap_reason(self.config.reap_after);
        let tokens: Vec<IdempotencyToken> = candidates.iter().map(|c| c.token.clone()).collect();
        let reaped_tokens: Vec<IdempotencyToken> = match self
            .store
            .reap_batch(&tokens, self.config.reap_after, &reason)
            .await
        {
            Ok(rows) => {
                let moved: Vec<IdempotencyToken> = rows.into_iter().map(|(t, _)| t).collect();
                let lost: Vec<IdempotencyToken> = tokens
                    .iter()
                    .filter(|t| !moved.contains(t))
                    .cloned()
                    .collect();
                if !lost.is_empty() {
                    let now = self.store.statuses_of(&lost).await.unwrap_or_default();
                    for t in &lost {
                        let status = now
                            .iter()
                            .find(|(tok, _)| tok == t)
                            .map(|(_, s)| s.as_str())
                            .unwrap_or("gone");
                        info!(token = %t, now = status, "race lost: the item moved on before the reaper's CAS");
                    }
                }
                report.race_lost += lost.len();
                moved
            }
            Err(e) => {
                warn!(error = %e, "batch reap failed; reaping row by row");
                let mut moved = Vec::new();
                for t in &tokens {
                    match self
                        .store
                        .reap_if_stale(t, self.config.reap_after, &reason)
                        .await
                    {
                        Ok(buyonce_shared::store::Cas::Applied(_)) => moved.push(t.clone()),
                        Ok(other) => {
                            info!(token = %t, cas = %other, "race lost: the item moved on before the reaper's CAS");
                            report.race_lost += 1;
                        }
                        Err(e) => {
                            error!(token = %t, error = %e, "reaping this item failed");
                            report.errored += 1;
                        }
                    }
                }
                moved
            }
        };
        report.reaped += reaped_tokens.len();
        let reaped: Vec<ItemRow> = candidates
            .iter()
            .filter(|c| reaped_tokens.contains(&c.token))
            .cloned()
            .collect();
        for item in &reaped {
            warn!(
                execution.id = %item.execution_id,
                item.rec_index = item.rec_index.get(),
                token = %item.masked_token(),
                "{reason}"
            );
        }
        let executions: std::collections::BTreeSet<&ExecutionId> =
            reaped.iter().map(|i| &i.execution_id).collect();
        for e in executions {
            let _ = self.store.finish_execution_if_done(e).await;
        }
        reaped
    }

    pub(super) async fn redrive(&self, publisher: &Publisher, reaped: &[ItemRow]) -> usize {
        let mut by_execution: std::collections::BTreeMap<&ExecutionId, Vec<IdempotencyToken>> =
            Default::default();
        for item in reaped
            .iter()
            .filter(|i| i.attempts < self.config.max_attempts)
        {
            by_execution
                .entry(&item.execution_id)
                .or_default()
                .push(item.token.clone());
        }
        let mut count = 0;
        for (execution_id, tokens) in by_execution {
            match self
                .store
                .requeue(
                    execution_id,
                    &[ItemStatus::Failed],
                    Some(&tokens),
                    false,
                    Some(self.config.max_attempts),
                )
                .await
            {
                Ok(moved) => match relay::publish_items(&self.store, publisher, &moved).await {
                    Ok(outcome) => count += outcome.published.len(),
                    Err(e) => {
                        error!(error = %e, "re-driven items not marked published; the relay will publish them")
                    }
                },
                Err(e) => {
                    error!(execution.id = %execution_id, error = %e, "automatic re-drive failed")
                }
            }
        }
        count
    }

    /// Retries the token tag of bought-but-untagged EC2 items.
    pub async fn retag(&self) -> usize {
        let items = match self.store.tag_pending(self.config.batch).await {
            Ok(items) => items,
            Err(e) => {
                error!(error = %e, "cannot list tag_pending items");
                return 0;
            }
        };
        let mut done = 0;
        for item in items {
            let Some(commitment_id) = &item.commitment_id else {
                continue;
            };
            let Some(executor) = self.executors.get(&item.recommendation.service) else {
                continue;
            };
            match executor
                .retag(
                    &item.recommendation,
                    &item.token,
                    commitment_id,
                    &self.config.tag_key,
                )
                .await
            {
                Ok(true) => {
                    if self
                        .store
                        .clear_tag_pending(&item.token)
                        .await
                        .unwrap_or(false)
                    {
                        info!(token = %item.masked_token(), commitment.id = %commitment_id, "token tag written");
                        done += 1;
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    warn!(token = %item.masked_token(), commitment.id = %commitment_id, error = %e, "tag write still failing; will retry next sweep")
                }
            }
        }
        done
    }

    pub(super) async fn finish_open_executions(&self) -> usize {
        let ids = match self
            .store
            .open_executions_without_live_items(self.config.batch)
            .await
        {
            Ok(ids) => ids,
            Err(e) => {
                error!(error = %e, "cannot list open executions");
                return 0;
            }
        };
        let mut n = 0;
        for id in ids {
            if let Ok(Some(status)) = self.store.finish_execution_if_done(&id).await {
                info!(execution.id = %id, status = status.as_str(), "execution finished (no live items left)");
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::config::DEFAULT_REAP_AFTER;

    #[test]
    fn canonical_reason() {
        assert_eq!(
            reap_reason(DEFAULT_REAP_AFTER),
            "reaped after 10m in running state — worker did not complete; safe to retry"
        );
    }

    #[test]
    fn summary_line() {
        let r = SweepReport {
            found: 3,
            reaped: 2,
            race_lost: 1,
            ..Default::default()
        };
        assert_eq!(
            r.to_string(),
            "found=3 reaped=2 race_lost=1 errored=0 republished=0 retagged=0"
        );
    }
}
