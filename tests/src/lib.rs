//! buyonce integration support: the harness the integration suites (in `tests/tests/`), the
//! benchmark and the demo build their isolated worlds with — each with its own fakecloud (the
//! `buyonce-fakecloud` crate) — and the throwaway Postgres and RabbitMQ nodes of the suites that
//! must stop or reconfigure a server.

pub mod harness;
pub mod nodes;
