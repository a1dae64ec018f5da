//! Isolation helpers for tests, benchmarks and the demo: each user gets its own Postgres schema
//! and its own queue-name prefix, so many run in parallel against one server and one broker.
//!
//! The servers come from `BUYONCE_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/buyonce_test`) and `BUYONCE_TEST_AMQP_URL` (default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`).

use std::time::Duration;

use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::Connection;

use crate::amqp::{self, Publisher, Topology};
use crate::config::{AmqpConfig, DatabaseConfig};
use crate::db;
use crate::store::Store;

pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/buyonce_test";
pub const DEFAULT_TEST_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A short unique name: `<prefix>_<8 hex>`.
pub fn unique_name(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}_{}", &id[..10])
}

pub fn database_url() -> String {
    std::env::var("BUYONCE_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.into())
}

pub fn amqp_url() -> String {
    std::env::var("BUYONCE_TEST_AMQP_URL").unwrap_or_else(|_| DEFAULT_TEST_AMQP_URL.into())
}

/// A migrated schema of its own.
/// The pool size a test asked for, unless `BUYONCE_TEST_POOL_SIZE` sets one for the whole
/// run: CI runs the store, producer and worker suites once with `2`, which fails (a pool
/// timeout) wherever a code path waits for a second connection while holding one.
pub fn pool_size(requested: usize) -> usize {
    std::env::var("BUYONCE_TEST_POOL_SIZE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n >= 2)
        .unwrap_or(requested)
}

pub struct TestDb {
    pub config: DatabaseConfig,
    pub store: Store,
    pub schema: String,
}

impl TestDb {
    /// Creates a fresh schema (pool of `pool_size`, kept small: the server allows 100
    /// connections for all parallel tests together) and migrates it.
    pub async fn new(pool_size: usize) -> anyhow::Result<Self> {
        let schema = unique_name("t");
        let mut config = DatabaseConfig::new(database_url());
        config.schema = Some(schema.clone());
        config.pool_size = self::pool_size(pool_size);
        let pool = db::connect(&config).await?;
        Ok(Self {
            config,
            store: Store::new(pool),
            schema,
        })
    }

    /// Drops the schema and everything in it.
    pub async fn cleanup(self) -> anyhow::Result<()> {
        let client = self.store.pool().get().await?;
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                db::quote_ident(&self.schema)
            ))
            .await?;
        Ok(())
    }
}

/// A declared topology under a prefix of its own.
pub struct TestBroker {
    pub config: AmqpConfig,
    pub connection: Connection,
    pub topology: Topology,
    pub publisher: Publisher,
}

impl TestBroker {
    /// Declares a fresh topology with short retry delays (tests should not wait minutes).
    pub async fn new() -> anyhow::Result<Self> {
        Self::with_delays(vec![
            Duration::from_millis(200),
            Duration::from_millis(500),
            Duration::from_secs(1),
        ])
        .await
    }

    pub async fn with_delays(retry_delays: Vec<Duration>) -> anyhow::Result<Self> {
        let prefix = unique_name("t").replace('_', "-");
        let config = AmqpConfig::new(amqp_url());
        let connection = amqp::connect(&config, &format!("buyonce-test {prefix}")).await?;
        let topology = Topology::new(prefix, 20, retry_delays);
        topology.declare(&connection).await?;
        let publisher = Publisher::new(&connection, topology.clone()).await?;
        Ok(Self {
            config,
            connection,
            topology,
            publisher,
        })
    }

    /// Number of messages ready in `queue` (declared passively).
    pub async fn queue_len(&self, queue: &str) -> anyhow::Result<u32> {
        crate::amqp::queue_len(&self.connection, queue).await
    }

    /// Deletes every queue and exchange of the topology.
    pub async fn cleanup(self) -> anyhow::Result<()> {
        let channel = self.connection.create_channel().await?;
        let t = &self.topology;
        let mut queues = vec![t.purchases_queue(), t.dead_queue()];
        queues.extend((0..t.retry_delays.len()).map(|i| t.retry_queue(i)));
        for q in queues {
            let _ = channel
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for x in [t.work_exchange(), t.dead_exchange(), t.retry_exchange()] {
            let _ = channel
                .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
        let _ = self.connection.close(200, "test done".into()).await;
        Ok(())
    }
}
