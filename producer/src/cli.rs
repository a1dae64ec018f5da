//! The one-shot commands (`enqueue`, `status`, `redrive`, `cancel`, `pause`, `resume`, `dlq`,
//! `token`): connect, call the library, print for people or as JSON, and map failures to exit
//! codes.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use buyonce_shared::amqp::{self, Publisher, Topology};
use buyonce_shared::config::{self, redact_url, vars, CommonConfig, ProcessEnv};
use buyonce_shared::document::{DocumentError, MAX_DOCUMENT_BYTES};
use buyonce_shared::store::Store;
use buyonce_shared::text::terminal_safe;
use buyonce_shared::{db, ExecutionDocument, ExecutionId, IdempotencyToken, LineageKey, RecIndex};
use lapin::Connection;

use crate::cancel::{self, CancelError};
use crate::dlq::{self, ListFilter, ReplayOutcome, ReplayRequest, Selection};
use crate::fleet;
use crate::redrive::{self, RedriveError, RedriveOptions, RedriveReport};
use crate::status;
use crate::submit::{self, Outcome, SubmitError, SubmitReport};

/// Exit codes, documented in `--help`.
pub mod exit {
    /// Anything else: database or broker unreachable, I/O.
    pub const OTHER: u8 = 1;
    /// Bad usage, configuration or document: fix the input and run again.
    pub const INVALID: u8 = 2;
    /// The execution ID exists with different content.
    pub const CONFLICT: u8 = 3;
    /// Recorded in Postgres, but some messages are not published yet; the relay (or the
    /// reaper) publishes them, and running the same command again does too.
    pub const UNPUBLISHED: u8 = 4;
}

/// A failed command: what to print and how to exit.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{}", describe_document_error(.0))]
    Invalid(DocumentError),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unpublished(String),
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            CliError::Usage(_) | CliError::Invalid(_) => exit::INVALID,
            CliError::Conflict(_) => exit::CONFLICT,
            CliError::Unpublished(_) => exit::UNPUBLISHED,
            CliError::Other(_) => exit::OTHER,
        })
    }
}

/// One line per field problem, so a person can fix them all in one go.
fn describe_document_error(e: &DocumentError) -> String {
    let fields = e.field_errors();
    if fields.is_empty() {
        return format!("execution document is invalid: {e}");
    }
    let mut text = format!(
        "execution document is invalid ({} problem{}):",
        fields.len(),
        if fields.len() == 1 { "" } else { "s" }
    );
    for f in fields {
        text.push_str(&format!("\n  {}: {}", f.path, f.message));
    }
    text
}

impl From<SubmitError> for CliError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Invalid(d) => CliError::Invalid(d),
            e @ SubmitError::Conflict { .. } => CliError::Conflict(e.to_string()),
            e @ SubmitError::Publish(_) => CliError::Unpublished(e.to_string()),
            e @ SubmitError::Store(_) => CliError::Other(anyhow::Error::new(e)),
        }
    }
}

impl From<CancelError> for CliError {
    fn from(e: CancelError) -> Self {
        match e {
            e @ CancelError::Ended { .. } => CliError::Conflict(e.to_string()),
            other => CliError::Other(anyhow::Error::new(other)),
        }
    }
}

impl From<buyonce_shared::store::StoreError> for CliError {
    fn from(e: buyonce_shared::store::StoreError) -> Self {
        CliError::Other(anyhow::Error::new(e))
    }
}

impl From<RedriveError> for CliError {
    fn from(e: RedriveError) -> Self {
        match e {
            e @ RedriveError::Publish(_) => CliError::Unpublished(e.to_string()),
            e @ RedriveError::Cancelled(_) => CliError::Conflict(e.to_string()),
            other => CliError::Other(anyhow::Error::new(other)),
        }
    }
}

/// Reads and validates a document from a file, or stdin for `-`.
pub fn read_document(source: &str) -> Result<ExecutionDocument, CliError> {
    let mut bytes = Vec::new();
    // One byte over the limit is enough to report "too large" without reading a huge file.
    let limit = MAX_DOCUMENT_BYTES as u64 + 1;
    let read = if source == "-" {
        std::io::stdin().take(limit).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(source).and_then(|f| f.take(limit).read_to_end(&mut bytes))
    };
    read.map_err(|e| {
        CliError::Usage(format!(
            "cannot read {}: {e}",
            if source == "-" { "stdin" } else { source }
        ))
    })?;
    ExecutionDocument::from_json(&bytes).map_err(CliError::Invalid)
}

