//! `buyonce-reaper`: sweeps Postgres for rows a dead process left behind.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use buyonce_worker::reaper::{self, ReaperConfig};
use clap::Parser;

/// Sweep Postgres for stale rows: fail items stuck `running` (safe to retry), republish items
/// committed but never published, retry pending EC2 tag writes, close finished executions.
///
/// One reaper is active at a time (Postgres advisory lock); others skip their sweep.
#[derive(Parser, Debug)]
#[command(name = "buyonce-reaper", version)]
struct Cli {
    /// Run one sweep, print `found=N reaped=N race_lost=N errored=N republished=N retagged=N`
    /// and exit (for cron / Kubernetes CronJob).
    #[arg(long)]
    once: bool,
    /// Time between sweeps, Go duration [env: BUYONCE_REAP_INTERVAL, default 5m].
    #[arg(long, value_parser = parse_duration)]
    interval: Option<Duration>,
    /// Put reaped items with attempts left back in the queue (same token). Off by default:
    /// re-driving is normally an operator decision.
    #[arg(long)]
    redrive_failed: bool,
    /// Metrics/health address [env: BUYONCE_LISTEN, default 127.0.0.1:9102].
    #[arg(long)]
    listen: Option<SocketAddr>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    match buyonce_shared::duration::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be greater than zero".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logging first, so warnings about PURCHASE_APPROVED_REAP_AFTER are seen.
    let common = match buyonce_shared::config::CommonConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("buyonce-reaper: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    buyonce_shared::telemetry::init(common.log_format);
    buyonce_shared::tls::install_crypto_provider();
    let mut config = match ReaperConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("buyonce-reaper: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(i) = cli.interval {
        config.interval = i;
    }
    if let Some(l) = cli.listen {
        config.listen = l;
    }
    config.redrive_failed = cli.redrive_failed;
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("buyonce-reaper: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let shutdown = buyonce_shared::shutdown::on_signals();
        match reaper::run(config, cli.once, shutdown).await {
            Ok(Some(report)) => {
                if cli.once {
                    println!("{report}");
                }
                ExitCode::SUCCESS
            }
            Ok(None) => {
                if cli.once {
                    println!("skipped: another reaper holds the lock");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "reaper failed");
                eprintln!("buyonce-reaper: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}
