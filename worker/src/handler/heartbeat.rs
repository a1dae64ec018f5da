//! The heartbeat that keeps a live purchase from being reaped or taken over.

use std::future::Future;
use std::time::Duration;

use buyonce_shared::store::Store;
use buyonce_shared::IdempotencyToken;
use tracing::{debug, warn, Instrument};
use uuid::Uuid;

/// Runs `fut`, refreshing the item's heartbeat every `interval` so the reaper never reaps a
/// live purchase.
///
/// The heartbeat runs as its own task. Awaiting it inside a `select!` branch next to `fut`
/// would stop polling `fut` while the heartbeat waits for a pooled connection — and when every
/// connection is held by such a suspended `fut` (mid-query), nothing moves until the pool's
/// wait timeout: a fleet-wide stall under load.
pub(super) async fn with_heartbeat<F: Future>(
    store: &Store,
    token: &IdempotencyToken,
    claim_id: Uuid,
    interval: Duration,
    fut: F,
) -> F::Output {
    let store = store.clone();
    let token = token.clone();
    let beats = tokio::spawn(
        async move {
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                match store.heartbeat(&token, claim_id).await {
                    Ok(true) => debug!("heartbeat"),
                    Ok(false) => warn!("heartbeat found the claim gone; the purchase continues and will be recorded"),
                    Err(e) => warn!(error = %e, "heartbeat failed"),
                }
            }
        }
        .in_current_span(),
    );
    // Stops the heartbeats however this future ends (completion or cancellation).
    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _beats = AbortOnDrop(beats);
    fut.await
}
