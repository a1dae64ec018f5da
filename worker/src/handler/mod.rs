//! Decide: one message in, one [`Outcome`] out. No broker here — the consumer maps outcomes to
//! ack / retry queue / dead letter in one place, and tests call [`Handler::handle`] directly.
//!
//! Per message: decode strictly → check the token derives from (lineage, index) → claim in
//! Postgres (authorises against the approved item) → buy through the service's executor while
//! heartbeating → record the commitment and the item's success in one statement → done.
//!
//! Beside the decision: `context` (the purchase scope an executor buys through, which gives back
//! the offering lock and the budget it took), `heartbeat`, and [`limits`] (the per-account
//! limiter and the offering locks).

mod context;
mod heartbeat;
pub mod limits;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use buyonce_shared::store::items::{Claim, Recorded, Recording};
use buyonce_shared::store::{Cas, ItemStatus, Store, StoreResult};
use buyonce_shared::{DeadLetterReason, ExecutionId, IdempotencyToken, PurchaseMessage, Service};
use rand::Rng;
use tracing::{debug, error, info, warn, Instrument};
use uuid::Uuid;

use self::context::{Bought, PurchaseScope};
use self::heartbeat::with_heartbeat;
use self::limits::{AccountLimiter, OfferingLocks};
use crate::error::{PermanentKind, PurchaseError};
use crate::executors::{Executor, How, PurchaseRequest, Purchased};
use crate::metrics::Metrics;

/// What to do with a delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Ack. `note` says why (purchased, already-succeeded, cancelled, ...).
    Done { note: &'static str },
    /// Ack: this delivery ended the item without a purchase, in `status` (a dry run marks it
    /// `failed` with what it would have bought). Not `Done`, which reads as "bought or nothing
    /// to do".
    Ended {
        status: ItemStatus,
        note: &'static str,
    },
    /// Park the message in retry wait queue `level` for `after`, then ack.
    Retry {
        level: usize,
        after: Duration,
        reason: &'static str,
    },
    /// Publish to the dead-letter exchange with the reason headers, then ack.
    Dead {
        reason: DeadLetterReason,
        error: String,
    },
}

/// Knobs of the handler (from [`crate::config::WorkerConfig`]).
#[derive(Debug, Clone)]
pub struct HandlerSettings {
    pub max_attempts: i32,
    pub heartbeat_interval: Duration,
    pub stale_after: Duration,
    pub dry_run: bool,
    pub daily_budget_usd: Option<f64>,
    pub tag_key: String,
    pub retry_delays: Vec<Duration>,
    pub per_account_concurrency: usize,
    /// How long after an ambiguous AWS purchase call a retry that finds nothing waits before
    /// it may buy again (`BUYONCE_AWS_SETTLE_WINDOW`).
    pub aws_settle_window: Duration,
    /// The same for Azure (`BUYONCE_AZURE_SETTLE_WINDOW`).
    pub azure_settle_window: Duration,
}

impl HandlerSettings {
    /// The settle window of `provider`'s purchases.
    pub fn settle_window(&self, provider: buyonce_shared::Provider) -> Duration {
        match provider {
            buyonce_shared::Provider::Aws => self.aws_settle_window,
            buyonce_shared::Provider::Azure => self.azure_settle_window,
        }
    }
}

/// Handles purchase messages. Cheap to share (`Arc`).
pub struct Handler {
    store: Store,
    executors: HashMap<Service, Arc<dyn Executor>>,
    settings: HandlerSettings,
    accounts: AccountLimiter,
    offering_locks: OfferingLocks,
    metrics: Arc<Metrics>,
}

