//! Network partitions between a worker process and its servers. The process runs in a network
//! namespace of its own ([`NetNs`]) and reaches our Postgres, RabbitMQ and fakecloud over a
//! veth pair; a test cuts its traffic to one of them (`Drop`: a dead link; `Reject`: resets)
//! and heals it, with rules inside the namespace only, so every other test keeps its traffic.
//!
//! Needs root and the `ip` and `iptables` commands, which CI has. Elsewhere each test prints
//! why it is skipped (past the test harness's output capture) and passes.

use std::io::Write;
use std::net::IpAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use buyonce_tests::nodes::{postgres_bin_dir, Mode, NetNs, PgCluster, PgOptions, Target};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

#[tokio::test]
async fn a_cut_inside_a_namespace_stops_only_the_namespace_traffic() {
    let Some(ns) =
        namespace_or_skip("a_cut_inside_a_namespace_stops_only_the_namespace_traffic").await
    else {
        return;
    };
    let host_ip = IpAddr::V4(ns.host_ip());
    let pg = PgCluster::start(PgOptions {
        listen_on: vec![host_ip],
        // The host's own connections to its veth address come from that address.
        allow_clients: vec![IpAddr::V4(ns.ns_ip()), host_ip],
        ..PgOptions::default()
    })
    .await
    .expect("Postgres cluster");
    let inside = format!("{}?connect_timeout=2", pg.url_on(host_ip, "postgres"));
    let postgres = Target::tcp("postgres", pg.port());

    assert_eq!(psql_in(&ns, &inside).await, Ok("1".into()));
    let mut session = Session::open(&ns, &inside).await;
    session.send("SELECT 'before';").await;
    assert_eq!(
        session.line(Duration::from_secs(5)).await.as_deref(),
        Some("before")
    );
    assert_eq!(
        session.program(),
        std::fs::canonicalize(psql()).ok(),
        "`ip netns exec` execs in place: the child is psql, which a kill reaches"
    );

    ns.cut(postgres, Mode::Drop).await.unwrap();
    session.send("SELECT 'during';").await;
    let err = psql_in(&ns, &inside).await.unwrap_err();
    assert!(
        err.contains("timeout expired"),
        "a dropped connect times out: {err}"
    );
    assert_eq!(
        session.line(Duration::from_millis(500)).await,
        None,
        "the connection established before the cut is cut too"
    );
    assert_eq!(query_from_host(&pg.url("postgres")).await, Ok(1));
    assert_eq!(
        query_from_host(&pg.url_on(host_ip, "postgres")).await,
        Ok(1),
        "the host's own traffic to the same address is not in the namespace"
    );

    ns.heal(postgres).await.unwrap();
    assert_eq!(psql_in(&ns, &inside).await, Ok("1".into()));
    assert_eq!(
        session.line(Duration::from_secs(10)).await.as_deref(),
        Some("during"),
        "a healed drop loses nothing: TCP retransmits the query"
    );

    ns.cut(postgres, Mode::Reject).await.unwrap();
    let started = Instant::now();
    let err = psql_in(&ns, &inside).await.unwrap_err();
    assert!(
        err.contains("Connection refused"),
        "a rejected connect is refused: {err}"
    );
    assert!(started.elapsed() < Duration::from_secs(1), "and at once");
    session.send("SELECT 'after';").await;
    let (status, stderr) = session.exit(Duration::from_secs(5)).await;
    assert!(
        !status.success() && stderr.contains("connection to server was lost"),
        "a rejected established connection is reset ({status}): {stderr}"
    );

    ns.heal_all().await.unwrap();
    assert_eq!(psql_in(&ns, &inside).await, Ok("1".into()));
    let rules = ns.rules().await.unwrap();
    assert!(!rules.contains("--dport"), "no cut is left:\n{rules}");
}

/// A namespace of our own, or `None` (and the skip printed) where none can be made.
async fn namespace_or_skip(test: &str) -> Option<NetNs> {
    if let Some(why) = NetNs::unavailable() {
        // `std::io::stderr()` itself, not `eprintln!`, which the harness captures and, for a
        // passing test, never shows.
        let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
        return None;
    }
    Some(NetNs::create().await.expect("network namespace"))
}

fn psql() -> std::path::PathBuf {
    postgres_bin_dir().expect("Postgres binaries").join("psql")
}

/// `SELECT 1` with `psql` inside the namespace: its output, or its error message.
async fn psql_in(ns: &NetNs, url: &str) -> Result<String, String> {
    let out = tokio::process::Command::from(ns.command(psql()))
        .args([url, "-XAtqc", "SELECT 1"])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("running psql");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// `SELECT 1` from the host, outside the namespace.
async fn query_from_host(url: &str) -> Result<i32, String> {
    let attempt = async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        client.query_one("SELECT 1", &[]).await?.try_get(0)
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(result) => result.map_err(|e| buyonce_shared::db::pg_error_text(&e)),
        Err(_) => Err("no answer within 5 s".into()),
    }
}

/// A `psql` session inside the namespace, reading queries from its stdin: one connection,
/// established before a cut.
struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Session {
    async fn open(ns: &NetNs, url: &str) -> Session {
        let mut child = tokio::process::Command::from(ns.command(psql()))
            .args([url, "-XAtq"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starting psql");
        let stdin = child.stdin.take().expect("psql's stdin");
        let stdout = BufReader::new(child.stdout.take().expect("psql's stdout")).lines();
        Session {
            child,
            stdin,
            stdout,
        }
    }

    /// The program the child runs now (`/proc/<pid>/exe`).
    fn program(&self) -> Option<std::path::PathBuf> {
        let pid = self.child.id()?;
        std::fs::read_link(format!("/proc/{pid}/exe")).ok()
    }

    async fn send(&mut self, sql: &str) {
        self.stdin
            .write_all(format!("{sql}\n").as_bytes())
            .await
            .expect("writing to psql");
    }

    /// The next line of output, unless none comes within `within`.
    async fn line(&mut self, within: Duration) -> Option<String> {
        tokio::time::timeout(within, self.stdout.next_line())
            .await
            .ok()?
            .expect("reading psql's output")
    }

    /// Waits for psql to exit: its status and what it said on stderr.
    async fn exit(self, within: Duration) -> (std::process::ExitStatus, String) {
        drop(self.stdin);
        let out = tokio::time::timeout(within, self.child.wait_with_output())
            .await
            .expect("psql exits")
            .expect("waiting for psql");
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}
