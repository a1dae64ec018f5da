//! buyonce worker fleet and reaper.
//!
//! Layout: [`consumer`] (the AMQP loop and the one place outcomes become acks / retries / dead
//! letters), [`handler`] (decides an [`handler::Outcome`] per message), [`executors`] (one file per
//! provider service), [`reaper`] (the stale-row sweeper), plus clients ([`aws`], [`azure`]),
//! [`locks`], [`metrics`], [`http`] and [`config`]. The store lives in `buyonce_shared::store`.

pub mod aws;
pub mod azure;
pub mod config;
pub mod consumer;
pub mod executors;
pub mod handler;
pub mod http;
pub mod locks;
pub mod metrics;
pub mod reaper;
