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
//! Running as root (CI and the development machine do): Postgres refuses to run as root, so
//! its commands run through `runuser -u postgres --` in a directory owned by `postgres`.
//! RabbitMQ runs as root from `/usr/lib/rabbitmq/bin` (not the `/usr/sbin` wrappers, which
//! `su` to the machine's `rabbitmq` user and write its logs) with `HOME` set to the node's
//! directory, where a cookie of its own lives; `rabbitmqctl` is run with the same `HOME`,
//! which is where the Erlang CLI looks for the cookie. The node registers with the machine's
//! `epmd` (port 4369), which is how `rabbitmqctl -n` finds it.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use buyonce_fakecloud::{FakeCloud, FakeCloudConfig};
use buyonce_shared::amqp::{self, Publisher, Topology};
use buyonce_shared::config::{AmqpConfig, DatabaseConfig};
use buyonce_shared::db;
use buyonce_shared::store::Store;
use buyonce_shared::testing::{unique_name, TestBroker, TestDb};
use tokio::process::Command;

use crate::harness::World;

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

fn random_hex(len: usize) -> String {
    let mut s = String::new();
    while s.len() < len {
        s.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    s.truncate(len);
    s
}

/// Last `lines` lines of a log file, for error messages.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
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

/// Whether this process runs as root (`id -u`; the workspace forbids the unsafe `geteuid`).
fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// Postgres
// ---------------------------------------------------------------------------------------------

/// How a [`PgCluster`] is set up.
#[derive(Debug, Clone, Default)]
pub struct PgOptions {
    /// Serve TLS with this certificate and key (`ssl = on`).
    pub tls: Option<ServerTls>,
    /// Accept TCP connections only over TLS (`hostssl` lines only in `pg_hba.conf`), so a
    /// plain connection is refused.
    pub tls_only: bool,
    /// Require a password (`scram-sha-256`) on TCP instead of `trust`. The unix socket stays
    /// `trust` for the cluster's own administration (roles, [`PgCluster::kill_connections`]).
    pub password_auth: bool,
}

/// A Postgres cluster of our own: `initdb` into a temporary directory, a free port on
/// 127.0.0.1, the unix socket in that directory. `Drop` stops it (immediate mode) and removes
/// the directory.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_root: bool,
    running: bool,
    options: PgOptions,
}

impl std::fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCluster")
            .field("dir", &self.dir.path())
            .field("port", &self.port)
            .field("running", &self.running)
            .finish()
    }
}