async fn connect_store(common: &CommonConfig) -> anyhow::Result<Store> {
    let pool = db::connect(&common.database).await.with_context(|| {
        format!(
            "connecting to Postgres at {}",
            redact_url(common.database.url.expose())
        )
    })?;
    Ok(Store::new(pool))
}

/// Connects to the broker and declares the topology (so the queues exist).
async fn connect_broker(common: &CommonConfig) -> anyhow::Result<(Connection, Topology)> {
    let connection = amqp::connect(&common.amqp, "buyonce-producer").await?;
    let topology = Topology::from_config(common);
    topology.declare(&connection).await?;
    Ok((connection, topology))
}

async fn connect_publisher(common: &CommonConfig) -> anyhow::Result<(Connection, Publisher)> {
    let (connection, topology) = connect_broker(common).await?;
    let publisher = Publisher::new(&connection, topology).await?;
    Ok((connection, publisher))
}

/// `BUYONCE_DAILY_BUDGET_USD` as this process sees it (for display: the workers enforce it).
pub fn daily_budget() -> Result<Option<f64>, CliError> {
    config::parse_optional_f64(&ProcessEnv, &vars::DAILY_BUDGET_USD)
        .map_err(|e| CliError::Usage(e.to_string()))
}

/// Prints what an operation did — also when it failed after doing part of it (`partial`: a
/// publish failure carries the report of what was recorded) — then returns its result.
fn report_then<R: serde::Serialize, E>(
    result: Result<R, E>,
    partial: impl FnOnce(&E) -> Option<&R>,
    json: bool,
    render: impl FnOnce(&R) -> String,
) -> Result<(), CliError>
where
    CliError: From<E>,
{
    let report = match &result {
        Ok(report) => Some(report),
        Err(e) => partial(e),
    };
    if let Some(report) = report {
        if json {
            print_json(report);
        } else {
            print!("{}", terminal_safe(&render(report)));
        }
    }
    result.map(|_| ()).map_err(CliError::from)
}

fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into())
    );
}

/// `enqueue FILE`: record the execution and publish its messages.
pub async fn enqueue(
    common: &CommonConfig,
    doc: &ExecutionDocument,
    json: bool,
) -> Result<(), CliError> {
    // Connect to both first: with the broker unreachable, nothing is recorded.
    let store = connect_store(common).await?;
    let (connection, publisher) = connect_publisher(common).await?;
    let result = submit::submit(&store, &publisher, doc).await;
    let _ = connection.close(200, "done".into()).await;
    report_then(
        result,
        |e| match e {
            SubmitError::Publish(report) => Some(report.as_ref()),
            _ => None,
        },
        json,
        render_submit,
    )
}

fn render_submit(report: &SubmitReport) -> String {
    let mut out = match report.outcome {
        Outcome::Created => format!(
            "execution {} recorded: {} items, {} messages published\n",
            report.execution_id,
            report.items.len(),
            report.published
        ),
        Outcome::Identical => format!(
            "execution {} was already recorded with identical content: no new items; \
             {} unpublished messages republished\n",
            report.execution_id, report.published
        ),
    };
    for i in &report.items {
        out.push_str(&format!(
            "  #{:<4} {:<20} {:<10} {}  {}\n",
            i.rec_index,
            format!("{}/{}", i.provider, i.service),
            i.status.as_str(),
            i.token,
            if i.published {
                "published"
            } else {
                "NOT PUBLISHED"
            }
        ));
    }
    out
}

fn parse_execution_id(raw: &str) -> Result<ExecutionId, CliError> {
    ExecutionId::parse(raw).map_err(|e| CliError::Usage(format!("execution ID {raw:?} {e}")))
}

/// `status [ID]`: the fleet (paused?, spend today against the budget) and, with an ID, the
/// execution and its items; without one, item and dead-letter counts.
pub async fn status(
    common: &CommonConfig,
    execution_id: Option<&str>,
    json: bool,
) -> Result<(), CliError> {
    let budget = daily_budget()?;
    let id = execution_id.map(parse_execution_id).transpose()?;
    let store = connect_store(common).await?;
    let fleet = fleet::summary(&store, budget)
        .await
        .context("reading the fleet's state")?;
    let Some(id) = id else {
        if json {
            print_json(&fleet);
        } else {
            print!("{}", terminal_safe(&fleet::render_summary(&fleet, true)));
        }
        return Ok(());
    };
    let view = status::execution_view(&store, &id)
        .await
        .context("reading the execution")?
        .ok_or_else(|| CliError::Other(anyhow::anyhow!("no execution {id}")))?;
    if json {
        print_json(&status::StatusView {
            execution: view,
            fleet,
        });
    } else {
        print!("{}", terminal_safe(&fleet::render_summary(&fleet, false)));
        print!("{}", terminal_safe(&status::render_table(&view)));
    }
    Ok(())
}

