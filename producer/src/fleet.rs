//! Fleet-wide brakes and the fleet summary (DESIGN §9): the pause flag, today's reserved
//! spend against the daily budget, items per status and the dead letters waiting.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use buyonce_shared::store::control::{PauseState, SpendToday};
use buyonce_shared::store::{Store, StoreError};
use chrono::SecondsFormat;
use serde::Serialize;
use tracing::info;

/// Who is pulling the brake from this shell: `$USER@host`.
pub fn operator_identity() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .or_else(|_| std::fs::read_to_string("/etc/hostname"))
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "unknown-host".into());
    format!("{user}@{host}")
}

/// Longest pause reason accepted, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// A pause reason follows the rules of other free text (`buyonce_shared::text`): it is shown
/// to every operator who runs `status`.
pub fn check_reason(reason: Option<&str>) -> Result<(), String> {
    match reason.and_then(|r| buyonce_shared::text::text_problem(r, MAX_REASON_CHARS)) {
        Some(problem) => Err(format!("the pause reason {problem}")),
        None => Ok(()),
    }
}

/// Pauses the fleet: no purchase starts once this returns (workers check the flag when they
/// claim and again right before the provider call). Messages wait in retry queues; nothing is
/// dead-lettered.
pub async fn pause(
    store: &Store,
    reason: Option<&str>,
    changed_by: &str,
) -> Result<PauseState, StoreError> {
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    let state = store.set_paused(true, reason, changed_by).await?;
    info!(by = changed_by, reason = ?reason, "fleet paused");
    Ok(state)
}

/// Resumes the fleet; parked messages are bought as they come back from their wait queues.
pub async fn resume(store: &Store, changed_by: &str) -> Result<PauseState, StoreError> {
    let state = store.set_paused(false, None, changed_by).await?;
    info!(by = changed_by, "fleet resumed");
    Ok(state)
}

/// Today's reserved spend against the budget (when this process knows the budget).
#[derive(Debug, Clone, Serialize)]
pub struct SpendView {
    #[serde(flatten)]
    pub today: SpendToday,
    /// `BUYONCE_DAILY_BUDGET_USD` as this process sees it (the workers enforce their own).
    pub budget_usd: Option<f64>,
    pub remaining_usd: Option<f64>,
}

/// Dead letters archived in Postgres.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterCounts {
    pub total: i64,
    /// Not replayed yet.
    pub unreplayed: i64,
    pub by_reason: BTreeMap<String, i64>,
}

/// The fleet at a glance.
#[derive(Debug, Clone, Serialize)]
pub struct FleetSummary {
    pub pause: PauseState,
    pub spend: SpendView,
    /// Items per status, across all executions.
    pub items: BTreeMap<&'static str, i64>,
    pub dead_letters: DeadLetterCounts,
}

/// Reads the fleet summary. `budget_usd` is the daily budget this process was configured
/// with, if any.
pub async fn summary(store: &Store, budget_usd: Option<f64>) -> Result<FleetSummary, StoreError> {
    let pause = store.pause_state().await?;
    let today = store.spend_today().await?;
    let items = store
        .item_status_counts()
        .await?
        .into_iter()
        .map(|(s, n)| (s.as_str(), n))
        .collect();
    let per_reason = store.dead_letter_counts().await?;
    let dead_letters = DeadLetterCounts {
        total: per_reason.iter().map(|(_, n, _)| n).sum(),
        unreplayed: per_reason.iter().map(|(_, _, u)| u).sum(),
        by_reason: per_reason
            .iter()
            .map(|(r, n, _)| (r.as_str().to_owned(), *n))
            .collect(),
    };
    Ok(FleetSummary {
        pause,
        spend: SpendView {
            remaining_usd: budget_usd.map(|b| (b - today.reserved_usd).max(0.0)),
            today,
            budget_usd,
        },
        items,
        dead_letters,
    })
}

/// The pause flag in one line.
pub fn render_pause(p: &PauseState) -> String {
    let since = p.changed_at.to_rfc3339_opts(SecondsFormat::Secs, true);
    let who = p.changed_by.as_deref().unwrap_or("unknown");
    if p.paused {
        format!(
            "fleet PAUSED since {since} by {who}{}: no purchase starts until `buyonce-producer resume`",
            p.reason
                .as_deref()
                .map(|r| format!(" (reason: {r})"))
                .unwrap_or_default()
        )
    } else {
        format!("fleet running (not paused; last changed {since} by {who})")
    }
}

/// The spend line.
pub fn render_spend(s: &SpendView) -> String {
    match s.budget_usd {
        Some(budget) => format!(
            "spend today ({} UTC): ${:.2} reserved of ${:.2} daily budget (${:.2} left)",
            s.today.day,
            s.today.reserved_usd,
            budget,
            s.remaining_usd.unwrap_or(0.0)
        ),
        None => format!(
            "spend today ({} UTC): ${:.2} reserved (budget not shown: set \
             BUYONCE_DAILY_BUDGET_USD here as on the workers)",
            s.today.day, s.today.reserved_usd
        ),
    }
}

/// The fleet summary for people. `with_counts` adds item and dead-letter counts (the summary
/// without an execution ID).
pub fn render_summary(f: &FleetSummary, with_counts: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", render_pause(&f.pause));
    let _ = writeln!(out, "{}", render_spend(&f.spend));
    if with_counts {
        let items: Vec<String> = f.items.iter().map(|(s, n)| format!("{n} {s}")).collect();
        let _ = writeln!(
            out,
            "items: {}",
            if items.is_empty() {
                "none".to_owned()
            } else {
                items.join(", ")
            }
        );
        let reasons: Vec<String> = f
            .dead_letters
            .by_reason
            .iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        let _ = writeln!(
            out,
            "dead letters (archived): {} total, {} not replayed{}",
            f.dead_letters.total,
            f.dead_letters.unreplayed,
            if reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", reasons.join(", "))
            }
        );
    }
    out
}