/// The newest installed Postgres server's `bin` directory (`/usr/lib/postgresql/<ver>/bin`),
/// or `BUYONCE_TEST_PG_BIN` when set.
pub fn postgres_bin_dir() -> anyhow::Result<PathBuf> {
    if let Ok(dir) = std::env::var("BUYONCE_TEST_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .with_context(|| format!("no Postgres server installed under {}", root.display()))?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .with_context(|| format!("no initdb under {}/<version>/bin", root.display()))
}

impl PgCluster {
    /// Creates and starts a cluster.
    pub async fn start(options: PgOptions) -> anyhow::Result<PgCluster> {
        let bin = postgres_bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("buyonce-pg-")
            .tempdir()
            .context("creating the cluster directory")?;
        let as_root = running_as_root();
        let mut cluster = PgCluster {
            dir,
            bin,
            port: free_port()?,
            as_root,
            running: false,
            options,
        };
        cluster.init().await?;
        cluster.start_again().await?;
        Ok(cluster)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// A command for one of the cluster's binaries, run as `postgres` when we are root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_root {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        }
    }

    /// Gives a path to the `postgres` user (when we are root), which runs the server.
    fn hand_to_postgres(&self, path: &Path) -> anyhow::Result<()> {
        if !self.as_root {
            return Ok(());
        }
        let id = |flag: &str| -> anyhow::Result<u32> {
            let out = std::process::Command::new("id")
                .args([flag, "postgres"])
                .output()
                .context("id postgres")?;
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .context("no postgres user on this machine")
        };
        std::os::unix::fs::chown(path, Some(id("-u")?), Some(id("-g")?))
            .with_context(|| format!("chown postgres {}", path.display()))
    }

    async fn init(&mut self) -> anyhow::Result<()> {
        self.hand_to_postgres(self.dir.path())?;
        let data = self.data_dir();
        run(
            self.command("initdb").arg("-D").arg(&data).args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            ]),
            "initdb",
        )
        .await?;
        let socket_dir = self.dir.path().display().to_string();
        // Throwaway data: durability off makes start-up and every commit cheaper.
        let mut conf = format!(
            "\n# buyonce test cluster\nlisten_addresses = '127.0.0.1'\nport = {}\n\
             unix_socket_directories = '{socket_dir}'\nfsync = off\nsynchronous_commit = off\n\
             full_page_writes = off\nshared_buffers = 32MB\nmax_connections = 100\n\
             password_encryption = 'scram-sha-256'\n",
            self.port
        );
        if let Some(tls) = &self.options.tls {
            // Postgres wants the key owned by its user and private; copies of our own.
            for (from, to) in [
                (&tls.cert_file, "server.crt"),
                (&tls.key_file, "server.key"),
            ] {
                let dest = data.join(to);
                std::fs::copy(from, &dest)
                    .with_context(|| format!("copying {} into the cluster", from.display()))?;
                std::fs::set_permissions(
                    &dest,
                    std::os::unix::fs::PermissionsExt::from_mode(0o600),
                )?;
                self.hand_to_postgres(&dest)?;
            }
            conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        }
        append(&data.join("postgresql.conf"), &conf)?;
        let method = if self.options.password_auth {
            "scram-sha-256"
        } else {
            "trust"
        };
        let host = if self.options.tls_only {
            "hostssl"
        } else {
            "host"
        };
        // No `host`/`hostnossl` line when TLS-only: a plain connection finds no entry and is
        // refused with "no pg_hba.conf entry ... no encryption".
        std::fs::write(
            data.join("pg_hba.conf"),
            format!("local all all trust\n{host} all all 127.0.0.1/32 {method}\n"),
        )
        .context("writing pg_hba.conf")?;
        Ok(())
    }

    /// Starts a stopped cluster (`pg_ctl -w start`), on the same port and data.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        let result = run(
            self.command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.log_file())
                .args(["-w", "-t", "60", "start"]),
            "pg_ctl start",
        )
        .await;
        if let Err(e) = result {
            bail!(
                "{e:#}\n--- postgres.log ---\n{}",
                tail(&self.log_file(), 20)
            );
        }
        self.running = true;
        Ok(())
    }

    /// Stops the cluster (`fast`: open connections are closed, nothing is lost).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        run(
            self.command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-w", "-t", "60", "-m", "fast", "stop"]),
            "pg_ctl stop",
        )
        .await?;
        self.running = false;
        Ok(())
    }

    /// Stops and starts the cluster again.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.start_again().await
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's directory (data, socket, log); removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `postgres://postgres@127.0.0.1:PORT/<db>`: the superuser over TCP (no password; with
    /// [`PgOptions::password_auth`] use [`PgCluster::url_as`] with a role of your own).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// `postgres://<user>:<password>@127.0.0.1:PORT/<db>`.
    pub fn url_as(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgres://{user}:{}@127.0.0.1:{}/{db}",
            url_encode(password),
            self.port
        )
    }

    /// Runs SQL as the superuser over the unix socket (always `trust`, whatever the TCP
    /// rules), e.g. `CREATE ROLE app LOGIN PASSWORD '…' CREATEDB`.
    pub async fn admin(&self, sql: &str) -> anyhow::Result<()> {
        let client = self.admin_client().await?;
        client
            .batch_execute(sql)
            .await
            .map_err(|e| anyhow::anyhow!("{}", db::pg_error_text(&e)))
    }

    async fn admin_client(&self) -> anyhow::Result<tokio_postgres::Client> {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(self.dir.path())
            .port(self.port)
            .user("postgres")
            .dbname("postgres")
            .application_name("buyonce-test-admin");
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .context("connecting to the test cluster's unix socket")?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// Terminates every other client connection (`pg_terminate_backend`); returns how many.
    pub async fn kill_connections(&self) -> anyhow::Result<u64> {
        let client = self.admin_client().await?;
        let rows = client
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'",
                &[],
            )
            .await
            .map_err(|e| anyhow::anyhow!("{}", db::pg_error_text(&e)))?;
        Ok(rows.iter().filter(|r| r.get::<_, bool>(0)).count() as u64)
    }

    /// The server's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            // Immediate: nothing here needs a clean shutdown, and Drop should be quick.
            let mut cmd = if self.as_root {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", "postgres", "--"])
                    .arg(self.bin.join("pg_ctl"));
                c
            } else {
                std::process::Command::new(self.bin.join("pg_ctl"))
            };
            let _ = cmd
                .arg("-D")
                .arg(self.data_dir())
                .args(["-w", "-t", "30", "-m", "immediate", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // The TempDir removes the directory after this.
    }
}

