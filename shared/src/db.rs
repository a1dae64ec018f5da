//! Postgres: connection pool, TLS, database creation and the embedded migration runner.
//!
//! Migrations use a minimal runner rather than a crate: every replica runs them at start, so
//! they must be safe when several processes start at once. The runner holds a transaction-scoped
//! advisory lock while it reads `buyonce_migrations` and applies what is missing, all in one
//! transaction (Postgres DDL is transactional), so concurrent starters serialise and a failed
//! migration leaves nothing half-applied. refinery, the maintained crate for tokio-postgres,
//! does not take such a lock, and its tokio-postgres pin would constrain our upgrades.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;
use tracing::{debug, info, warn};

use crate::config::{redact_url, DatabaseConfig};
use crate::tls::{client_config, Verify};

/// Embedded migrations, applied in order. Never edit one that has shipped; add a new one.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "core", include_str!("../migrations/0001_core.sql")),
    (
        2,
        "dead_letters",
        include_str!("../migrations/0002_dead_letters.sql"),
    ),
    (3, "brakes", include_str!("../migrations/0003_brakes.sql")),
    (
        4,
        "ambiguous_purchases",
        include_str!("../migrations/0004_ambiguous_purchases.sql"),
    ),
    (
        5,
        "plan_stable_indexes",
        include_str!("../migrations/0005_plan_stable_indexes.sql"),
    ),
];

/// TLS requirement parsed from the URL's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// tokio-postgres understands `disable|prefer|require` only; `verify-ca`/`verify-full` are
/// taken out here, mapped to `require` for it, and enforced by our rustls verifier.
/// The `sslmode` the URL names, if it names one.
fn split_explicit_sslmode(url: &str) -> (String, Option<SslMode>) {
    let modes = [
        ("sslmode=verify-full", SslMode::VerifyFull),
        ("sslmode=verify-ca", SslMode::VerifyCa),
        ("sslmode=require", SslMode::Require),
        ("sslmode=disable", SslMode::Disable),
        ("sslmode=prefer", SslMode::Prefer),
    ];
    for (needle, mode) in modes {
        if url.contains(needle) {
            let rewritten = match mode {
                SslMode::VerifyFull | SslMode::VerifyCa => url.replace(needle, "sslmode=require"),
                _ => url.to_owned(),
            };
            return (rewritten, Some(mode));
        }
    }
    (url.to_owned(), None)
}

/// Without an `sslmode` in the URL: `prefer` when every host is this machine (a Unix
/// socket, `localhost`, a loopback address), where the traffic never leaves it; otherwise
/// `verify-full`, because `prefer` would accept any certificate and fall back to plain text
/// without a word, so a man in the middle would see the password.
fn default_sslmode(pg: &tokio_postgres::Config) -> SslMode {
    use tokio_postgres::config::Host;
    let loopback = |host: &Host| match host {
        #[cfg(unix)]
        Host::Unix(_) => true,
        Host::Tcp(name) => crate::net::is_loopback_host(name),
    };
    let addrs_loopback = pg.get_hostaddrs().iter().all(|ip| ip.is_loopback());
    if pg.get_hosts().iter().all(loopback) && addrs_loopback {
        SslMode::Prefer
    } else {
        SslMode::VerifyFull
    }
}