impl Handler {
    pub fn new(
        store: Store,
        executors: HashMap<Service, Arc<dyn Executor>>,
        settings: HandlerSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        let accounts = AccountLimiter::new(settings.per_account_concurrency);
        Self {
            offering_locks: OfferingLocks::new(store.clone()),
            store,
            executors,
            settings,
            accounts,
            metrics,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn executors(&self) -> &HashMap<Service, Arc<dyn Executor>> {
        &self.executors
    }

    /// A retry after about `base` × 2^(n), on the wait-queue level that fits, with jitter
    /// (50–100 % of the level's delay) so retries of many items spread out.
    fn retry(&self, level: usize, reason: &'static str) -> Outcome {
        let delays = &self.settings.retry_delays;
        let level = level.min(delays.len().saturating_sub(1));
        let base = delays.get(level).copied().unwrap_or(Duration::from_secs(1));
        let factor: f64 = rand::rng().random_range(0.5..=1.0);
        Outcome::Retry {
            level,
            after: base.mul_f64(factor),
            reason,
        }
    }

    /// A retry after at least `min` (for "owner alive", "paused"): the first level ≥ `min`.
    fn retry_after_at_least(&self, min: Duration, reason: &'static str) -> Outcome {
        let delays = &self.settings.retry_delays;
        let level = delays
            .iter()
            .position(|d| *d >= min)
            .unwrap_or(delays.len().saturating_sub(1));
        Outcome::Retry {
            level,
            after: delays.get(level).copied().unwrap_or(min).max(min),
            reason,
        }
    }

    /// The retry after `release_for_retry`: at `level` once the item is back in the queue; when
    /// the release failed (Postgres out of reach), the item stays running with this claim and
    /// the message comes back once the heartbeat is stale, when the retry may take it over.
    fn retry_released(
        &self,
        released: StoreResult<Cas<()>>,
        level: usize,
        reason: &'static str,
    ) -> Outcome {
        if let Err(e) = released {
            warn!(error = %e, "could not release the item for retry");
            return self.retry_after_at_least(self.settings.stale_after, reason);
        }
        self.retry(level, reason)
    }

    /// Handles one message body.
    pub async fn handle(&self, body: &[u8]) -> Outcome {
        let msg = match PurchaseMessage::decode(body) {
            Ok(m) => m,
            Err(e) => {
                warn!(reason = %e.reason(), error = %e, "refusing undecodable message");
                return Outcome::Dead {
                    reason: e.reason(),
                    error: e.to_string(),
                };
            }
        };
        let span = tracing::info_span!(
            "item",
            execution.id = %msg.execution_id,
            item.rec_index = %msg.rec_index,
            token = %msg.token.mask(),
            service = %msg.recommendation.service,
        );
        self.handle_message(msg).instrument(span).await
    }

    async fn handle_message(&self, msg: PurchaseMessage) -> Outcome {
        if msg.token != msg.expected_token() {
            warn!("token does not derive from (lineage_key, rec_index); refusing");
            return Outcome::Dead {
                reason: DeadLetterReason::TokenMismatch,
                error: format!(
                    "message token {} is not SHA-256(lineage_key:rec_index) = {}",
                    msg.token.mask(),
                    msg.expected_token().mask()
                ),
            };
        }
        let _account_slot = self.accounts.acquire(&msg.recommendation.account).await;

        let claim = match self.store.claim(&msg, self.settings.stale_after).await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot claim: database unavailable; retrying later");
                return self.retry(0, "database");
            }
        };
        let (claim_id, attempts, intent, ambiguous_at) = match claim {
            Claim::Claimed {
                claim_id,
                attempts,
                provider_state,
                ambiguous_at,
            } => (claim_id, attempts, provider_state, ambiguous_at),
            Claim::UnknownItem => {
                warn!("no such execution item in Postgres; refusing");
                return Outcome::Dead {
                    reason: DeadLetterReason::UnknownItem,
                    error: "no approved execution item matches this message".into(),
                };
            }
            Claim::TokenMismatch => {
                warn!("token differs from the stored one; refusing");
                return Outcome::Dead {
                    reason: DeadLetterReason::TokenMismatch,
                    error: "message token differs from the token stored for this item".into(),
                };
            }
            Claim::RecommendationMismatch => {
                warn!("recommendation differs from the approved one; refusing");
                return Outcome::Dead {
                    reason: DeadLetterReason::RecommendationMismatch,
                    error:
                        "message recommendation differs from the approved one stored in Postgres"
                            .into(),
                };
            }
            Claim::Cancelled => {
                info!("execution or item cancelled; nothing to buy");
                return Outcome::Done { note: "cancelled" };
            }
            Claim::AlreadySucceeded { commitment_id } => {
                debug!(commitment.id = ?commitment_id, "already bought; no provider call");
                return Outcome::Done {
                    note: "already-succeeded",
                };
            }
            Claim::Ended { status } => {
                info!(
                    status = status.as_str(),
                    "item already ended; re-drive is an operator action"
                );
                return Outcome::Done { note: "ended" };
            }
            Claim::Paused => {
                self.metrics.paused.set(1);
                debug!("fleet paused; message parked");
                return self.retry_after_at_least(Duration::from_secs(1), "paused");
            }
            Claim::OwnedElsewhere => {
                // Another worker holds a live claim. If it dies, its heartbeat goes stale and this
                // copy takes over; if it succeeds, this copy finds the item succeeded.
                debug!("item owned by a live claim; checking back after the stale threshold");
                return self.retry_after_at_least(self.settings.stale_after, "owned-elsewhere");
            }
        };
        self.metrics.paused.set(0);

        let service = msg.recommendation.service;
        let Some(executor) = self.executors.get(&service).cloned() else {
            let error = format!("no executor configured for {service} (is Azure configured?)");
            self.end(&msg.token, claim_id, ItemStatus::Failed, &error, false)
                .await;
            return Outcome::Dead {
                reason: DeadLetterReason::PermanentFailure,
                error,
            };
        };

        let scope = PurchaseScope::new(
            &self.store,
            &msg.token,
            claim_id,
            &msg.recommendation,
            &self.settings,
            &self.offering_locks,
            ambiguous_at,
        );
        let req = PurchaseRequest {
            token: &msg.token,
            rec: &msg.recommendation,
            execution_id: msg.execution_id.as_str(),
            rec_index: msg.rec_index.as_i32(),
            intent: intent.as_ref(),
            ambiguous_at,
        };
        let started = Instant::now();
        let in_flight = InFlight::new(&self.metrics.in_flight);
        let result = with_heartbeat(
            &self.store,
            &msg.token,
            claim_id,
            self.settings.heartbeat_interval,
            executor.purchase(&req, &scope),
        )
        .await;
        drop(in_flight);
        let labels = |outcome: &str| {
            vec![
                ("provider", service.provider().as_str().to_owned()),
                ("service", service.as_str().to_owned()),
                ("outcome", outcome.to_owned()),
            ]
        };
        self.metrics
            .purchase_seconds
            .get_or_create(&vec![("service", service.as_str().to_owned())])
            .observe(started.elapsed().as_secs_f64());

        match result {
            Ok(purchased) => {
                self.metrics
                    .purchases
                    .get_or_create(&labels(purchased.how.as_str()))
                    .inc();
                let outcome = self.record(&msg, claim_id, &purchased).await;
                scope.close(Bought::Maybe).await;
                outcome
            }
            Err(e @ (PurchaseError::Transient(_) | PurchaseError::Ambiguous(_))) => {
                // Ambiguous: the purchase call may have bought. Recorded on the item, so that
                // every later attempt that finds nothing waits out the settle window first.
                let ambiguous = matches!(e, PurchaseError::Ambiguous(_));
                let error = if ambiguous {
                    format!("purchase outcome unknown: {}", e.message())
                } else {
                    e.message()
                };
                self.metrics
                    .purchases
                    .get_or_create(&labels(if ambiguous { "ambiguous" } else { "transient" }))
                    .inc();
                scope.close(Bought::Maybe).await;
                if attempts >= self.settings.max_attempts {
                    let error = format!("gave up after {attempts} attempts; last error: {error}");
                    warn!(%error, "attempts exhausted; item is dead");
                    self.end(&msg.token, claim_id, ItemStatus::Dead, &error, ambiguous)
                        .await;
                    return Outcome::Dead {
                        reason: DeadLetterReason::MaxAttempts,
                        error,
                    };
                }
                if ambiguous {
                    warn!(attempt = attempts, %error, "the purchase call may have gone through; the retry looks for it first");
                } else {
                    warn!(attempt = attempts, %error, "transient failure; will retry");
                }
                let released = self
                    .store
                    .release_for_retry(&msg.token, claim_id, &error, false, ambiguous)
                    .await;
                self.retry_released(released, (attempts.max(1) - 1) as usize, "transient")
            }
            Err(PurchaseError::Permanent { kind, message }) => {
                self.metrics
                    .purchases
                    .get_or_create(&labels("permanent"))
                    .inc();
                scope.close(Bought::Nothing).await;
                warn!(kind = ?kind, error = %message, "permanent failure; nothing bought");
                self.end(&msg.token, claim_id, ItemStatus::Failed, &message, false)
                    .await;
                Outcome::Dead {
                    reason: if kind == PermanentKind::SpendCap {
                        DeadLetterReason::SpendCap
                    } else {
                        DeadLetterReason::PermanentFailure
                    },
                    error: message,
                }
            }
            Err(PurchaseError::OverBudget(message)) => {
                self.metrics
                    .purchases
                    .get_or_create(&labels("over-budget"))
                    .inc();
                scope.close(Bought::Maybe).await;
                info!(%message, "daily budget exhausted; item waits");
                let _ = self
                    .store
                    .release_for_retry(&msg.token, claim_id, &message, true, false)
                    .await;
                self.retry(usize::MAX, "budget")
            }
            Err(PurchaseError::Settling { until, message }) => {
                self.metrics
                    .purchases
                    .get_or_create(&labels("settling"))
                    .inc();
                scope.close(Bought::Maybe).await;
                // Looked at again at least every longest retry delay: a longer per-message TTL
                // would hold up the messages behind it in that wait queue.
                let longest = self
                    .settings
                    .retry_delays
                    .last()
                    .copied()
                    .unwrap_or(Duration::from_secs(600));
                let wait = (until - chrono::Utc::now())
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    .min(longest);
                info!(until = %until.to_rfc3339(), %message, "nothing found yet after an ambiguous purchase; waiting for the settle window before buying again");
                let _ = self
                    .store
                    .release_for_retry(
                        &msg.token,
                        claim_id,
                        &format!(
                            "waiting until {} (settle window): {message}",
                            until.to_rfc3339()
                        ),
                        true,
                        false,
                    )
                    .await;
                self.retry_after_at_least(wait.max(Duration::from_millis(100)), "settling")
            }
            Err(PurchaseError::Paused) => {
                scope.close(Bought::Maybe).await;
                self.metrics.paused.set(1);
                let _ = self
                    .store
                    .release_for_retry(
                        &msg.token,
                        claim_id,
                        "fleet paused before the purchase",
                        true,
                        false,
                    )
                    .await;
                self.retry_after_at_least(Duration::from_secs(1), "paused")
            }
            Err(PurchaseError::Fenced(message)) => {
                self.metrics
                    .purchases
                    .get_or_create(&labels("fenced"))
                    .inc();
                scope.close(Bought::Nothing).await;
                warn!(%message, "offering lock not confirmed before the buy call; nothing bought, retrying without counting the attempt");
                let released = self
                    .store
                    .release_for_retry(&msg.token, claim_id, &message, true, false)
                    .await;
                self.retry_released(released, 0, "fenced")
            }
            Err(PurchaseError::DryRun(message)) => {
                self.metrics
                    .purchases
                    .get_or_create(&labels("dry-run"))
                    .inc();
                scope.close(Bought::Maybe).await;
                let error = format!(
                    "dry run, nothing bought: would buy {message}; re-drive with dry run off to buy"
                );
                info!(%error, "dry run");
                self.end(&msg.token, claim_id, ItemStatus::Failed, &error, false)
                    .await;
                Outcome::Ended {
                    status: ItemStatus::Failed,
                    note: "dry-run",
                }
            }
        }
    }

