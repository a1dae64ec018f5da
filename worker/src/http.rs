//! The operations endpoint of the worker and the reaper: `/metrics`, `/healthz`, `/readyz`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use buyonce_shared::store::Store;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::database_watch::DatabaseWatch;

/// Something that renders Prometheus text (the worker's and the reaper's metrics).
pub trait MetricsSource: Send + Sync {
    fn encode(&self) -> String;
    fn set_paused(&self, _paused: bool) {}
}

/// What the probes report on.
pub struct Health {
    pub metrics: Arc<dyn MetricsSource>,
    pub store: Store,
    /// The broker session is up (the reaper, which needs no consumer, leaves it `true`).
    pub broker_up: AtomicBool,
    /// The worker's Postgres probe (the reaper has none: its sweep fails loudly instead).
    pub database: Option<DatabaseWatch>,
}

/// How long `/readyz` waits for Postgres (probes have short timeouts of their own).
const READYZ_DATABASE_TIMEOUT: Duration = Duration::from_secs(2);

async fn metrics(State(h): State<Arc<Health>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        h.metrics.encode(),
    )
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(h): State<Arc<Health>>) -> impl IntoResponse {
    let broker = h.broker_up.load(Ordering::SeqCst);
    let probed_down = h.database.as_ref().is_some_and(|w| !w.is_up());
    let (database, paused) = if probed_down {
        (Err("the Postgres probe gets no answer".to_owned()), false)
    } else {
        match tokio::time::timeout(READYZ_DATABASE_TIMEOUT, h.store.pause_state()).await {
            Ok(Ok(p)) => (Ok(()), p.paused),
            Ok(Err(e)) => (Err(e.to_string()), false),
            Err(_) => (
                Err(format!("no answer within {READYZ_DATABASE_TIMEOUT:?}")),
                false,
            ),
        }
    };
    h.metrics.set_paused(paused);
    let ready = broker && database.is_ok();
    let body = json!({
        "ready": ready,
        "broker": if broker { "ok" } else { "down" },
        // Unauthenticated: whether, not why (the log has why).
        "database": match &database {
            Ok(()) => "ok",
            Err(e) => {
                tracing::warn!(error = %e, "not ready: database");
                "unavailable"
            }
        },
        "paused": paused,
        "detail": if paused { "fleet paused by an operator: no purchases start until `buyonce-producer resume`" } else { "" },
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// Binds `addr` (port 0 picks a free port) and serves until `shutdown`. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (BUYONCE_LISTEN / --listen): {e}"))?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health);
    tokio::spawn(buyonce_shared::http_server::serve(
        listener,
        app,
        buyonce_shared::http_server::HttpLimits::probes(),
        shutdown,
    ));
    Ok(bound)
}
