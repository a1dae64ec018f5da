//! The HTTP server: one listener for every AWS service, Azure and the admin API.
//!
//! fakecloud runs its own accept loop on hyper instead of `axum::serve` for one reason: a
//! commit-then-fail fault must be able to close the connection without any response, which only
//! the connection owner can do. A handler marks its response with [`DropConnection`] and the loop
//! turns that into a service error, on which hyper closes the socket.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::Utc;
use http::StatusCode;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use rand::RngCore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use super::catalog::{Catalog, Offerings};
use super::config::FakeCloudConfig;
use super::faults::{roll, CommitFailure, Decision, FaultEngine, Faults, OpKind};
use super::identity::Identities;
use super::ledger::{LedgerEntry, Store};
use super::realism::Realism;
use super::{admin, aws, azure};

/// Largest request body accepted; the purchase APIs never come close.
const MAX_BODY: usize = 1 << 20;
/// How long shutdown waits for in-flight requests.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// State shared by all requests.
#[derive(Debug)]
pub struct Shared {
    /// Immutable configuration.
    pub config: FakeCloudConfig,
    /// Offerings.
    pub catalog: Offerings,
    /// Credentials and tokens.
    pub identities: Identities,
    store: Mutex<Store>,
    faults: Mutex<FaultEngine>,
    realism: Mutex<RealismState>,
}

/// The realism knobs and the counter behind their seeded decisions.
#[derive(Debug)]
struct RealismState {
    realism: Realism,
    purchases: u64,
}

impl Shared {
    /// Builds the state for `config`.
    pub fn new(config: FakeCloudConfig) -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self {
            catalog: Offerings::new(config.catalog.clone().unwrap_or_else(Catalog::builtin)),
            identities: Identities::new(key),
            store: Mutex::new(Store::new(config.seed)),
            faults: Mutex::new(FaultEngine::new(config.faults.clone(), config.seed)),
            realism: Mutex::new(RealismState {
                realism: config.realism.clone(),
                purchases: 0,
            }),
            config,
        }
    }

    /// The state lock. A panic while holding it cannot leave it half-updated in a way that
    /// matters to tests, so a poisoned lock is simply taken over.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fault_engine(&self) -> MutexGuard<'_, FaultEngine> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides the faults of one call: the fault rules, then for purchases the realism's
    /// random losses and payment failures (seeded, so a run replays).
    pub fn decide(&self, operation: &str, kind: OpKind) -> Decision {
        let mut decision = self.fault_engine().decide(operation, kind);
        if kind == OpKind::Purchase {
            let mut state = self.realism.lock().unwrap_or_else(|e| e.into_inner());
            let n = state.purchases;
            state.purchases += 1;
            let seed = self.config.seed ^ 0x5EA1_1575;
            if roll(seed, 1, n) < state.realism.lost_response_probability {
                decision.commit_then_fail.get_or_insert(if n % 2 == 0 {
                    CommitFailure::ServerError
                } else {
                    CommitFailure::DropConnection
                });
            }
            if roll(seed, 2, n) < state.realism.payment_failed_probability {
                decision
                    .provisioning_failure
                    .get_or_insert(Some("payment-failed".to_owned()));
            }
        }
        decision
    }

    /// The realism knobs now.
    pub fn realism(&self) -> Realism {
        self.realism
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .realism
            .clone()
    }

    /// Replaces the realism knobs.
    pub fn set_realism(&self, realism: Realism) {
        self.realism
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .realism = realism;
    }

    /// Replaces the faults and restarts their counters.
    pub fn set_faults(&self, faults: Faults) {
        *self.fault_engine() = FaultEngine::new(faults, self.config.seed);
    }

    /// The active faults, with the effective seed.
    pub fn faults(&self) -> Faults {
        self.fault_engine().faults()
    }

    /// Every commitment ever created, oldest first.
    pub fn ledger(&self) -> Vec<LedgerEntry> {
        let now = Utc::now();
        self.store()
            .commitments()
            .iter()
            .map(|c| c.to_entry(now, &self.config.idempotency_tag_key))
            .collect()
    }

    /// Forgets commitments, sessions and call counts, and restores the startup faults.
    pub fn reset(&self) {
        *self.store() = Store::new(self.config.seed);
        self.set_faults(self.config.faults.clone());
    }

    /// Overrides the state of a commitment (e.g. `Cancelled`, `retired`); false if unknown.
    pub fn set_state(&self, commitment_id: &str, state: &str) -> Option<LedgerEntry> {
        let mut store = self.store();
        let commitment = store.by_id_mut(commitment_id)?;
        commitment.state_override = Some(state.to_string());
        if let super::ledger::Detail::Azure(order) = &mut commitment.detail {
            order.etag += 1;
        }
        Some(commitment.to_entry(Utc::now(), &self.config.idempotency_tag_key))
    }
}

/// Marks a response whose connection must be closed instead of answered.
#[derive(Debug, Clone, Copy)]
pub struct DropConnection;

impl DropConnection {
    /// A response carrying the mark.
    pub fn response() -> Response {
        let mut response = StatusCode::INTERNAL_SERVER_ERROR.into_response();
        response.extensions_mut().insert(DropConnection);
        response
    }
}

#[derive(Debug, thiserror::Error)]
#[error("connection dropped by a commit-then-fail fault")]
struct ConnectionDropped;

/// The whole application: admin routes, then AWS and Azure on every other path.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .nest("/_fakecloud", admin::routes())
        .fallback(cloud)
        .with_state(shared)
}

async fn cloud(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response(),
    };
    if azure::is_azure_path(parts.uri.path()) {
        azure::handle(&shared, &parts, body).await
    } else {
        aws::handle(&shared, &parts, body).await
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then drains in-flight requests
/// for at most [`DRAIN_DEADLINE`].
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) {
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Typically EMFILE; back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let router = router.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let service =
                hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let router = router.clone();
                    async move {
                        let response = router
                            .oneshot(request.map(Body::new))
                            .await
                            .unwrap_or_else(|never| match never {});
                        if response.extensions().get::<DropConnection>().is_some() {
                            Err(ConnectionDropped)
                        } else {
                            Ok(response)
                        }
                    }
                });
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    connections.close();
    if tokio::time::timeout(DRAIN_DEADLINE, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("fakecloud shut down with requests still in flight");
    }
}
