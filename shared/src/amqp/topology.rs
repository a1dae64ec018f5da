//! The broker topology, declared idempotently by every process at start.
//!
//! ```text
//! <prefix> (direct) ──purchase──▶ <prefix>.purchases (quorum, x-delivery-limit)
//!     ▲                                 │ dead-lettered (at-least-once)
//!     │                                 ▼
//!     │                           <prefix>.dead (fanout) ──▶ <prefix>.dead-letters (quorum,
//!     │                                                        x-delivery-limit 2^31-1)
//!     │ expired (at-least-once)
//! <prefix>.retry.<delay> (quorum; per-message TTL) ◀── <prefix>.retry (direct) ◀── worker
//! ```
//!
//! Retry wait queues have no consumers: a message waits out its TTL and the broker dead-letters
//! it back to the work exchange. One queue per delay level keeps the TTLs in a queue similar,
//! so a message never waits long behind a longer one at the head (quorum queues expire
//! messages from the head only).

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ExchangeKind};
use tracing::warn;

use crate::duration::format_duration;

/// Routing key of purchase messages on the work exchange.
pub const PURCHASE_ROUTING_KEY: &str = "purchase";

/// `x-delivery-limit` of the dead-letter queue: a limit no archiver reaches. The queue
/// dead-letters nowhere, so a message over its limit is dropped, and it must have a limit:
/// RabbitMQ 4.0 gives a quorum queue without one a limit of 20 (measured on 4.0.5: a message
/// is gone on its 21st return), and `-1`, which means "unlimited" on 4.x, drops a message on its
/// first return on 3.10 (measured on 3.10.8). A large explicit limit behaves the same on both.
pub const DEAD_QUEUE_DELIVERY_LIMIT: i32 = i32::MAX;

/// Names and arguments of every exchange and queue, from the prefix.
#[derive(Debug, Clone)]
pub struct Topology {
    pub prefix: String,
    pub delivery_limit: u32,
    pub retry_delays: Vec<Duration>,
}

impl Topology {
    pub fn new(
        prefix: impl Into<String>,
        delivery_limit: u32,
        retry_delays: Vec<Duration>,
    ) -> Self {
        Self {
            prefix: prefix.into(),
            delivery_limit,
            retry_delays,
        }
    }

    pub fn from_config(c: &crate::config::CommonConfig) -> Self {
        Self::new(
            c.queue_prefix.clone(),
            c.delivery_limit,
            c.retry_delays.clone(),
        )
    }

    /// The work exchange (direct).
    pub fn work_exchange(&self) -> String {
        self.prefix.clone()
    }

    /// The quorum queue workers consume.
    pub fn purchases_queue(&self) -> String {
        format!("{}.purchases", self.prefix)
    }

    /// The dead-letter exchange (fanout).
    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// The dead-letter queue (archived into Postgres, see `amqp::dead_letters`).
    pub fn dead_queue(&self) -> String {
        format!("{}.dead-letters", self.prefix)
    }

    /// The retry exchange (direct; routing key = level name).
    pub fn retry_exchange(&self) -> String {
        format!("{}.retry", self.prefix)
    }

    /// Name of the wait queue for delay level `i`, e.g. `buyonce.retry.30s`. The delay is in
    /// the name so changing the levels declares new queues instead of clashing with old ones.
    pub fn retry_level_name(&self, i: usize) -> String {
        format_duration(self.retry_delays[i.min(self.retry_delays.len() - 1)])
    }

    pub fn retry_queue(&self, i: usize) -> String {
        format!("{}.retry.{}", self.prefix, self.retry_level_name(i))
    }

