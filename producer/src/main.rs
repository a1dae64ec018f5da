//! `buyonce-producer`: parse the command line, load configuration, start logging, call the
//! library.

use std::process::ExitCode;
use std::time::Duration;

use buyonce_producer::cli::{self, CliError};
use buyonce_producer::dlq::{ListFilter, ReplayRequest, Selection};
use buyonce_producer::serve::ServeError;
use buyonce_producer::{ServeConfig, ServeOverrides};
use buyonce_shared::config::CommonConfig;
use buyonce_shared::DeadLetterReason;
use clap::{ArgGroup, Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  other error (database or broker unreachable, I/O, no such execution)
  2  usage, configuration or document error (each problem is named by its field path)
  3  conflict: the execution ID exists with different content, the execution is cancelled
     (redrive) or already ended (cancel), or a selected dead letter cannot be replayed
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
    /// [?include_cancelled=true], POST /v1/executions/{id}/cancel, GET /v1/status,
    /// GET|POST /v1/pause, POST /v1/resume, GET /v1/dead-letters, GET /v1/dead-letters/{id},
    /// POST /v1/dead-letters/replay (bearer tokens from BUYONCE_API_TOKENS or
    /// BUYONCE_API_TOKENS_FILE); GET /healthz, /readyz, /metrics (unauthenticated). Without
    /// tokens it listens only on loopback.
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
    /// Show the fleet's brakes and an execution with every item (or, without an ID, the fleet).
    ///
    /// Always: whether the fleet is paused (reason, who, since) and today's reserved spend
    /// against BUYONCE_DAILY_BUDGET_USD when it is set here too. With EXECUTION_ID, per item:
    /// status, attempts, masked token, commitment ID, cost and error; with --json as
    /// {"execution": {...}, "counts": {...}, "items": [...], "fleet": {...}}. Without it: items
    /// per status and archived dead letters.
    Status {
        execution_id: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Move failed and dead items back to queued and republish them with the same tokens.
    ///
    /// Attempts are reset; succeeded, running and queued items are untouched. Prints each
    /// re-driven item: rec index, service, old status, masked token. A cancelled execution is
    /// refused (exit 3) unless --include-cancelled.
    Redrive {
        execution_id: String,
        /// Also requeue cancelled items and reopen a cancelled execution (undoes `cancel`).
        #[arg(long)]
        include_cancelled: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel an execution: its queued items are never bought.
    ///
    /// Every queued item becomes cancelled, and the execution too; a worker that receives a
    /// message for a cancelled item acks it without calling the provider. Items already
    /// running finish (a purchase in flight cannot be recalled): they are listed. An execution
    /// that already ended is refused (exit 3); `redrive --include-cancelled` undoes a cancel.
    Cancel {
        execution_id: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Pause the whole fleet: no purchase starts until `resume`.
    ///
    /// Workers check the flag when they claim an item and again right before the provider
    /// call; paused messages wait in retry queues, nothing is dead-lettered. Records
    /// $USER@host and the reason; prints the state after the change.
    Pause {
        /// Why (shown by `status` and in the worker logs).
        #[arg(long)]
        reason: Option<String>,
        /// Print the state as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Resume a paused fleet; prints the state after the change.
    Resume {
        /// Print the state as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Inspect, replay and purge dead letters (messages that could not be bought).
    ///
    /// Every command first moves what waits in the dead-letter queue into Postgres (insert,
    /// commit, then ack), and then works on that archive: listing never drops, duplicates or
    /// reorders a message.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Print the full idempotency token of one recommendation (no database or broker needed).
    ///
    /// LINEAGE_KEY is the execution's idempotency_key (by default its execution_id);
    /// REC_INDEX is the recommendation's position in the submitted list. The token is the
    /// one value buyonce prints whole: everywhere else it is masked.
    Token { lineage_key: String, rec_index: u32 },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead letters, oldest first: ID, execution, rec index, service, reason, masked
    /// token, delivery count, x-death summary, first/last death, replays, error.
    ///
    /// With --json: {"dead_letters": [{"id", "reason", "error", ...}], "total": N}.
    List {
        #[arg(long, value_parser = reason)]
        reason: Option<DeadLetterReason>,
        /// Only this execution's dead letters.
        #[arg(long, value_name = "ID")]
        execution: Option<String>,
        /// Only this service's (ec2, rds, vm, ...).
        #[arg(long)]
        service: Option<String>,
        /// Show at most N rows [default 100].
        #[arg(long, value_name = "N")]
        limit: Option<i64>,
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter: every header, the decoded envelope (token masked) or the raw body
    /// escaped when it is not a purchase message.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Replay dead letters: the item goes back to queued and its message is republished,
    /// rebuilt from the approved item with the same token (so it cannot buy twice).
    ///
    /// Messages that were malformed, of an unknown version or service, oversize or did not
    /// match Postgres are refused (they would only die again), each with its reason. --all,
    /// --reason and --execution take dead letters not replayed yet; IDs are replayed again if
    /// asked. Exit 3 when a selected dead letter was refused, 4 when a message is requeued but
    /// not yet published.
    #[command(group(ArgGroup::new("selection").required(true).args(["ids", "all", "reason", "execution"])))]
    Replay {
        /// Dead-letter IDs (from `dlq list`).
        ids: Vec<i64>,
        #[arg(long)]
        all: bool,
        #[arg(long, value_parser = reason)]
        reason: Option<DeadLetterReason>,
        #[arg(long, value_name = "ID")]
        execution: Option<String>,
        /// Say what would be replayed; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Delete dead letters for good (their items keep their status). Refuses without --yes.
    #[command(group(ArgGroup::new("selection").required(true).args(["ids", "all", "reason"])))]
    Purge {
        ids: Vec<i64>,
        #[arg(long)]
        all: bool,
        #[arg(long, value_parser = reason)]
        reason: Option<DeadLetterReason>,
        /// Confirm the deletion.
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        json: bool,
    },
}

fn reason(s: &str) -> Result<DeadLetterReason, String> {
    buyonce_producer::dlq::parse_reason(s)
}

/// The selection of `dlq replay` / `dlq purge` (clap guarantees exactly one was given).
fn selection(
    ids: Vec<i64>,
    all: bool,
    reason: Option<DeadLetterReason>,
    execution: Option<String>,
) -> Selection {
    if all {
        Selection::All
    } else if let Some(r) = reason {
        Selection::Reason(r)
    } else if let Some(e) = execution {
        Selection::Execution(e)
    } else {
        Selection::Ids(ids)
    }
}

async fn dlq(common: &CommonConfig, command: DlqCommand) -> Result<(), CliError> {
    match command {
        DlqCommand::List {
            reason,
            execution,
            service,
            limit,
            json,
        } => {
            let filter = ListFilter {
                reason,
                execution_id: execution,
                service,
                limit,
            };
            cli::dlq_list(common, &filter, json).await
        }
        DlqCommand::Show { id, json } => cli::dlq_show(common, id, json).await,
        DlqCommand::Replay {
            ids,
            all,
            reason,
            execution,
            dry_run,
            json,
        } => {
            let request = ReplayRequest {
                selection: selection(ids, all, reason, execution),
                dry_run,
            };
            cli::dlq_replay(common, &request, json).await
        }
        DlqCommand::Purge {
            ids,
            all,
            reason,
            yes,
            json,
        } => cli::dlq_purge(common, &selection(ids, all, reason, None), yes, json).await,
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    let d = buyonce_shared::duration::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

fn fail(e: &CliError) -> ExitCode {
    eprintln!(
        "error: {}",
        buyonce_shared::text::terminal_safe(&e.to_string())
    );
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
        Command::Status { execution_id, json } => {
            cli::status(&common, execution_id.as_deref(), json).await
        }
        Command::Redrive {
            execution_id,
            include_cancelled,
            json,
        } => cli::redrive(&common, &execution_id, include_cancelled, json).await,
        Command::Cancel { execution_id, json } => cli::cancel(&common, &execution_id, json).await,
        Command::Pause { reason, json } => {
            cli::set_paused(&common, true, reason.as_deref(), json).await
        }
        Command::Resume { json } => cli::set_paused(&common, false, None, json).await,
        Command::Dlq { command } => dlq(&common, command).await,
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