impl SslMode {
    fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Validates a database URL without connecting (used by config parsing).
pub fn check_url(url: &str) -> Result<(), String> {
    let (url, _) = split_explicit_sslmode(url);
    tokio_postgres::Config::from_str(&url)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The connection settings and the effective `sslmode` (and whether the URL named it).
fn pg_config(cfg: &DatabaseConfig) -> anyhow::Result<(tokio_postgres::Config, SslMode, bool)> {
    let (url, named) = split_explicit_sslmode(cfg.url.expose());
    let mut pg = tokio_postgres::Config::from_str(&url).with_context(|| {
        format!(
            "BUYONCE_DATABASE_URL {} is not a valid Postgres URL",
            redact_url(&url)
        )
    })?;
    let mode = named.unwrap_or_else(|| default_sslmode(&pg));
    if named.is_none() && mode == SslMode::VerifyFull {
        pg.ssl_mode(tokio_postgres::config::SslMode::Require);
    }
    pg.application_name("buyonce");
    pg.connect_timeout(Duration::from_secs(10));
    let tcp = Keepalive::within(cfg.tcp_timeout);
    pg.keepalives(true)
        .keepalives_idle(tcp.idle)
        .keepalives_interval(tcp.interval)
        .keepalives_retries(tcp.count)
        .tcp_user_timeout(cfg.tcp_timeout);
    // Ours first: a setting the URL's own `options` names comes later and wins.
    let mut options = session_options(cfg, &tcp);
    if let Some(schema) = &cfg.schema {
        options.push_str(&format!(" -c search_path={schema}"));
    }
    if let Some(given) = pg.get_options() {
        options.push(' ');
        options.push_str(given);
    }
    pg.options(options.trim());
    Ok((pg, mode, named.is_some()))
}

/// TCP keepalive timing that notices a silent peer within a budget: `idle` of silence, then
/// `count` probes `interval` apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Keepalive {
    idle: Duration,
    interval: Duration,
    count: u32,
}

impl Keepalive {
    /// Half the budget idle, the other half for (up to) four probes, in whole seconds
    /// (Postgres' unit).
    fn within(budget: Duration) -> Keepalive {
        let secs = budget.as_secs().max(4);
        let idle = secs / 2;
        let interval = ((secs - idle) / 4).max(1);
        Keepalive {
            idle: Duration::from_secs(idle),
            interval: Duration::from_secs(interval),
            count: ((secs - idle) / interval).min(4) as u32,
        }
    }
}

/// Startup `options` that make the **server** drop a session whose client went silent: a
/// partitioned or reset client's session would otherwise stay (with its advisory locks) for the
/// server's default keepalive of two hours. Plus the statement timeout, and a bound on a
/// transaction left open (nothing here holds one across a provider call).
fn session_options(cfg: &DatabaseConfig, tcp: &Keepalive) -> String {
    let mut options = format!(
        "-c tcp_keepalives_idle={} -c tcp_keepalives_interval={} -c tcp_keepalives_count={} \
         -c tcp_user_timeout={} -c idle_in_transaction_session_timeout={}",
        tcp.idle.as_secs(),
        tcp.interval.as_secs(),
        tcp.count,
        cfg.tcp_timeout.as_millis(),
        (cfg.tcp_timeout * 3).as_millis(),
    );
    if let Some(timeout) = cfg.statement_timeout {
        options.push_str(&format!(" -c statement_timeout={}", timeout.as_millis()));
    }
    options
}

fn manager(
    cfg: &DatabaseConfig,
    pg: tokio_postgres::Config,
    mode: SslMode,
) -> anyhow::Result<Manager> {
    let mc = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    // With a root certificate, libpq upgrades `require` to `verify-ca`; so do we.
    let verify = match (mode, cfg.ca_file.is_some()) {
        (SslMode::Disable, _) => return Ok(Manager::from_config(pg, NoTls, mc)),
        (SslMode::VerifyFull, _) => Verify::Full,
        (SslMode::VerifyCa, _) | (SslMode::Require, true) => Verify::Chain,
        (SslMode::Prefer | SslMode::Require, false) => Verify::None,
        (SslMode::Prefer, true) => Verify::Chain,
    };
    let tls = client_config(verify, cfg.ca_file.as_deref())?;
    Ok(Manager::from_config(
        pg,
        tokio_postgres_rustls::MakeRustlsConnect::new(tls),
        mc,
    ))
}

/// Builds a pool without touching the database.
pub fn pool(cfg: &DatabaseConfig) -> anyhow::Result<Pool> {
    let (pg, mode, _) = pg_config(cfg)?;
    pool_from(cfg, pg, mode)
}

fn pool_from(
    cfg: &DatabaseConfig,
    pg: tokio_postgres::Config,
    mode: SslMode,
) -> anyhow::Result<Pool> {
    Pool::builder(manager(cfg, pg, mode)?)
        .max_size(cfg.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(30)))
        .create_timeout(Some(Duration::from_secs(10)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .context("building the Postgres pool")
}

/// Connects: creates the database if it does not exist, creates the schema if one is
/// configured, applies pending migrations, and returns the pool.
pub async fn connect(cfg: &DatabaseConfig) -> anyhow::Result<Pool> {
    let (pg, mode, named) = pg_config(cfg)?;
    tracing::info!(
        sslmode = mode.as_str(),
        from = if named {
            "BUYONCE_DATABASE_URL"
        } else {
            "default for the host"
        },
        "Postgres TLS mode"
    );
    let pool = pool_from(cfg, pg, mode)?;
    let first = pool.get().await;
    if let Err(e) = &first {
        if db_error_code(e) == Some(&SqlState::INVALID_CATALOG_NAME) {
            create_database(cfg).await?;
        }
    }
    drop(first);
    let target = redact_url(cfg.url.expose());
    let client = pool.get().await.map_err(|e| {
        let why = pool_error_text(&e);
        anyhow::anyhow!(
            "cannot connect to Postgres at {target}: {why}{}",
            tls_hint(&why)
        )
    })?;
    if let Some(schema) = &cfg.schema {
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {}",
                quote_ident(schema)
            ))
            .await
            .with_context(|| format!("creating schema {schema}"))?;
    }
    drop(client);
    migrate(&pool).await?;
    Ok(pool)
}