    /// Records the commitment and the item's success, retrying while Postgres is unreachable
    /// (or cancels, deadlocks, shuts down): the commitment exists whatever Postgres says, so
    /// giving up would leave a bought item for the reaper to mark failed. The heartbeat keeps
    /// the claim meanwhile; if this worker stays cut off long enough for its consume channel to
    /// close, a redelivered copy finds the commitment through the guard (or this write lands
    /// first). A write that lands after the reaper marked the item failed still makes it
    /// `succeeded` (`Store::record_success` moves any status but `succeeded`). An error that
    /// would only repeat (a constraint, a bug) is tried [`RECORD_TRIES_ON_ERROR`] times.
    async fn record(
        &self,
        msg: &PurchaseMessage,
        claim_id: Uuid,
        purchased: &Purchased,
    ) -> Outcome {
        let service = msg.recommendation.service;
        let recorded = Recorded {
            commitment_id: purchased.commitment_id.clone(),
            cost_usd: purchased.cost_usd,
            how: purchased.how.as_str(),
            tag_pending: purchased.tag_pending,
            // Attributed by snapshot: the commitment carries nothing of this item's, so another
            // item's recovery may have taken it while this record was delayed (a partition
            // outlasting the offering lock's session).
            exclusive: matches!(service, Service::Ec2 | Service::Redshift)
                && purchased.how != How::Guard,
        };
        let write = async {
            let mut wait = Duration::from_millis(100);
            let mut failures = 0u32;
            loop {
                match self.store.record_success(&msg.token, &recorded).await {
                    Ok(written) => {
                        if failures > 0 {
                            info!(failures, "the delayed write of the purchase went through");
                        }
                        return Ok(written);
                    }
                    Err(e) if !e.is_retryable() && failures + 1 >= RECORD_TRIES_ON_ERROR => {
                        return Err(e)
                    }
                    Err(e) => {
                        failures += 1;
                        if failures <= 3 || failures % 20 == 0 {
                            warn!(error = %e, failures, retry_in = ?wait, commitment.id = %purchased.commitment_id, "bought, but recording failed; retrying the write");
                        }
                        let jitter = rand::rng().random_range(0.5..=1.0);
                        tokio::time::sleep(wait.mul_f64(jitter)).await;
                        wait = (wait * 2).min(RECORD_RETRY_MAX);
                    }
                }
            }
        };
        let written = with_heartbeat(
            &self.store,
            &msg.token,
            claim_id,
            self.settings.heartbeat_interval,
            write,
        )
        .await;
        match written {
            Ok(Recording::Recorded(execution_id)) => {
                info!(
                    commitment.id = %purchased.commitment_id,
                    how = purchased.how.as_str(),
                    cost_usd = ?purchased.cost_usd,
                    tag_pending = purchased.tag_pending,
                    "commitment recorded"
                );
                self.finish_execution(&execution_id).await;
                Outcome::Done {
                    note: purchased.how.as_str(),
                }
            }
            Ok(Recording::AlreadySucceeded) => Outcome::Done {
                note: "already-succeeded",
            },
            Ok(Recording::NotFound) => {
                warn!("bought, but the item row is gone; the commitment is in the provider only");
                Outcome::Done {
                    note: "item-missing",
                }
            }
            Ok(Recording::TakenBy(other)) => {
                // Identical commitments of one offering are interchangeable: the other item
                // keeps this one, and this item looks again — its retry finds its own
                // purchase if there is one, else buys after the settle window.
                warn!(
                    commitment.id = %purchased.commitment_id,
                    how = purchased.how.as_str(),
                    taken_by = %other,
                    "another item recorded this commitment as its own meanwhile; leaving it to that item and retrying this one as ambiguous"
                );
                let error = format!(
                    "commitment {} was recorded for another item ({other}) while this attempt's record was delayed; looking again",
                    purchased.commitment_id
                );
                let released = self
                    .store
                    .release_for_retry(&msg.token, claim_id, &error, true, true)
                    .await;
                self.retry_released(released, 0, "record-conflict")
            }
            Err(e) => {
                error!(error = %e, commitment.id = %purchased.commitment_id, "bought, but recording failed for good; the item stays running for a redelivery, whose guard finds the commitment");
                self.retry_after_at_least(self.settings.stale_after, "record-failed")
            }
        }
    }

