//! Throwaway servers of our own: a Postgres cluster and a RabbitMQ node per test, each on free
//! loopback ports, in a temporary directory that `Drop` removes. The machine's services
//! (Postgres on 5432, RabbitMQ `rabbit@localhost` on 5672) are never touched: other ports,
//! other data directories, another Erlang node name and another Erlang cookie.
//!
//! Tests use them where the shared servers cannot serve: TLS-only listeners, password
//! authentication, and servers a test may stop, restart or cut connections of.
//!
//! Start-up cost on the 2-core development machine: [`PgCluster`] about 1 s (`initdb` is most
//! of it); [`RabbitNode`] about 5–7 s (the Erlang VM and RabbitMQ's boot steps), so a suite
//! starts one node per test that needs one, not one per assertion.
//!
//! One module per service: `postgres.rs` ([`PgCluster`]), `rabbitmq.rs` ([`RabbitNode`]),
//! `process.rs` (the workspace's binaries as child processes pointed at them, under a
//! [`KillOnDrop`]) and `netns.rs` ([`NetNs`]: a network namespace to run one in, whose
//! traffic to the others a partition test cuts). This module holds what they share and
//! [`world_on`], and re-exports the rest, so callers name `nodes::…` only.

mod netns;
mod postgres;
mod process;
mod rabbitmq;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use buyonce_shared::amqp::{self, Publisher, Topology};
use buyonce_shared::config::{AmqpConfig, DatabaseConfig};
use buyonce_shared::db;
use buyonce_shared::store::Store;
use buyonce_shared::testing::{unique_name, TestBroker, TestDb};
use tokio::process::Command;

use crate::harness::World;
use buyonce_fakecloud::{FakeCloud, FakeCloudConfig};

pub use netns::{remove_leftovers, Mode, NetNs, Target};
pub use postgres::{postgres_bin_dir, PgCluster, PgOptions};
pub use process::{
    find_log_event, log_events, process_env_with, spawn_binary, spawn_binary_in, wait_exit,
    KillOnDrop,
};
pub use rabbitmq::{rabbitmq_root, rabbitmq_sbin_dir, RabbitNode, RabbitOptions};

/// A free TCP port on 127.0.0.1 (bound to port 0, then released for the server to take).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding port 0")?;
    Ok(listener.local_addr()?.port())
}

/// A server's certificate files (PEM). Each node copies them into its own directory.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The server's certificate (chain).
    pub cert_file: PathBuf,
    /// The server's private key.
    pub key_file: PathBuf,
    /// CA certificates the server trusts for client certificates (RabbitMQ `verify_peer`).
    pub ca_file: Option<PathBuf>,
}

/// Percent-encodes a URL's user info part (RFC 3986 unreserved characters stay as they are).
fn url_encode(s: &str) -> String {
    const USERINFO: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, USERINFO).to_string()
}

/// Last `lines` lines of a log file, for error messages.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether this process runs as root (`id -u`; the workspace forbids the unsafe `geteuid`).
fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a command to completion; an error carries its output.
async fn run(cmd: &mut Command, what: &str) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {what}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("{what} failed ({}): {}", out.status, text.trim());
    }
    Ok(text)
}

/// A [`World`] whose database and broker are the given ones (e.g. a [`PgCluster`] and a
/// [`RabbitNode`], with TLS settings) instead of the machine's: its own schema in `database`,
/// its own queue prefix on `amqp`, a fakecloud of its own.
///
/// Child processes need the matching URLs: [`with_search_path`] for the database URL, and
/// the broker URL itself ([`World::process_env`] names the machine's servers).
pub async fn world_on(
    database: DatabaseConfig,
    amqp: AmqpConfig,
    fakecloud: FakeCloudConfig,
) -> anyhow::Result<World> {
    buyonce_shared::tls::install_crypto_provider();
    let schema = unique_name("t");
    let mut config = database;
    config.schema = Some(schema.clone());
    config.pool_size = buyonce_shared::testing::pool_size(config.pool_size.min(8));
    let pool = db::connect(&config).await?;
    let db = TestDb {
        config,
        store: Store::new(pool),
        schema,
    };
    let prefix = unique_name("t").replace('_', "-");
    let connection = amqp::connect(&amqp, &format!("buyonce-test {prefix}")).await?;
    let topology = Topology::new(
        prefix,
        20,
        vec![
            Duration::from_millis(200),
            Duration::from_millis(500),
            Duration::from_secs(1),
        ],
    );
    topology.declare(&connection).await?;
    let publisher = Publisher::new(&connection, topology.clone()).await?;
    let broker = TestBroker {
        config: amqp,
        connection,
        topology,
        publisher,
    };
    let fc = FakeCloud::start(fakecloud).await?;
    Ok(World { db, broker, fc })
}

/// `url` with `options=-c search_path=<schema>` added, for a child process to use a world's
/// schema.
pub fn with_search_path(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
}
