//! A Postgres cluster of our own ([`PgCluster`]): `initdb` into a temporary directory, a free
//! port on 127.0.0.1, TLS and password authentication when asked for. Postgres refuses to run
//! as root, which tests do in CI and on the development machine, so there its commands run
//! through `runuser -u postgres --` in a directory owned by `postgres`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context};
use buyonce_shared::db;
use tokio::process::Command;

use super::{free_port, run, running_as_root, tail, url_encode, ServerTls};

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
    /// More addresses to listen on besides 127.0.0.1, e.g. a [`NetNs`](super::NetNs)'s host
    /// IP. They must exist when the cluster starts (and restarts).
    pub listen_on: Vec<IpAddr>,
    /// Clients allowed in over TCP besides 127.0.0.1 (one `pg_hba.conf` line each, with the
    /// same TLS and password rules), e.g. a namespace's [`NetNs::ns_ip`](super::NetNs::ns_ip).
    pub allow_clients: Vec<IpAddr>,
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
        let listen: Vec<String> = std::iter::once("127.0.0.1".to_owned())
            .chain(self.options.listen_on.iter().map(IpAddr::to_string))
            .collect();
        // Throwaway data: durability off makes start-up and every commit cheaper.
        let mut conf = format!(
            "\n# buyonce test cluster\nlisten_addresses = '{}'\nport = {}\n\
             unix_socket_directories = '{socket_dir}'\nfsync = off\nsynchronous_commit = off\n\
             full_page_writes = off\nshared_buffers = 32MB\nmax_connections = 100\n\
             password_encryption = 'scram-sha-256'\n",
            listen.join(", "),
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
        let mut hba = format!("local all all trust\n{host} all all 127.0.0.1/32 {method}\n");
        for client in &self.options.allow_clients {
            let len = if client.is_ipv4() { 32 } else { 128 };
            hba.push_str(&format!("{host} all all {client}/{len} {method}\n"));
        }
        std::fs::write(data.join("pg_hba.conf"), hba).context("writing pg_hba.conf")?;
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
        self.url_on(std::net::Ipv4Addr::LOCALHOST.into(), db)
    }

    /// `postgres://postgres@HOST:PORT/<db>`: [`PgCluster::url`] on another address the
    /// cluster listens on ([`PgOptions::listen_on`]).
    pub fn url_on(&self, host: IpAddr, db: &str) -> String {
        format!(
            "postgres://postgres@{}/{db}",
            SocketAddr::new(host, self.port)
        )
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
