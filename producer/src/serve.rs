//! `buyonce-producer serve`: the HTTP API plus the outbox relay on a timer, until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use buyonce_shared::amqp::Topology;
use buyonce_shared::document::MAX_DOCUMENT_BYTES;
use buyonce_shared::http_server::HttpLimits;
use buyonce_shared::relay::relay_unpublished;
use buyonce_shared::store::Store;
use buyonce_shared::{config::redact_url, db};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::api::{self, App};
use crate::broker::BrokerLink;
use crate::config::{ApiTokens, ServeConfig, RELAY_BATCH};
use crate::metrics::Metrics;

/// How long in-flight requests and a running relay pass may take after shutdown starts.
const DRAIN_DEADLINE: Duration = Duration::from_secs(20);

/// Why `serve` refused to start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("BUYONCE_LISTEN/--listen {0:?} is not a host:port that resolves: {1}")]
    BadListen(String, String),
    #[error(
        "refusing to serve the API on {0} without BUYONCE_API_TOKENS: anyone who can reach it \
         could submit purchases. Set BUYONCE_API_TOKENS (or BUYONCE_API_TOKENS_FILE), or listen \
         on a loopback address such as 127.0.0.1:8080"
    )]
    OpenNonLoopback(SocketAddr),
}

/// Resolves the listen address and applies the token policy: without tokens, every resolved
/// address must be loopback.
pub async fn listen_addr(listen: &str, tokens: &ApiTokens) -> Result<SocketAddr, ServeError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(listen)
        .await
        .map_err(|e| ServeError::BadListen(listen.to_owned(), e.to_string()))?
        .collect();
    let Some(first) = addrs.first().copied() else {
        return Err(ServeError::BadListen(
            listen.to_owned(),
            "no address".into(),
        ));
    };
    if tokens.is_empty() {
        if let Some(open) = addrs.iter().find(|a| !a.ip().is_loopback()) {
            return Err(ServeError::OpenNonLoopback(*open));
        }
    }
    Ok(first)
}

/// Runs the API and the relay until `shutdown` is cancelled, then drains.
pub async fn run(config: ServeConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Refuse before touching anything else, so a bad deployment fails at once and clearly.
    let addr = listen_addr(&config.listen, &config.tokens).await?;
    if config.tokens.is_empty() {
        warn!("no BUYONCE_API_TOKENS: the API is unauthenticated (loopback only)");
    }
    let pool = db::connect(&config.common.database)
        .await
        .with_context(|| {
            format!(
                "connecting to Postgres at {}",
                redact_url(config.common.database.url.expose())
            )
        })?;
    let store = Store::new(pool);
    let broker = Arc::new(
        BrokerLink::connect(
            config.common.amqp.clone(),
            Topology::from_config(&config.common),
        )
        .await?,
    );
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let app = App {
        store,
        broker: broker.clone(),
        metrics: Arc::new(Metrics::new()),
        tokens: config.tokens.clone(),
        daily_budget_usd: config.daily_budget_usd,
    };
    let result = serve(
        listener,
        app,
        config.relay_interval,
        config.unpublished_grace,
        HttpLimits::api(MAX_DOCUMENT_BYTES),
        shutdown,
    )
    .await;
    broker.close().await;
    result
}

/// Serves `app` on `listener` with the relay running every `relay_interval`, until `shutdown`.
/// In-flight requests and a running relay pass finish (within a deadline) before it returns.
pub async fn serve(
    listener: TcpListener,
    app: App,
    relay_interval: Duration,
    unpublished_grace: Duration,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let local = listener.local_addr().context("listener address")?;
    info!(listen = %local, "producer API listening");
    let tracker = TaskTracker::new();
    tracker.spawn(relay_loop(
        app.clone(),
        relay_interval,
        unpublished_grace,
        shutdown.clone(),
    ));
    tracker.close();
    let server =
        buyonce_shared::http_server::serve(listener, api::router(app), limits, shutdown.clone());
    let served = tokio::spawn(async move {
        server.await;
        Ok::<(), std::io::Error>(())
    });
    shutdown.cancelled().await;
    info!("shutting down: draining requests and the relay");
    let drained = tokio::time::timeout(DRAIN_DEADLINE, async {
        let served = served.await;
        tracker.wait().await;
        served
    })
    .await;
    match drained {
        Ok(Ok(result)) => result.context("HTTP server"),
        Ok(Err(join)) => Err(anyhow::anyhow!("HTTP server task failed: {join}")),
        Err(_) => {
            warn!(
                deadline_s = DRAIN_DEADLINE.as_secs(),
                "drain deadline passed; exiting anyway"
            );
            Ok(())
        }
    }
}

/// The outbox relay on a timer: the first pass runs at once (healing a crash of a previous
/// producer), then every `interval`. A pass in progress finishes before shutdown completes.
async fn relay_loop(app: App, interval: Duration, grace: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let publisher = match app.broker.publisher().await {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "relay skipped: broker unreachable");
                continue;
            }
        };
        match relay_unpublished(&app.store, &publisher, grace, RELAY_BATCH).await {
            Ok(report) => {
                app.metrics.publishes(report.published, report.failed);
                app.metrics
                    .relay_republished
                    .inc_by(report.published as u64);
            }
            Err(e) => error!(error = %format!("{e:#}"), "relay pass failed"),
        }
    }
}