    fn quorum_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        // Quorum: replicated, durable, and the only type with at-least-once dead-lettering.
        args.insert("x-queue-type".into(), lstr("quorum"));
        args
    }

    /// Declares everything, on a channel of its own. Idempotent: re-declaring with the same
    /// arguments is a no-op; with different ones (e.g. another delivery limit) the broker
    /// refuses and the error says so — except for a dead-letter queue declared by an older
    /// buyonce without its delivery limit, which is kept with a warning (see
    /// [`Topology::declare_dead_queue`]).
    pub async fn declare(&self, connection: &Connection) -> anyhow::Result<()> {
        self.declare_dead_queue(connection).await?;
        let channel = open(connection).await?;
        self.declare_rest(&channel).await?;
        let _ = channel.close(200, "declared".into()).await;
        Ok(())
    }

    /// The dead-letter queue, with [`DEAD_QUEUE_DELIVERY_LIMIT`]. One declared by a buyonce
    /// before that limit existed has none, and a queue's arguments cannot change: it is kept
    /// (refusing to start would stop purchases over the archive queue), and a warning says how
    /// to give it the limit without losing what it holds — a policy, which applies to a queue
    /// without the argument: `delivery-limit` 2147483647 (checked on 4.0.5: the queue then
    /// keeps a message through 25 returns).
    async fn declare_dead_queue(&self, connection: &Connection) -> anyhow::Result<()> {
        let dead_queue = self.dead_queue();
        let mut args = self.quorum_args();
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(DEAD_QUEUE_DELIVERY_LIMIT),
        );
        let channel = open(connection).await?;
        let declared = self
            .declare_queue(&channel, &dead_queue, durable_queue(), args)
            .await;
        if let Err(e) = declared {
            let text = e.to_string();
            if !(text.contains("x-delivery-limit") && text.contains("current is none")) {
                return Err(e);
            }
            // The refusal closed that channel.
            let channel = open(connection).await?;
            self.declare_queue(&channel, &dead_queue, durable_queue(), self.quorum_args())
                .await?;
            let _ = channel.close(200, "declared".into()).await;
            warn!(
                queue = %dead_queue,
                "the dead-letter queue was declared by an older buyonce without a delivery limit: \
                 on RabbitMQ 4.x it drops a dead letter returned to it a 21st time (e.g. while \
                 Postgres is down for the archiver). Give it the limit with a policy: \
                 rabbitmqctl set_policy --apply-to quorum_queues buyonce-dead-letters \
                 '^{}$' '{{\"delivery-limit\": {}}}' (or delete the queue once it is empty)",
                regex_escape(&dead_queue),
                DEAD_QUEUE_DELIVERY_LIMIT
            );
        } else {
            let _ = channel.close(200, "declared".into()).await;
        }
        Ok(())
    }

    async fn declare_rest(&self, channel: &Channel) -> anyhow::Result<()> {
        let durable_queue = durable_queue();
        // Durable everything: a broker restart must not lose the topology or messages.
        let durable_exchange = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let declare_exchange = |name: String, kind: ExchangeKind| async move {
            channel
                .exchange_declare(
                    name.as_str().into(),
                    kind,
                    durable_exchange,
                    FieldTable::default(),
                )
                .await
                .map_err(|e| {
                    anyhow::anyhow!("declaring exchange {name}: {}", super::describe_error(&e))
                })
        };
        declare_exchange(self.work_exchange(), ExchangeKind::Direct).await?;
        declare_exchange(self.dead_exchange(), ExchangeKind::Fanout).await?;
        declare_exchange(self.retry_exchange(), ExchangeKind::Direct).await?;
        // Dead letters: nothing consumes them but the archiver.
        self.bind(channel, &self.dead_queue(), &self.dead_exchange(), "")
            .await?;

        let mut work_args = self.quorum_args();
        // Poison-message backstop: after this many redeliveries (e.g. the worker keeps
        // crashing on it) the broker dead-letters the message instead of looping forever.
        work_args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(self.delivery_limit as i32),
        );
        // Dead letters go to the DLQ; at-least-once so a dead-lettered message is never lost
        // between the two queues (requires overflow=reject-publish on the source queue).
        work_args.insert("x-dead-letter-exchange".into(), lstr(&self.dead_exchange()));
        work_args.insert("x-dead-letter-strategy".into(), lstr("at-least-once"));
        work_args.insert("x-overflow".into(), lstr("reject-publish"));
        let purchases = self.purchases_queue();
        self.declare_queue(channel, &purchases, durable_queue, work_args)
            .await?;
        self.bind(
            channel,
            &purchases,
            &self.work_exchange(),
            PURCHASE_ROUTING_KEY,
        )
        .await?;

        for i in 0..self.retry_delays.len() {
            let mut args = self.quorum_args();
            // Expired messages return to the work exchange, at least once.
            args.insert("x-dead-letter-exchange".into(), lstr(&self.work_exchange()));
            args.insert(
                "x-dead-letter-routing-key".into(),
                lstr(PURCHASE_ROUTING_KEY),
            );
            args.insert("x-dead-letter-strategy".into(), lstr("at-least-once"));
            args.insert("x-overflow".into(), lstr("reject-publish"));
            // No x-delivery-limit: nothing consumes a wait queue, so no message is delivered
            // from it (RabbitMQ 4's default limit of 20 cannot be reached).
            let queue = self.retry_queue(i);
            self.declare_queue(channel, &queue, durable_queue, args)
                .await?;
            self.bind(
                channel,
                &queue,
                &self.retry_exchange(),
                &self.retry_level_name(i),
            )
            .await?;
        }
        Ok(())
    }

    async fn declare_queue(
        &self,
        channel: &Channel,
        name: &str,
        options: QueueDeclareOptions,
        args: FieldTable,
    ) -> anyhow::Result<()> {
        channel
            .queue_declare(name.into(), options, args)
            .await
            .map(|_| ())
            .map_err(|e| {
                let text = super::describe_error(&e);
                let hint = if text.contains("PRECONDITION_FAILED") || text.contains("inequivalent")
                {
                    " (the queue exists with other arguments: delete it or keep the old settings, \
                     e.g. BUYONCE_DELIVERY_LIMIT)"
                } else {
                    ""
                };
                anyhow::anyhow!("declaring queue {name}: {text}{hint}")
            })
    }

    async fn bind(
        &self,
        channel: &Channel,
        queue: &str,
        exchange: &str,
        key: &str,
    ) -> anyhow::Result<()> {
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "binding {queue} to {exchange}: {}",
                    super::describe_error(&e)
                )
            })
    }
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

async fn open(connection: &Connection) -> anyhow::Result<Channel> {
    connection
        .create_channel()
        .await
        .map_err(|e| anyhow::anyhow!("opening a channel: {}", super::describe_error(&e)))
}

/// `name` as a policy pattern that matches only it.
fn regex_escape(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() && c != '-' && c != '_' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn lstr(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

/// Short string helper for header keys.
pub fn sstr(s: &str) -> ShortString {
    ShortString::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let t = Topology::new(
            "buyonce",
            20,
            vec![
                Duration::from_secs(1),
                Duration::from_secs(30),
                Duration::from_secs(600),
            ],
        );
        assert_eq!(t.purchases_queue(), "buyonce.purchases");
        assert_eq!(t.dead_exchange(), "buyonce.dead");
        assert_eq!(t.dead_queue(), "buyonce.dead-letters");
        assert_eq!(t.retry_queue(0), "buyonce.retry.1s");
        assert_eq!(t.retry_queue(2), "buyonce.retry.10m");
        assert_eq!(t.retry_queue(9), "buyonce.retry.10m");
    }
}
