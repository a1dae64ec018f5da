//! `buyonce-producer`: parse the command line, load configuration, start logging, call the
//! library.

use std::process::ExitCode;
use std::time::Duration;

use buyonce_producer::cli::{self, CliError};
use buyonce_producer::serve::ServeError;
use buyonce_producer::{ServeConfig, ServeOverrides};
use buyonce_shared::config::CommonConfig;
use clap::{Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  other error (database or broker unreachable, I/O, no such execution)
  2  usage, configuration or document error (each problem is named by its field path)
  3  conflict: the execution ID exists with different content, or the execution is cancelled
  4  recorded, but some messages are not published yet; the relay (serve) or the reaper
     publishes them, and running the same command again does too

Configuration comes from the environment (BUYONCE_DATABASE_URL, BUYONCE_AMQP_URL,
BUYONCE_QUEUE_PREFIX, ...; see the README's table); flags override it.";

/// Hands approved executions to the buyonce fleet: records each execution and its items in
/// Postgres (the outbox) and publishes one message per recommendation.
#[derive(Parser)]
#[command(name = "buyonce-producer", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Record an execution document and publish one message per recommendation.
    ///
    /// Submitting the same document again creates nothing and republishes only items that are
    /// still queued and unpublished (healing an earlier crash). The same execution_id with
    /// different content is refused (exit 3).
    Enqueue {
        /// The execution document (JSON, DESIGN §8), or `-` for stdin.
        file: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve the HTTP API and run the outbox relay until SIGTERM/SIGINT.
    ///
    /// Routes: POST /v1/executions, GET /v1/executions/{id}, POST /v1/executions/{id}/redrive
    /// (bearer tokens from BUYONCE_API_TOKENS or BUYONCE_API_TOKENS_FILE); GET /healthz,
    /// /readyz, /metrics (unauthenticated). Without tokens it listens only on loopback.
    Serve {
        /// Listen address host:port [env: BUYONCE_LISTEN, default 127.0.0.1:8080].
        #[arg(long, value_name = "HOST:PORT")]
        listen: Option<String>,
        /// How often to republish committed but unpublished items [env:
        /// BUYONCE_RELAY_INTERVAL, default 30s].
        #[arg(long, value_name = "DURATION", value_parser = duration)]
        relay_interval: Option<Duration>,
        /// Republish only items unpublished for longer than this [env:
        /// BUYONCE_UNPUBLISHED_GRACE, default 30s].
        #[arg(long, value_name = "DURATION", value_parser = duration)]
        unpublished_grace: Option<Duration>,
    },
    /// Show an execution and every item.
    ///
    /// Per item: status, attempts, masked token, commitment ID, cost and error; as a table, or
    /// with --json as {"execution": {...}, "counts": {...}, "items": [...]}.
    Status {
        execution_id: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Move failed and dead items back to queued and republish them with the same tokens.
    ///
    /// Attempts are reset; succeeded, running and queued items are untouched. Prints each
    /// re-driven item: rec index, service, old status, masked token. A cancelled execution is
    /// refused (exit 3).
    Redrive {
        execution_id: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the full idempotency token of one recommendation (no database or broker needed).
    ///
    /// LINEAGE_KEY is the execution's idempotency_key (by default its execution_id);
    /// REC_INDEX is the recommendation's position in the submitted list. The token is the
    /// one value buyonce prints whole: everywhere else it is masked.
    Token { lineage_key: String, rec_index: u32 },
}

fn duration(s: &str) -> Result<Duration, String> {
    let d = buyonce_shared::duration::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

fn fail(e: &CliError) -> ExitCode {
    eprintln!("error: {e}");
    e.exit_code()
}

#[tokio::main]
async fn main() -> ExitCode {
    buyonce_shared::tls::install_crypto_provider();
    let cli = Cli::parse();
    if let Command::Token {
        lineage_key,
        rec_index,
    } = &cli.command
    {
        return match cli::token(lineage_key, *rec_index) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        };
    }
    let common = match CommonConfig::from_env() {
        Ok(c) => c,
        Err(e) => return fail(&CliError::Usage(e.to_string())),
    };
    buyonce_shared::telemetry::init(common.log_format);
    let result = match cli.command {
        Command::Enqueue { file, json } => match cli::read_document(&file) {
            Ok(doc) => cli::enqueue(&common, &doc, json).await,
            Err(e) => Err(e),
        },
        Command::Status { execution_id, json } => cli::status(&common, &execution_id, json).await,
        Command::Redrive { execution_id, json } => cli::redrive(&common, &execution_id, json).await,
        Command::Serve {
            listen,
            relay_interval,
            unpublished_grace,
        } => {
            let overrides = ServeOverrides {
                listen,
                relay_interval,
                unpublished_grace,
            };
            match ServeConfig::from_env(common, overrides) {
                Ok(config) => {
                    let shutdown = buyonce_shared::shutdown::on_signals();
                    buyonce_producer::run(config, shutdown).await.map_err(|e| {
                        // A refused listen address is a configuration problem, not an outage.
                        if e.downcast_ref::<ServeError>().is_some() {
                            CliError::Usage(format!("{e:#}"))
                        } else {
                            CliError::Other(e)
                        }
                    })
                }
                Err(e) => Err(CliError::Usage(e.to_string())),
            }
        }
        Command::Token { .. } => unreachable!("handled above"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}
