//! A RabbitMQ node of our own ([`RabbitNode`]), a child process of the test. As root (CI and
//! the development machine run tests as root) it runs from `/usr/lib/rabbitmq/bin` (not the
//! `/usr/sbin` wrappers, which `su` to the machine's `rabbitmq` user and write its logs) with
//! `HOME` set to the node's directory, where a cookie of its own lives; `rabbitmqctl` is run
//! with the same `HOME`, which is where the Erlang CLI looks for the cookie. The node registers
//! with the machine's `epmd` (port 4369), which is how `rabbitmqctl -n` finds it.
//!
//! With `BUYONCE_TEST_RABBITMQ_ROOT` set to a root file system holding another RabbitMQ (the
//! RabbitMQ 4.0 root `tests/rabbitmq4.sh` makes from Debian 13's package), the node runs from
//! there under `chroot`: its directory is made inside that root, and every path the node is
//! given is the one it sees there. It still registers with the machine's `epmd` (the protocol is
//! the same across Erlang releases).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::process::Command;

use super::{free_port, run, tail, url_encode, ServerTls};

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
    /// Another address for the plain listener, on the same port, besides 127.0.0.1: e.g. a
    /// [`NetNs`](super::NetNs)'s host IP. It must exist when the node starts.
    pub listen_on: Option<IpAddr>,
}

impl Default for RabbitOptions {
    fn default() -> Self {
        Self {
            tls: None,
            tls_only: false,
            require_client_cert: false,
            user: "buyonce".into(),
            password: random_hex(24),
            listen_on: None,
        }
    }
}

/// A RabbitMQ node of our own (`buyonce-<hex>@localhost`), a child process of the test.
/// `Drop` kills it and removes its directory.
pub struct RabbitNode {
    dir: tempfile::TempDir,
    /// Where RabbitMQ's scripts are, as the node sees them.
    sbin: PathBuf,
    /// The root file system the node runs in (`chroot`), if not the machine's.
    root: Option<PathBuf>,
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

/// The root file system of another RabbitMQ (`BUYONCE_TEST_RABBITMQ_ROOT`), checked.
pub fn rabbitmq_root() -> anyhow::Result<Option<PathBuf>> {
    let Some(root) = std::env::var_os("BUYONCE_TEST_RABBITMQ_ROOT").filter(|r| !r.is_empty())
    else {
        return Ok(None);
    };
    let root = PathBuf::from(root);
    if !root.join("usr/lib/rabbitmq/bin/rabbitmq-server").exists() {
        bail!(
            "BUYONCE_TEST_RABBITMQ_ROOT={}: no usr/lib/rabbitmq/bin/rabbitmq-server in it \
             (tests/rabbitmq4.sh start makes one)",
            root.display()
        );
    }
    if !root.join("proc/self").exists() {
        bail!(
            "BUYONCE_TEST_RABBITMQ_ROOT={}: /proc is not mounted in it (RabbitMQ reads its \
             memory use there): mount -t proc proc {}/proc",
            root.display(),
            root.display()
        );
    }
    Ok(Some(root))
}

impl RabbitNode {
    /// Starts a node and waits until it accepts connections (`rabbitmqctl await_startup`).
    pub async fn start(options: RabbitOptions) -> anyhow::Result<RabbitNode> {
        if (options.tls_only || options.require_client_cert) && options.tls.is_none() {
            bail!("tls_only and require_client_cert need RabbitOptions::tls");
        }
        if options.tls_only && options.listen_on.is_some() {
            bail!("listen_on is for the plain listener, which tls_only turns off");
        }
        let chroot = rabbitmq_root()?;
        let sbin = match &chroot {
            Some(_) => PathBuf::from("/usr/lib/rabbitmq/bin"),
            None => rabbitmq_sbin_dir()?,
        };
        let mut dir = tempfile::Builder::new();
        dir.prefix("buyonce-rabbit-");
        let dir = match &chroot {
            Some(r) => dir.tempdir_in(r.join("tmp")),
            None => dir.tempdir(),
        }
        .context("creating the node directory")?;
        let root = dir.path().to_path_buf();
        // The node directory as the node sees it.
        let seen = match &chroot {
            Some(r) => Path::new("/").join(root.strip_prefix(r)?),
            None => root.clone(),
        };
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
        if let (Some(ip), Some(p)) = (options.listen_on, port) {
            // Any name but `default` adds a listener (SocketAddr brackets an IPv6 address).
            conf.push_str(&format!(
                "listeners.tcp.extra = {}\n",
                SocketAddr::new(ip, p)
            ));
        }
        if let (Some(tls), Some(p)) = (&options.tls, tls_port) {
            let copy = |from: &Path, name: &str| -> anyhow::Result<PathBuf> {
                std::fs::copy(from, root.join(name))
                    .with_context(|| format!("copying {} into the node", from.display()))?;
                Ok(seen.join(name))
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
        let path = |p: &str| seen.join(p).display().to_string();
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
            root: chroot,
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
        let child = self
            .command("rabbitmq-server")
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
            Command::from(self.command("rabbitmqctl"))
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

    /// `program` of RabbitMQ's scripts, run in the node's root file system.
    fn command(&self, program: &str) -> std::process::Command {
        match &self.root {
            Some(root) => {
                let mut c = std::process::Command::new("chroot");
                c.arg(root).arg(self.sbin.join(program));
                c
            }
            None => std::process::Command::new(self.sbin.join(program)),
        }
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
        self.amqp_url_on(std::net::Ipv4Addr::LOCALHOST.into())
    }

    /// `amqp://user:password@HOST:PORT/%2f`: [`RabbitNode::amqp_url`] on
    /// [`RabbitOptions::listen_on`]. The node's user may log in from any address
    /// (`loopback_users = none`).
    pub fn amqp_url_on(&self, host: IpAddr) -> String {
        let port = self
            .port
            .expect("the node has no plain listener (tls_only)");
        format!(
            "amqp://{}:{}@{}/%2f",
            url_encode(&self.options.user),
            url_encode(&self.options.password),
            SocketAddr::new(host, port)
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

fn random_hex(len: usize) -> String {
    let mut s = String::new();
    while s.len() < len {
        s.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    s.truncate(len);
    s
}