/// `redrive ID`: failed and dead (with `include_cancelled` also cancelled) items back to
/// queued, republished with the same tokens.
pub async fn redrive(
    common: &CommonConfig,
    execution_id: &str,
    include_cancelled: bool,
    json: bool,
) -> Result<(), CliError> {
    let id = parse_execution_id(execution_id)?;
    let store = connect_store(common).await?;
    let (connection, publisher) = connect_publisher(common).await?;
    let options = RedriveOptions { include_cancelled };
    let result = redrive::redrive_with(&store, &publisher, &id, options).await;
    let _ = connection.close(200, "done".into()).await;
    report_then(
        result,
        |e| match e {
            RedriveError::Publish(report) => Some(report.as_ref()),
            _ => None,
        },
        json,
        render_redrive,
    )
}

fn render_redrive(report: &RedriveReport) -> String {
    if report.items.is_empty() {
        return format!(
            "execution {}: nothing to re-drive (no failed or dead items)\n",
            report.execution_id
        );
    }
    let mut out = format!(
        "execution {}: re-drove {} items (attempts reset, same tokens), {} messages published\n",
        report.execution_id,
        report.items.len(),
        report.published
    );
    for i in &report.items {
        out.push_str(&format!(
            "  #{:<4} {:<14} {:<6} -> queued  {}  {}\n",
            i.rec_index,
            i.service,
            i.old_status.as_str(),
            i.token,
            if i.published {
                "published"
            } else {
                "NOT PUBLISHED"
            }
        ));
    }
    out
}

/// `cancel ID`: queued items and the execution to cancelled; running items are named.
pub async fn cancel(common: &CommonConfig, execution_id: &str, json: bool) -> Result<(), CliError> {
    let id = parse_execution_id(execution_id)?;
    let store = connect_store(common).await?;
    let report = cancel::cancel(&store, &id, &fleet::operator_identity()).await?;
    if json {
        print_json(&report);
    } else {
        print!("{}", terminal_safe(&cancel::render(&report)));
    }
    Ok(())
}

/// `pause [--reason]` / `resume`: set the fleet's pause flag and print the state after.
pub async fn set_paused(
    common: &CommonConfig,
    paused: bool,
    reason: Option<&str>,
    json: bool,
) -> Result<(), CliError> {
    fleet::check_reason(reason).map_err(CliError::Usage)?;
    let store = connect_store(common).await?;
    let who = fleet::operator_identity();
    let state = if paused {
        fleet::pause(&store, reason, &who).await?
    } else {
        fleet::resume(&store, &who).await?
    };
    if json {
        print_json(&state);
    } else {
        println!("{}", terminal_safe(&fleet::render_pause(&state)));
    }
    Ok(())
}

/// Drains the dead-letter queue into Postgres before a listing. With the broker unreachable
/// the archived rows are still shown, with a warning that queued ones are missing.
async fn drain_for_listing(
    common: &CommonConfig,
    store: &buyonce_shared::store::Store,
) -> (
    Option<buyonce_shared::amqp::dead_letters::ArchiveReport>,
    Option<String>,
) {
    let drained = async {
        let (connection, topology) = connect_broker(common).await?;
        let report = dlq::drain(store, &connection, &topology).await;
        let _ = connection.close(200, "done".into()).await;
        report
    }
    .await;
    match drained {
        Ok(report) => {
            let warning = (report.remaining > 0).then(|| {
                format!(
                    "{} more dead letters are still queued (more than {} arrived at once); \
                     list again to archive them",
                    report.remaining,
                    dlq::DRAIN_MAX
                )
            });
            (Some(report), warning)
        }
        Err(e) => (
            None,
            Some(format!(
                "could not drain the dead-letter queue, so messages still in it are not \
                 listed: {e:#}"
            )),
        ),
    }
}

/// `dlq list`: drain the queue into Postgres, then list the table.
pub async fn dlq_list(
    common: &CommonConfig,
    filter: &ListFilter,
    json: bool,
) -> Result<(), CliError> {
    if let Some(id) = &filter.execution_id {
        parse_execution_id(id)?;
    }
    filter.check().map_err(CliError::Usage)?;
    let store = connect_store(common).await?;
    let (drained, warning) = drain_for_listing(common, &store).await;
    let mut listing = dlq::list(&store, filter).await?;
    listing.drained = drained;
    listing.warning = warning;
    if json {
        print_json(&listing);
    } else {
        print!("{}", terminal_safe(&dlq::render_listing(&listing)));
    }
    Ok(())
}