/// Names what to check when the server's certificate was refused (rustls says only
/// "invalid peer certificate: UnknownIssuer" or "NotValidForName").
fn tls_hint(why: &str) -> &'static str {
    if why.contains("certificate") {
        " (TLS certificate problem: check BUYONCE_DATABASE_CA_FILE, and the host name and \
         sslmode in BUYONCE_DATABASE_URL)"
    } else {
        ""
    }
}

/// The cause of a pool error as text, including the Postgres message when there is one.
pub fn pool_error_text(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(pg) => pg_error_text(pg),
        other => other.to_string(),
    }
}

/// A Postgres error with its server message (tokio-postgres' Display hides it as "db error").
pub fn pg_error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

fn db_error_code(e: &deadpool_postgres::PoolError) -> Option<&SqlState> {
    match e {
        deadpool_postgres::PoolError::Backend(pg) => pg.code(),
        _ => None,
    }
}

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn create_database(cfg: &DatabaseConfig) -> anyhow::Result<()> {
    let (pg, mode, _) = pg_config(cfg)?;
    let name = pg
        .get_dbname()
        .map(str::to_owned)
        .or_else(|| pg.get_user().map(str::to_owned))
        .context("BUYONCE_DATABASE_URL names no database")?;
    let mut admin_cfg = pg.clone();
    admin_cfg.dbname("postgres");
    let admin = Pool::builder(manager(cfg, admin_cfg, mode)?)
        .max_size(1)
        .runtime(Runtime::Tokio1)
        .build()?;
    let client = admin.get().await.map_err(|e| {
        anyhow::anyhow!(
            "connecting to database postgres to create {name}: {}",
            pool_error_text(&e)
        )
    })?;
    match client
        .batch_execute(&format!("CREATE DATABASE {}", quote_ident(&name)))
        .await
    {
        Ok(()) => info!(database = %name, "created database"),
        // Another replica created it first: fine. (Two concurrent CREATE DATABASE can also
        // collide on the catalog's unique index instead of reporting duplicate_database.)
        Err(e)
            if e.code() == Some(&SqlState::DUPLICATE_DATABASE)
                || e.code() == Some(&SqlState::UNIQUE_VIOLATION) =>
        {
            debug!(database = %name, "database already created by another process")
        }
        Err(e) => {
            return Err(anyhow::anyhow!(
                "creating database {name}: {}",
                pg_error_text(&e)
            ))
        }
    }
    Ok(())
}

/// Applies pending migrations; returns the versions applied by this call.
pub async fn migrate(pool: &Pool) -> anyhow::Result<Vec<i32>> {
    let mut client = pool
        .get()
        .await
        .map_err(|e| anyhow::anyhow!("migrations: {}", pool_error_text(&e)))?;
    let tx = client.transaction().await.context("migrations: begin")?;
    // A migration may rewrite a big table, and other replicas wait for it on the lock below:
    // no BUYONCE_DATABASE_STATEMENT_TIMEOUT in this transaction.
    tx.batch_execute("SET LOCAL statement_timeout = 0")
        .await
        .context("migrations: statement timeout")?;
    // Per schema, so tests that each own a schema do not wait on one another.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('buyonce.migrate.' || current_schema()))",
        &[],
    )
    .await
    .context("migrations: advisory lock")?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS buyonce_migrations (
             version    INT PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(|e| anyhow::anyhow!("migrations: {}", pg_error_text(&e)))?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM buyonce_migrations", &[])
        .await
        .context("migrations: reading applied versions")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut newly = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql)
            .await
            .map_err(|e| anyhow::anyhow!("migration {version} ({name}): {}", pg_error_text(&e)))?;
        tx.execute(
            "INSERT INTO buyonce_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await
        .context("migrations: recording version")?;
        newly.push(*version);
    }
    if let Some(max) = applied.iter().max() {
        let known = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
        if *max > known {
            warn!(
                database_version = max,
                binary_version = known,
                "database schema is newer than this binary; running anyway"
            );
        }
    }
    tx.commit().await.context("migrations: commit")?;
    if !newly.is_empty() {
        info!(versions = ?newly, "applied database migrations");
    }
    Ok(newly)
}