fn append(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// RabbitMQ
// ---------------------------------------------------------------------------------------------

/// How a [`RabbitNode`] is set up.
#[derive(Debug, Clone)]
pub struct RabbitOptions {
    /// Serve AMQPS with this certificate and key.
    pub tls: Option<ServerTls>,
    /// No plain listener (`listeners.tcp = none`): only AMQPS.
    pub tls_only: bool,
    /// Require a client certificate signed by `tls.ca_file` (`verify_peer` +
    /// `fail_if_no_peer_cert`); otherwise `verify_none`.
    pub require_client_cert: bool,
    /// The user created at first boot (RabbitMQ's `default_user`), with every permission on `/`.
    pub user: String,
    /// Its password (default: random).
    pub password: String,
}

impl Default for RabbitOptions {
    fn default() -> Self {
        Self {
            tls: None,
            tls_only: false,
            require_client_cert: false,
            user: "buyonce".into(),
            password: random_hex(24),
        }
    }
}

/// A RabbitMQ node of our own (`buyonce-<hex>@localhost`), a child process of the test.
/// `Drop` kills it and removes its directory.
pub struct RabbitNode {
    dir: tempfile::TempDir,
    sbin: PathBuf,
    node: String,
    port: Option<u16>,
    tls_port: Option<u16>,
    env: BTreeMap<String, String>,
    child: Option<std::process::Child>,
    options: RabbitOptions,
}

impl std::fmt::Debug for RabbitNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitNode")
            .field("node", &self.node)
            .field("port", &self.port)
            .field("tls_port", &self.tls_port)
            .finish()
    }
}

/// Where RabbitMQ's own scripts are (`/usr/lib/rabbitmq/bin`), or `BUYONCE_TEST_RABBITMQ_SBIN`.
pub fn rabbitmq_sbin_dir() -> anyhow::Result<PathBuf> {
    if let Ok(dir) = std::env::var("BUYONCE_TEST_RABBITMQ_SBIN") {
        return Ok(PathBuf::from(dir));
    }
    let dir = PathBuf::from("/usr/lib/rabbitmq/bin");
    if dir.join("rabbitmq-server").exists() {
        Ok(dir)
    } else {
        bail!("RabbitMQ is not installed ({} not found)", dir.display())
    }
}

