//! buyonce worker fleet and reaper.
//!
//! Layout: [`startup`] (builds a worker from its configuration — the binary and the test harness
//! both call it), [`consumer`] (the AMQP loop and the one place outcomes become acks / retries /
//! dead letters), [`handler`] (decides an [`handler::Outcome`] per message), [`executors`] (one
//! file per provider service), [`clients`] (AWS SDK clients per account and region, the Azure
//! Resource Manager client), [`error`] (why a purchase did not happen), [`reaper`] (the
//! stale-row sweeper), plus [`database_watch`] (whether Postgres answers), [`metrics`], [`http`] and [`config`]. The store, and all SQL, lives
//! in `buyonce_shared::store`.

pub mod clients;
pub mod config;
pub mod consumer;
pub mod database_watch;
pub mod error;
pub mod executors;
pub mod handler;
pub mod http;
pub mod metrics;
pub mod reaper;
pub mod startup;