/// Whether an error means the database could not be reached (vs. a statement failing).
pub fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    e.is_closed() || e.as_db_error().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_verify_forms_are_rewritten_for_tokio_postgres() {
        let (url, mode) = split_explicit_sslmode("postgres://h/db?sslmode=verify-full");
        assert_eq!(url, "postgres://h/db?sslmode=require");
        assert_eq!(mode, Some(SslMode::VerifyFull));
        assert_eq!(split_explicit_sslmode("postgres://h/db").1, None);
        assert!(check_url("postgres://h/db?sslmode=verify-ca").is_ok());
        assert!(check_url("postgres://h/db?sslmode=bogus").is_err());
    }

    #[test]
    fn keepalives_notice_a_silent_peer_within_the_budget() {
        for secs in [4, 5, 20, 21, 60, 600] {
            let k = Keepalive::within(Duration::from_secs(secs));
            let noticed = k.idle + k.interval * k.count;
            assert!(noticed <= Duration::from_secs(secs), "{secs}s: {k:?}");
            assert!(k.interval >= Duration::from_secs(1), "{secs}s: {k:?}");
        }
        assert_eq!(
            Keepalive::within(Duration::from_secs(20)),
            Keepalive {
                idle: Duration::from_secs(10),
                interval: Duration::from_secs(2),
                count: 4
            }
        );
    }

    #[test]
    fn the_server_is_asked_for_keepalives_and_timeouts_and_the_url_options_win() {
        let mut cfg = DatabaseConfig::new(
            "postgres://127.0.0.1/db?options=-c%20search_path%3Dmine%20-c%20statement_timeout%3D5000",
        );
        cfg.schema = Some("t_1".into());
        let (pg, _, _) = pg_config(&cfg).unwrap();
        let options = pg.get_options().unwrap();
        for part in [
            "-c tcp_keepalives_idle=10",
            "-c tcp_keepalives_interval=2",
            "-c tcp_keepalives_count=4",
            "-c tcp_user_timeout=20000",
            "-c idle_in_transaction_session_timeout=60000",
            "-c statement_timeout=30000",
            "-c search_path=t_1",
        ] {
            assert!(options.contains(part), "{part} not in {options}");
        }
        // Postgres applies `-c` settings in order: the URL's own come last.
        assert!(
            options.ends_with("-c search_path=mine -c statement_timeout=5000"),
            "{options}"
        );
        assert_eq!(pg.get_tcp_user_timeout(), Some(&Duration::from_secs(20)));
        assert!(pg.get_keepalives());

        cfg.statement_timeout = None;
        let (pg, _, _) = pg_config(&cfg).unwrap();
        assert_eq!(
            pg.get_options()
                .unwrap()
                .matches("statement_timeout")
                .count(),
            1
        );
    }

    fn effective(url: &str) -> (SslMode, bool) {
        let cfg = DatabaseConfig::new(url.to_owned());
        let (pg, mode, named) = pg_config(&cfg).unwrap();
        if mode == SslMode::VerifyFull {
            // tokio-postgres must insist on TLS; our verifier checks the rest.
            assert_eq!(
                pg.get_ssl_mode(),
                tokio_postgres::config::SslMode::Require,
                "{url}"
            );
        }
        (mode, named)
    }

    #[test]
    fn without_an_sslmode_only_loopback_hosts_may_go_unverified() {
        for url in [
            "postgres://127.0.0.1:5432/db",
            "postgres://localhost/db",
            "postgres://[::1]:5432/db",
            "postgres:///db?host=/var/run/postgresql",
            "postgres://localhost,127.0.0.2/db",
            "host=localhost dbname=db",
        ] {
            assert_eq!(effective(url), (SslMode::Prefer, false), "{url}");
        }
        for url in [
            "postgres://db.example.com/db",
            "postgres://10.0.0.5:5432/db",
            "postgres://localhost,db.example.com/db",
            "postgres://localhost/db?hostaddr=10.0.0.5",
            "host=db.example.com dbname=db",
        ] {
            assert_eq!(effective(url), (SslMode::VerifyFull, false), "{url}");
        }
        // A mode the URL names is kept, loopback or not.
        assert_eq!(
            effective("postgres://db.example.com/db?sslmode=disable"),
            (SslMode::Disable, true)
        );
        assert_eq!(
            effective("postgres://127.0.0.1/db?sslmode=verify-ca"),
            (SslMode::VerifyCa, true)
        );
    }
}