    async fn end(
        &self,
        token: &IdempotencyToken,
        claim_id: Uuid,
        status: ItemStatus,
        error: &str,
        ambiguous: bool,
    ) {
        match self
            .store
            .finish_unsuccessful(token, claim_id, status, error, ambiguous)
            .await
        {
            Ok(Cas::Applied(execution_id)) => self.finish_execution(&execution_id).await,
            Ok(other) => debug!(cas = %other, "item moved on meanwhile"),
            Err(e) => warn!(error = %e, "could not mark the item {}", status.as_str()),
        }
    }

    async fn finish_execution(&self, execution_id: &ExecutionId) {
        match self.store.finish_execution_if_done(execution_id).await {
            Ok(Some(status)) => {
                info!(execution.id = %execution_id, status = status.as_str(), "execution finished")
            }
            Ok(None) => {}
            // The reaper fixes the aggregate later.
            Err(e) => warn!(error = %e, "could not update the execution's status"),
        }
    }
}

/// The longest pause between two tries of recording a purchase.
const RECORD_RETRY_MAX: Duration = Duration::from_secs(5);
/// Tries of a record whose error would only repeat (not a connection problem).
const RECORD_TRIES_ON_ERROR: u32 = 5;

/// Counts one purchase in the `in_flight` gauge for as long as it lives, so a panicking
/// executor does not leave the gauge one too high.
struct InFlight<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl<'a> InFlight<'a> {
    fn new(gauge: &'a prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
