//! buyonce core: the idempotency token, the execution document and message envelope, the
//! Postgres store and the RabbitMQ topology shared by the producer, the worker and the reaper.

pub mod amqp;
pub mod config;
pub mod db;
pub mod document;
pub mod duration;
pub mod envelope;
pub mod http_server;
pub mod ids;
pub mod net;
pub mod relay;
pub mod shutdown;
pub mod store;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod text;
pub mod tls;
pub mod token;

pub use document::{ExecutionDocument, Payment, Provider, Recommendation, Service, Term};
pub use envelope::{DeadLetterReason, PurchaseMessage};
pub use ids::{ExecutionId, LineageKey, RecIndex};
pub use token::IdempotencyToken;
