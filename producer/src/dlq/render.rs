//! The dead-letter commands' output for people: aligned tables for `dlq list` and `dlq replay`,
//! the full record for `dlq show`, a line for `dlq purge`. `--json` prints the same values
//! serialized instead.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use super::{DeadLetterDetail, Listing, PurgeReport, ReplayReport};

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "-".to_owned(),
        |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

fn one_line(s: &str, max: usize) -> String {
    let flat = s.replace(['\n', '\r', '\t'], " ");
    if flat.chars().count() <= max {
        flat
    } else {
        let mut cut: String = flat.chars().take(max.saturating_sub(3)).collect();
        cut.push_str("...");
        cut
    }
}

/// Renders rows as an aligned table; the last column is not padded.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let last = cells.len() - 1;
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<w$}  ");
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(&header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>());
    for row in rows {
        line(row);
    }
    out
}

/// `dlq list` as a table.
pub fn render_listing(listing: &Listing) -> String {
    let mut out = String::new();
    if let Some(w) = &listing.warning {
        let _ = writeln!(out, "warning: {w}");
    }
    if listing.dead_letters.is_empty() {
        let _ = writeln!(out, "no dead letters");
        return out;
    }
    let dash = || "-".to_owned();
    let rows: Vec<Vec<String>> = listing
        .dead_letters
        .iter()
        .map(|d| {
            vec![
                d.id.to_string(),
                d.execution_id.clone().unwrap_or_else(dash),
                d.rec_index.map_or_else(dash, |i| i.to_string()),
                d.service.clone().unwrap_or_else(dash),
                format!("{}{}", d.reason, if d.replayable { "" } else { " (!)" }),
                d.token.clone(),
                d.delivery_count.map_or_else(dash, |n| n.to_string()),
                d.deaths.as_deref().map_or_else(dash, |s| one_line(s, 48)),
                time(d.first_death_at),
                time(d.last_death_at),
                if d.replay_count == 0 {
                    "-".to_owned()
                } else {
                    format!("{}x {}", d.replay_count, time(d.replayed_at))
                },
                d.error.as_deref().map_or_else(dash, |e| one_line(e, 100)),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "ID",
            "EXECUTION",
            "#",
            "SERVICE",
            "REASON",
            "TOKEN",
            "DELIVERIES",
            "X-DEATH",
            "FIRST_DEATH",
            "LAST_DEATH",
            "REPLAYED",
            "ERROR",
        ],
        &rows,
    ));
    let shown = listing.dead_letters.len() as i64;
    if listing.total > shown {
        let _ = writeln!(
            out,
            "showing {shown} of {} (oldest first; raise --limit or narrow with --reason/--execution/--service)",
            listing.total
        );
    }
    if listing.dead_letters.iter().any(|d| !d.replayable) {
        let _ = writeln!(out, "(!) not replayable: the message would only die again");
    }
    out
}

/// `dlq show` for people.
pub fn render_detail(d: &DeadLetterDetail) -> String {
    let s = &d.summary;
    let dash = || "-".to_owned();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "dead letter {}  reason {}{}  from {}",
        s.id,
        s.reason,
        if s.replayable {
            ""
        } else {
            " (not replayable)"
        },
        s.origin.as_str()
    );
    let _ = writeln!(
        out,
        "execution {}  item #{}  service {}  token {}",
        s.execution_id.clone().unwrap_or_else(dash),
        s.rec_index.map_or_else(dash, |i| i.to_string()),
        s.service.clone().unwrap_or_else(dash),
        s.token
    );
    let _ = writeln!(out, "error: {}", s.error.clone().unwrap_or_else(dash));
    let _ = writeln!(
        out,
        "deliveries {}  x-death {}",
        s.delivery_count.map_or_else(dash, |n| n.to_string()),
        s.deaths.clone().unwrap_or_else(dash)
    );
    let _ = writeln!(
        out,
        "first death {}  last death {}  archived {}  replayed {}x{}",
        time(s.first_death_at),
        time(s.last_death_at),
        time(Some(s.archived_at)),
        s.replay_count,
        s.replayed_at
            .map(|t| format!(" (last {})", time(Some(t))))
            .unwrap_or_default()
    );
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    let _ = writeln!(out, "properties: {}", pretty(&d.properties));
    let _ = writeln!(out, "headers: {}", pretty(&d.headers));
    match (&d.envelope, &d.body) {
        (Some(env), _) => {
            let _ = writeln!(out, "envelope (token masked): {}", pretty(env));
        }
        (None, Some(body)) => {
            let _ = writeln!(
                out,
                "body is not a purchase message: {}",
                d.decode_error.clone().unwrap_or_else(dash)
            );
            let _ = writeln!(out, "raw body ({} bytes, escaped): {body}", d.body_bytes);
        }
        (None, None) => {}
    }
    out
}

/// `dlq replay` for people.
pub fn render_replay(report: &ReplayReport) -> String {
    let mut out = String::new();
    if report.selected == 0 && report.results.is_empty() {
        let _ = writeln!(out, "no dead letters to replay");
        return out;
    }
    let dash = || "-".to_owned();
    let rows: Vec<Vec<String>> = report
        .results
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.execution_id.clone().unwrap_or_else(dash),
                r.rec_index.map_or_else(dash, |i| i.to_string()),
                r.service.clone().unwrap_or_else(dash),
                r.reason.to_string(),
                r.token.clone(),
                serde_json::to_value(r.outcome)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                r.detail.clone(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "ID",
            "EXECUTION",
            "#",
            "SERVICE",
            "REASON",
            "TOKEN",
            "OUTCOME",
            "DETAIL",
        ],
        &rows,
    ));
    let verb = if report.dry_run {
        "would replay"
    } else {
        "replayed"
    };
    let _ = writeln!(
        out,
        "{}: {verb} {}, not yet published {}, skipped {}, refused {}",
        if report.dry_run { "dry run" } else { "done" },
        report.replayed,
        report.unpublished,
        report.skipped,
        report.refused
    );
    out
}

/// `dlq purge` for people.
pub fn render_purge(report: &PurgeReport) -> String {
    let mut out = format!("purged {} dead letters", report.deleted);
    if !report.by_reason.is_empty() {
        let parts: Vec<String> = report
            .by_reason
            .iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        let _ = write!(out, " ({})", parts.join(", "));
    }
    out.push('\n');
    if !report.not_found.is_empty() {
        let ids: Vec<String> = report.not_found.iter().map(i64::to_string).collect();
        let _ = writeln!(out, "not found: {}", ids.join(", "));
    }
    out
}