/// `dlq show ID`.
pub async fn dlq_show(common: &CommonConfig, id: i64, json: bool) -> Result<(), CliError> {
    let store = connect_store(common).await?;
    let detail = dlq::show(&store, id).await?.ok_or_else(|| {
        CliError::Other(anyhow::anyhow!(
            "no dead letter {id} (run `dlq list` to archive queued ones and see their IDs)"
        ))
    })?;
    if json {
        print_json(&detail);
    } else {
        print!("{}", terminal_safe(&dlq::render_detail(&detail)));
    }
    Ok(())
}

/// `dlq replay`: exit 3 when a selected dead letter was refused, 4 when a requeued item's
/// message is not published yet.
pub async fn dlq_replay(
    common: &CommonConfig,
    request: &ReplayRequest,
    json: bool,
) -> Result<(), CliError> {
    if let Selection::Execution(id) = &request.selection {
        parse_execution_id(id)?;
    }
    let store = connect_store(common).await?;
    let (connection, publisher) = connect_publisher(common).await?;
    // Queued dead letters first, so "--all" means all.
    let drained = dlq::drain(&store, &connection, publisher.topology()).await;
    if let Err(e) = &drained {
        eprintln!(
            "warning: could not drain the dead-letter queue first: {}",
            terminal_safe(&format!("{e:#}"))
        );
    }
    let total = dlq::count(&store, &request.selection, true).await?;
    let progress = if json || total < 50 {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new(total as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:40}] {pos}/{len} dead letters ({eta} left)",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(if request.dry_run {
            "checking"
        } else {
            "replaying"
        });
        bar
    };
    let result = dlq::replay_with_progress(&store, &publisher, request, &progress).await;
    let _ = connection.close(200, "done".into()).await;
    let report = result?;
    if json {
        print_json(&report);
    } else {
        print!("{}", terminal_safe(&dlq::render_replay(&report)));
    }
    if report.unpublished > 0 {
        return Err(CliError::Unpublished(format!(
            "{} replayed items are requeued but their messages are not published yet; the relay \
             (serve) or the reaper publishes them",
            report.unpublished
        )));
    }
    if report.refused > 0 {
        let refused = report
            .results
            .iter()
            .filter(|r| r.outcome == ReplayOutcome::Refused)
            .count();
        return Err(CliError::Conflict(format!(
            "{refused} selected dead letters cannot be replayed (reasons above)"
        )));
    }
    Ok(())
}

/// `dlq purge --yes`: refuses without `--yes`, saying how many would go.
pub async fn dlq_purge(
    common: &CommonConfig,
    selection: &Selection,
    yes: bool,
    json: bool,
) -> Result<(), CliError> {
    let store = connect_store(common).await?;
    if !yes {
        let n = dlq::count(&store, selection, false).await?;
        return Err(CliError::Usage(format!(
            "refusing to purge without --yes: {n} archived dead letters match ({}); purged \
             dead letters cannot be replayed or inspected any more",
            selection.describe()
        )));
    }
    if !matches!(selection, Selection::Ids(_)) {
        // So that "--all" also covers what is still queued.
        let (_, warning) = drain_for_listing(common, &store).await;
        if let Some(w) = warning {
            eprintln!("warning: {}", terminal_safe(&w.to_string()));
        }
    }
    let report = dlq::purge(&store, selection).await?;
    if json {
        print_json(&report);
    } else {
        print!("{}", terminal_safe(&dlq::render_purge(&report)));
    }
    Ok(())
}

/// `token KEY INDEX`: the full token (the one place a whole token is printed).
pub fn token(lineage_key: &str, rec_index: u32) -> Result<String, CliError> {
    let key = LineageKey::parse(lineage_key)
        .map_err(|e| CliError::Usage(format!("lineage key {lineage_key:?} {e}")))?;
    let index = RecIndex::new(rec_index).map_err(|e| CliError::Usage(format!("rec index {e}")))?;
    Ok(IdempotencyToken::derive(key.as_str(), index.get())
        .as_str()
        .to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_matches_the_design_vector() {
        assert_eq!(
            token("exec-1", 0).unwrap(),
            "4a667998cddd36583ee6f92b4e1f9fe36aeef04b9676a2007da7c5eefc9e96c0"
        );
        assert!(matches!(token("exec 1", 0), Err(CliError::Usage(_))));
        assert!(matches!(token("exec-1", 10_000), Err(CliError::Usage(_))));
    }
}
