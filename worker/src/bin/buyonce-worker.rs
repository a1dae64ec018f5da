//! `buyonce-worker`: consumes purchase messages and buys each commitment exactly once.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use buyonce_worker::config::WorkerConfig;
use clap::Parser;

/// Consume approved purchases from RabbitMQ and buy each commitment exactly once.
///
/// Configuration comes from the environment (see the README's table); flags override it.
/// SIGTERM/SIGINT stop consuming and let in-flight purchases finish within the grace period.
#[derive(Parser, Debug)]
#[command(name = "buyonce-worker", version)]
struct Cli {
    /// In-flight purchases (and AMQP prefetch) [env: BUYONCE_CONCURRENCY, default 64].
    #[arg(long)]
    concurrency: Option<usize>,
    /// Health/metrics address; port 0 picks a free port [env: BUYONCE_LISTEN, default 127.0.0.1:9101].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Resolve offerings and guards but buy nothing [env: BUYONCE_DRY_RUN].
    #[arg(long)]
    dry_run: bool,
    /// How long in-flight purchases may take after SIGTERM, Go duration [env: BUYONCE_SHUTDOWN_GRACE, default 25s].
    #[arg(long, value_parser = parse_duration)]
    shutdown_grace: Option<Duration>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    buyonce_shared::duration::parse_duration(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = match WorkerConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("buyonce-worker: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(n) = cli.concurrency {
        if n == 0 {
            eprintln!("buyonce-worker: --concurrency must be at least 1");
            return ExitCode::from(2);
        }
        config.concurrency = n;
    }
    if let Some(addr) = cli.listen {
        config.listen = addr;
    }
    if cli.dry_run {
        config.dry_run = true;
    }
    if let Some(grace) = cli.shutdown_grace {
        config.shutdown_grace = grace;
    }
    buyonce_shared::telemetry::init(config.common.log_format);
    buyonce_shared::tls::install_crypto_provider();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("buyonce-worker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let shutdown = buyonce_shared::shutdown::on_signals();
        match buyonce_worker::startup::run(config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "worker failed");
                ExitCode::FAILURE
            }
        }
    })
}
