//! buyonce producer: how other systems hand approved executions to the fleet.
//!
//! An execution document (DESIGN §8) arrives by CLI (`enqueue`) or HTTP (`serve`). It is
//! recorded with all its items in one Postgres transaction (the outbox), then one persistent,
//! confirmed, mandatory message per item is published. A crash or a broker failure between the
//! two loses nothing: the relay ([`buyonce_shared::relay`], run by `serve` and by the reaper)
//! publishes committed items that were never published.
//!
//! * [`submit`]: record + publish, idempotent resubmission, conflicts.
//! * [`redrive`]: failed/dead (optionally cancelled) items back to queued, same tokens.
//! * [`cancel`], [`fleet`]: the operator brakes: cancel an execution, pause the fleet, the
//!   fleet summary with today's spend.
//! * [`dlq`]: dead letters archived in Postgres: list, show, replay (same token), purge.
//! * [`status`]: the execution and its items, masked tokens only.
//! * [`api`], [`serve`]: the HTTP API and the long-running server with its relay.
//! * [`cli`]: the one-shot commands and their exit codes.

pub mod api;
pub mod broker;
pub mod cancel;
pub mod cli;
pub mod config;
pub mod dlq;
pub mod fleet;
pub mod metrics;
pub mod redrive;
pub mod serve;
pub mod status;
pub mod submit;

pub use config::{ApiTokens, ServeConfig, ServeOverrides};
pub use serve::run;
pub use submit::{submit, SubmitError, SubmitReport};
