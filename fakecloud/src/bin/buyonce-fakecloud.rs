//! `buyonce-fakecloud`: the AWS + Azure commitment-purchase emulator as a standalone server.
//!
//! ```text
//! buyonce-fakecloud --listen 127.0.0.1:4566 [--catalog FILE] [--faults FILE] [--seed N]
//!                   [--realism friendly|strict]
//! ```
//! Point `AWS_ENDPOINT_URL`, the Azure resource-manager URL and the Azure authority host at it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use buyonce_fakecloud::{self as fakecloud, Catalog, FakeCloudConfig, Faults, Realism};
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// Local emulator of the AWS and Azure commitment-purchase APIs.
#[derive(Debug, Parser)]
#[command(name = "buyonce-fakecloud", version, about)]
struct Args {
    /// Address to listen on (AWS, Azure and the admin API share it).
    #[arg(long, env = "FAKECLOUD_LISTEN", default_value = "127.0.0.1:4566")]
    listen: SocketAddr,
    /// Offering catalog (JSON); default: the built-in catalog.
    #[arg(long, env = "FAKECLOUD_CATALOG")]
    catalog: Option<PathBuf>,
    /// Faults active at start and after a reset (JSON, same as PUT /_fakecloud/faults).
    #[arg(long, env = "FAKECLOUD_FAULTS")]
    faults: Option<PathBuf>,
    /// Seed of fault decisions and generated IDs, to replay a chaos run.
    #[arg(long, env = "FAKECLOUD_SEED", default_value_t = 0)]
    seed: u64,
    /// AWS access key ID of the default account.
    #[arg(long, env = "FAKECLOUD_ACCESS_KEY_ID", default_value = fakecloud::DEFAULT_ACCESS_KEY)]
    access_key_id: String,
    /// AWS secret access key of the default account.
    #[arg(long, env = "FAKECLOUD_SECRET_ACCESS_KEY", default_value = fakecloud::DEFAULT_ACCESS_KEY)]
    secret_access_key: String,
    /// AWS account of the default credentials.
    #[arg(long, env = "FAKECLOUD_ACCOUNT", default_value = fakecloud::DEFAULT_ACCOUNT)]
    account: String,
    /// Azure tenant accepted by the token endpoint.
    #[arg(long, env = "FAKECLOUD_AZURE_TENANT", default_value = fakecloud::DEFAULT_TENANT)]
    azure_tenant: String,
    /// Azure client ID accepted by the token endpoint.
    #[arg(long, env = "FAKECLOUD_AZURE_CLIENT_ID", default_value = "test")]
    azure_client_id: String,
    /// Azure client secret accepted by the token endpoint.
    #[arg(long, env = "FAKECLOUD_AZURE_CLIENT_SECRET", default_value = "test")]
    azure_client_secret: String,
    /// How long AWS reservations stay payment-pending before active (e.g. 0, 500ms, 1s, 2m).
    #[arg(long, env = "FAKECLOUD_RI_ACTIVATION_DELAY", default_value = "1s", value_parser = parse_duration)]
    ri_activation_delay: Duration,
    /// How long a calculatePrice reservation order ID stays purchasable.
    #[arg(long, env = "FAKECLOUD_AZURE_PRICE_TTL", default_value = "5m", value_parser = parse_duration)]
    azure_price_ttl: Duration,
    /// How long an Azure order stays Creating before Succeeded.
    #[arg(long, env = "FAKECLOUD_AZURE_PROVISIONING_DELAY", default_value = "1s", value_parser = parse_duration)]
    azure_provisioning_delay: Duration,
    /// Latency added to every AWS and Azure call.
    #[arg(long, env = "FAKECLOUD_LATENCY", default_value = "0", value_parser = parse_duration)]
    latency: Duration,
    /// EC2 tag key reported as the ledger's idempotency handle of an RI.
    #[arg(long, env = "FAKECLOUD_IDEMPOTENCY_TAG_KEY", default_value = fakecloud::DEFAULT_IDEMPOTENCY_TAG_KEY)]
    idempotency_tag_key: String,
    /// How pessimistic to be about what the providers leave undocumented: `friendly` (answers
    /// at once and consistently) or `strict` (delayed visibility, forgotten client tokens,
    /// lost responses, payment failures, duplicate OpenSearch names, pages of two, Azure's
    /// session timeout on re-PUTs …; see the fakecloud `Realism` docs).
    #[arg(long, env = "FAKECLOUD_REALISM", default_value = "friendly", value_parser = parse_realism)]
    realism: Realism,
    /// Overrides the realism's visibility delay of new commitments (e.g. 0, 500ms, 3s).
    #[arg(long, env = "FAKECLOUD_VISIBILITY_DELAY", value_parser = parse_duration)]
    visibility_delay: Option<Duration>,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "FAKECLOUD_LOG_JSON")]
    log_json: bool,
}

fn parse_realism(text: &str) -> Result<Realism, String> {
    Realism::named(text).ok_or_else(|| format!("unknown realism '{text}' (use friendly or strict)"))
}

/// Parses `250ms`, `2s`, `5m`, `1h`, or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration '{text}'"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "invalid duration unit '{other}' in '{text}' (use ms, s, m or h)"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("invalid duration '{text}': {e}"))
}

fn load_faults(path: &PathBuf) -> anyhow::Result<Faults> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading faults {}", path.display()))?;
    let mut de = serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(&mut de)
        .with_context(|| format!("parsing faults {}", path.display()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if args.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }

    let config = FakeCloudConfig {
        listen: args.listen,
        access_key_id: args.access_key_id,
        secret_access_key: args.secret_access_key,
        default_account: args.account,
        azure_tenant_id: args.azure_tenant,
        azure_client_id: args.azure_client_id,
        azure_client_secret: args.azure_client_secret,
        seed: args.seed,
        faults: args
            .faults
            .as_ref()
            .map(load_faults)
            .transpose()?
            .unwrap_or_default(),
        catalog: args.catalog.as_deref().map(Catalog::load).transpose()?,
        ri_activation_delay: args.ri_activation_delay,
        azure_price_session_ttl: args.azure_price_ttl,
        azure_provisioning_delay: args.azure_provisioning_delay,
        latency: args.latency,
        idempotency_tag_key: args.idempotency_tag_key,
        realism: Realism {
            visibility_delay: args
                .visibility_delay
                .unwrap_or(args.realism.visibility_delay),
            ..args.realism
        },
        ..FakeCloudConfig::default()
    };

    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested");
            shutdown.cancel();
        }
    });
    fakecloud::run(config, shutdown).await
}

/// SIGINT or SIGTERM.
async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