impl RabbitNode {
    /// Starts a node and waits until it accepts connections (`rabbitmqctl await_startup`).
    pub async fn start(options: RabbitOptions) -> anyhow::Result<RabbitNode> {
        if (options.tls_only || options.require_client_cert) && options.tls.is_none() {
            bail!("tls_only and require_client_cert need RabbitOptions::tls");
        }
        let sbin = rabbitmq_sbin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("buyonce-rabbit-")
            .tempdir()
            .context("creating the node directory")?;
        let root = dir.path().to_path_buf();
        let node = format!("buyonce-{}@localhost", random_hex(10));
        let port = (!options.tls_only).then(free_port).transpose()?;
        let tls_port = options.tls.as_ref().map(|_| free_port()).transpose()?;
        let dist_port = free_port()?;
        for sub in ["home", "mnesia", "log"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        // A cookie of our own: the machine's node and its cookie are left alone.
        let cookie = root.join("home/.erlang.cookie");
        std::fs::write(&cookie, random_hex(32).to_ascii_uppercase())?;
        std::fs::set_permissions(&cookie, std::os::unix::fs::PermissionsExt::from_mode(0o400))?;
        // No plugins (management would add seconds and two more ports).
        std::fs::write(root.join("enabled_plugins"), "[].\n")?;
        // Our own (empty) env file: the machine's /etc/rabbitmq/rabbitmq-env.conf names its node.
        std::fs::write(root.join("rabbitmq-env.conf"), "")?;
        let mut conf = String::new();
        match port {
            Some(p) => conf.push_str(&format!("listeners.tcp.default = 127.0.0.1:{p}\n")),
            None => conf.push_str("listeners.tcp = none\n"),
        }
        if let (Some(tls), Some(p)) = (&options.tls, tls_port) {
            let copy = |from: &Path, name: &str| -> anyhow::Result<PathBuf> {
                let dest = root.join(name);
                std::fs::copy(from, &dest)
                    .with_context(|| format!("copying {} into the node", from.display()))?;
                Ok(dest)
            };
            let cert = copy(&tls.cert_file, "server.pem")?;
            let key = copy(&tls.key_file, "server.key")?;
            conf.push_str(&format!(
                "listeners.ssl.default = 127.0.0.1:{p}\nssl_options.certfile = {}\n\
                 ssl_options.keyfile = {}\n",
                cert.display(),
                key.display()
            ));
            if let Some(ca) = &tls.ca_file {
                let ca = copy(ca, "ca.pem")?;
                conf.push_str(&format!("ssl_options.cacertfile = {}\n", ca.display()));
            }
            if options.require_client_cert {
                conf.push_str(
                    "ssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = true\n",
                );
            } else {
                conf.push_str("ssl_options.verify = verify_none\n");
            }
        }
        conf.push_str(&format!(
            "default_user = {}\ndefault_pass = {}\ndefault_vhost = /\n\
             default_permissions.configure = .*\ndefault_permissions.read = .*\n\
             default_permissions.write = .*\nloopback_users = none\n",
            options.user, options.password
        ));
        std::fs::write(root.join("rabbitmq.conf"), conf)?;
        let path = |p: &str| root.join(p).display().to_string();
        let env: BTreeMap<String, String> = [
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            ("HOME", path("home")),
            ("LANG", "C.UTF-8".into()),
            ("RABBITMQ_NODENAME", node.clone()),
            ("RABBITMQ_DIST_PORT", dist_port.to_string()),
            ("RABBITMQ_MNESIA_BASE", path("mnesia")),
            ("RABBITMQ_LOG_BASE", path("log")),
            ("RABBITMQ_PID_FILE", path("rabbit.pid")),
            ("RABBITMQ_CONFIG_FILE", path("rabbitmq.conf")),
            ("RABBITMQ_ENABLED_PLUGINS_FILE", path("enabled_plugins")),
            ("RABBITMQ_CONF_ENV_FILE", path("rabbitmq-env.conf")),
            ("ERL_EPMD_ADDRESS", "127.0.0.1".into()),
            (
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}".into(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let mut node = RabbitNode {
            dir,
            sbin,
            node,
            port,
            tls_port,
            env,
            child: None,
            options,
        };
        node.boot().await?;
        Ok(node)
    }

    async fn boot(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let out = std::fs::File::create(self.dir.path().join("server.out"))?;
        let child = std::process::Command::new(self.sbin.join("rabbitmq-server"))
            .env_clear()
            .envs(&self.env)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting rabbitmq-server")?;
        self.child = Some(child);
        // The listener opens near the end of the boot; polling it is cheap, whereas every
        // rabbitmqctl call starts an Erlang VM (~0.7 s of CPU).
        let probe = self.port.or(self.tls_port).context("no listener")?;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!(
                    "rabbitmq-server exited during start-up ({status}):\n{}\n{}",
                    tail(&self.dir.path().join("server.out"), 20),
                    tail(
                        &self
                            .dir
                            .path()
                            .join("log")
                            .join(format!("{}.log", self.node)),
                        20
                    )
                );
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", probe))
                .await
                .is_ok()
            {
                break;
            }
            if started.elapsed() > Duration::from_secs(90) {
                bail!(
                    "RabbitMQ node {} not listening after 90 s:\n{}",
                    self.node,
                    tail(&self.dir.path().join("server.out"), 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.ctl(&["await_startup", "--timeout", "60"]).await?;
        tracing::debug!(node = %self.node, elapsed = ?started.elapsed(), "RabbitMQ node up");
        Ok(())
    }

    /// Runs `rabbitmqctl -n <node> <args…>` with the node's cookie.
    pub async fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        run(
            Command::new(self.sbin.join("rabbitmqctl"))
                .env_clear()
                .envs(&self.env)
                .current_dir(self.dir.path())
                .arg("-n")
                .arg(&self.node)
                .args(args),
            &format!("rabbitmqctl {}", args.join(" ")),
        )
        .await
    }

    /// The node's directory (data, logs, cookie); removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The Erlang node name (`buyonce-<hex>@localhost`).
    pub fn node_name(&self) -> &str {
        &self.node
    }

    /// The plain AMQP port, unless the node is TLS-only.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The AMQPS port, when TLS is on.
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    pub fn user(&self) -> &str {
        &self.options.user
    }

    pub fn password(&self) -> &str {
        &self.options.password
    }

    /// `amqp://user:password@127.0.0.1:PORT/%2f` (panics on a TLS-only node).
    pub fn amqp_url(&self) -> String {
        let port = self
            .port
            .expect("the node has no plain listener (tls_only)");
        format!(
            "amqp://{}:{}@127.0.0.1:{port}/%2f",
            url_encode(&self.options.user),
            url_encode(&self.options.password)
        )
    }

    /// `amqps://user:password@<host>:TLS_PORT/%2f` (panics without TLS). `host` is what the
    /// certificate is checked against: `localhost` or `127.0.0.1`.
    pub fn amqps_url(&self, host: &str) -> String {
        let port = self.tls_port.expect("the node has no TLS listener");
        format!(
            "amqps://{}:{}@{host}:{port}/%2f",
            url_encode(&self.options.user),
            url_encode(&self.options.password)
        )
    }

    /// Stops the RabbitMQ application (the Erlang node stays up): connections are closed and
    /// refused until [`RabbitNode::start_app`]. Queues and their messages are kept.
    pub async fn stop_app(&self) -> anyhow::Result<()> {
        self.ctl(&["stop_app"]).await.map(|_| ())
    }

    /// Starts the application again after [`RabbitNode::stop_app`].
    pub async fn start_app(&self) -> anyhow::Result<()> {
        self.ctl(&["start_app"]).await.map(|_| ())
    }

    /// Stops the node gracefully (`rabbitmqctl stop`) and waits for the process to exit.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.ctl(&["stop"]).await?;
        if let Some(mut child) = self.child.take() {
            let started = Instant::now();
            while child.try_wait()?.is_none() {
                if started.elapsed() > Duration::from_secs(30) {
                    self.child = Some(child);
                    bail!("rabbitmq-server did not exit within 30 s of rabbitmqctl stop");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// The node's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(
            self.dir
                .path()
                .join("log")
                .join(format!("{}.log", self.node)),
        )
        .unwrap_or_default()
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The child is the rabbitmq-server script; the Erlang VM is its child, whose pid is
        // in the pid file. Kill both: a throwaway node needs no graceful stop.
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("rabbit.pid")) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", pid.trim()])
                .status();
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// A World on our own servers
// ---------------------------------------------------------------------------------------------

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
    let channel = connection.create_channel().await?;
    topology.declare(&channel).await?;
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

// ---------------------------------------------------------------------------------------------
// Processes pointed at our own servers
// ---------------------------------------------------------------------------------------------

/// `world.process_env()` with `remove` taken out and `set` put in (replacing what is there),
/// e.g. the machine's `BUYONCE_AMQP_URL` replaced by `BUYONCE_AMQP_URL_FILE`.
pub fn process_env_with(
    world: &World,
    set: &[(&str, String)],
    remove: &[&str],
) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = world.process_env().into_iter().collect();
    for key in remove {
        env.remove(*key);
    }
    for (k, v) in set {
        env.insert((*k).to_owned(), v.clone());
    }
    env.into_iter().collect()
}

/// A child process that is killed when dropped, so a failing test leaves no worker behind
/// retrying against servers that are gone. Derefs to [`std::process::Child`].
#[derive(Debug)]
pub struct KillOnDrop(std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts a workspace binary with exactly `env`, stdout and stderr into `log`.
pub fn spawn_binary(
    name: &str,
    args: &[&str],
    env: &[(String, String)],
    log: &Path,
) -> anyhow::Result<KillOnDrop> {
    let file = std::fs::File::create(log).context("log file")?;
    std::process::Command::new(crate::harness::binary(name))
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .map(KillOnDrop)
        .with_context(|| format!("starting {name}"))
}

/// Waits for a child to exit without blocking the runtime (fakecloud runs on it); `None`
/// when it is still running after `timeout`.
pub async fn wait_exit(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// The first JSON log line in `log` whose `message` is `message`, as a JSON object.
pub fn find_log_event(log: &Path, message: &str) -> Option<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"].as_str() == Some(message))
}
