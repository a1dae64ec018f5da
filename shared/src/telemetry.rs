//! Logging: one subscriber for every binary, pretty for people or JSON for collectors.

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::{fmt, prelude::*, EnvFilter};

use crate::config::LogFormat;

/// Installs the global tracing subscriber. `RUST_LOG` filters (default `info`). Safe to call
/// more than once (tests); later calls are ignored.
pub fn init(format: LogFormat) {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // At debug, every closed span is logged with its duration (`time.busy`, `time.idle`): one
    // item's trace then shows each provider call (`provider_call`, debug) and how long it took.
    // At info, spans only lend their fields to events.
    let span_events = if filter
        .max_level_hint()
        .is_some_and(|level| level >= LevelFilter::DEBUG)
    {
        FmtSpan::CLOSE
    } else {
        FmtSpan::NONE
    };
    // tokio-postgres logs every statement's parameters at debug: whole idempotency tokens,
    // which logs never carry (DESIGN §2). Capped at info whenever the filter goes below it.
    if filter
        .max_level_hint()
        .is_none_or(|level| level > LevelFilter::INFO)
    {
        if let Ok(cap) = "tokio_postgres=info".parse() {
            filter = filter.add_directive(cap);
        }
    }
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    // Every enclosing span's fields: an event inside a provider call still
                    // names its item (execution, index, masked token).
                    .with_span_list(true)
                    .with_span_events(span_events.clone())
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(
                fmt::layer()
                    .compact()
                    .with_target(false)
                    .with_span_events(span_events)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    let _ = result;
}

/// Logs an error with its whole cause chain on one line (`a: b: c`).
pub fn chain(err: &anyhow::Error) -> String {
    format!("{err:#}")
}
