//! Network partitions between a worker process and its servers. The process runs in a network
//! namespace of its own ([`NetNs`]) and reaches our Postgres, RabbitMQ and fakecloud over a
//! veth pair; a test cuts its traffic to one of them (`Drop`: a dead link; `Reject`: resets)
//! and heals it, with rules inside the namespace only, so every other test keeps its traffic.
//!
//! Needs root and the `ip` and `iptables` commands, which CI has. Elsewhere each test prints
//! why it is skipped (past the test harness's output capture) and passes.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use buyonce_fakecloud::{FakeCloudConfig, FaultRule, Faults, Realism};
use buyonce_shared::config::{AmqpConfig, DatabaseConfig};
use buyonce_shared::store::{ItemStatus, Store};
use buyonce_shared::PurchaseMessage;
use buyonce_tests::harness::{
    execution, recommendation, signal, wait_for, SERVICES, TEST_VISIBILITY_DELAY,
};
use buyonce_tests::nodes::{
    free_port, log_events, postgres_bin_dir, process_env_with, spawn_binary, spawn_binary_in,
    wait_exit, with_search_path, world_on, KillOnDrop, Mode, NetNs, PgCluster, PgOptions,
    RabbitNode, RabbitOptions, Target,
};
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
    // At once, not after a connect timeout (5 s of slack for a loaded machine).
    assert!(started.elapsed() < Duration::from_secs(5), "and at once");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dropped_under_an_offering_lock_strands_nothing() {
    partition(
        "postgres_dropped_under_an_offering_lock_strands_nothing",
        Cut::Postgres,
        Mode::Drop,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reset_under_an_offering_lock_strands_nothing() {
    partition(
        "postgres_reset_under_an_offering_lock_strands_nothing",
        Cut::Postgres,
        Mode::Reject,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_dropped_with_purchases_in_flight_loses_nothing() {
    partition(
        "broker_dropped_with_purchases_in_flight_loses_nothing",
        Cut::Rabbit,
        Mode::Drop,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_reset_with_purchases_in_flight_loses_nothing() {
    partition(
        "broker_reset_with_purchases_in_flight_loses_nothing",
        Cut::Rabbit,
        Mode::Reject,
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// A fleet of three workers, one of them in a namespace of its own and cut off.

/// How long a cut lasts: longer than the victim's Postgres TCP timeout, its AMQP heartbeat
/// twice over and the claim's stale threshold, so every detection path has fired before the heal.
const CUT: Duration = Duration::from_secs(20);
/// `BUYONCE_DATABASE_TCP_TIMEOUT` of every worker (shorter than production's 20 s, to keep
/// the suite short; the mechanism is the same).
const TCP_TIMEOUT: &str = "10s";
/// `BUYONCE_AMQP_HEARTBEAT` of every worker.
const HEARTBEAT: &str = "4s";

/// What a scenario cuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    Postgres,
    Rabbit,
}

/// One partition scenario: a three-worker fleet buying over every service with provider
/// latency; when the victim holds an offering lock (Postgres cuts) or has purchases in flight
/// (broker cuts), its traffic to `what` is cut with `mode` for [`CUT`], then healed.
async fn partition(test: &str, what: Cut, mode: Mode) {
    let Some(ns) = namespace_or_skip(test).await else {
        return;
    };
    let host: IpAddr = ns.host_ip().into();
    let victim_ip: IpAddr = ns.ns_ip().into();
    let pg = PgCluster::start(PgOptions {
        listen_on: vec![host],
        // The healthy workers reach the host IP too, and come from it.
        allow_clients: vec![victim_ip, host],
        ..PgOptions::default()
    })
    .await
    .expect("postgres");
    let rabbit = RabbitNode::start(RabbitOptions {
        listen_on: Some(host),
        ..RabbitOptions::default()
    })
    .await
    .expect("rabbitmq");
    // Not loopback, so buyonce would insist on verified TLS; the test cluster serves none.
    let database_url = format!("{}?sslmode=disable", pg.url_on(host, "buyonce"));
    let world = world_on(
        DatabaseConfig::new(database_url.clone()),
        AmqpConfig::new(rabbit.amqp_url_on(host)),
        FakeCloudConfig {
            listen: SocketAddr::new(host, 0),
            realism: Realism::strict_deterministic(TEST_VISIBILITY_DELAY),
            faults: Faults::rules([
                FaultRule::latency("*:Purchase*", Duration::from_millis(1500)),
                FaultRule::latency(
                    "savingsplans:CreateSavingsPlan",
                    Duration::from_millis(1500),
                ),
                FaultRule::latency("*", Duration::from_millis(150)),
            ]),
            ..FakeCloudConfig::default()
        },
    )
    .await
    .expect("world");
    // Kept when the test fails (the path is printed); removed at the end of a passing run.
    let logs = tempfile::Builder::new()
        .prefix("buyonce-partition-")
        .tempdir()
        .expect("log dir")
        .keep();
    println!("{test}: worker logs in {}", logs.display());
    let victim_http = SocketAddr::new(victim_ip, free_port().expect("port"));
    let env = process_env_with(
        &world,
        &[
            (
                "BUYONCE_DATABASE_URL",
                with_search_path(&database_url, &world.db.schema),
            ),
            ("BUYONCE_AMQP_URL", rabbit.amqp_url_on(host)),
            ("BUYONCE_DATABASE_TCP_TIMEOUT", TCP_TIMEOUT.into()),
            ("BUYONCE_AMQP_HEARTBEAT", HEARTBEAT.into()),
            ("BUYONCE_HEARTBEAT_INTERVAL", "1s".into()),
            ("BUYONCE_CONCURRENCY", "6".into()),
            ("BUYONCE_DATABASE_POOL_SIZE", "8".into()),
        ],
        &[
            "BUYONCE_AZURE_CREDENTIAL",
            "BUYONCE_AZURE_RESOURCE_MANAGER_URL",
            "AZURE_AUTHORITY_HOST",
            "AZURE_TENANT_ID",
            "AZURE_CLIENT_ID",
            "AZURE_CLIENT_SECRET",
        ],
    );
    let mut victim_env = env.clone();
    victim_env.retain(|(k, _)| k != "BUYONCE_LISTEN");
    victim_env.push(("BUYONCE_LISTEN".into(), victim_http.to_string()));
    let victim_log = logs.join("victim.log");
    let mut victim = spawn_binary_in(&ns, "buyonce-worker", &[], &victim_env, &victim_log)
        .expect("victim starts");
    let _healthy: Vec<KillOnDrop> = (0..2)
        .map(|i| {
            spawn_binary(
                "buyonce-worker",
                &[],
                &env,
                &logs.join(format!("healthy-{i}.log")),
            )
            .expect("worker starts")
        })
        .collect();
    let victim_ready = format!("http://{victim_http}/readyz");
    wait_for(
        Duration::from_secs(60),
        "the victim to be ready",
        || async { (http_status(&victim_ready).await == Some(200)).then_some(()) },
    )
    .await;

    let doc = execution(&format!("partition-{}", ns.name()), fleet_recommendations());
    let msgs = world.enqueue(&doc).await;
    let store = world.store().clone();

    // The moment: the victim holds an offering lock (what a Postgres reset used to strand) and
    // buys; or, for the broker, has purchases in flight (acks and records due into the cut).
    let victim_metrics = format!("http://{victim_http}/metrics");
    let trigger = wait_for(
        Duration::from_secs(90),
        "the victim to be mid-purchase",
        || async {
            let in_flight = scrape_gauge(&victim_metrics, "buyonce_in_flight")
                .await
                .unwrap_or(0.0);
            let locks = sessions(&store, victim_ip, true).await;
            let ready = match what {
                Cut::Postgres => locks > 0 && in_flight >= 1.0,
                Cut::Rabbit => in_flight >= 2.0,
            };
            ready.then_some((in_flight, locks))
        },
    )
    .await;
    let target = match what {
        Cut::Postgres => Target::tcp("postgres", pg.port()),
        Cut::Rabbit => Target::tcp("rabbitmq", rabbit.port().expect("plain listener")),
    };
    let cut_at = chrono::Utc::now();
    let before = progress(&store, &msgs).await;
    println!(
        "{what:?} {mode:?}: cutting with {} in flight and {} offering lock(s) held by the victim; {before:?}",
        trigger.0, trigger.1
    );
    ns.cut(target, mode).await.expect("cut");
    let cut_started = Instant::now();

    match what {
        Cut::Postgres => {
            // The server drops the victim's sessions — and with them its locks — within the TCP
            // timeout, although the victim is still running, cut off.
            wait_for(
                Duration::from_secs(20),
                "the server to drop the victim's sessions",
                || async { (sessions_since(&store, victim_ip, cut_at).await == 0).then_some(()) },
            )
            .await;
            wait_for(
                Duration::from_secs(20),
                "the victim to stop consuming",
                || async {
                    log_has(&victim_log, "Postgres unreachable: stopping deliveries").then_some(())
                },
            )
            .await;
            assert_eq!(
                http_status(&victim_ready).await,
                Some(503),
                "/readyz of a worker cut off from Postgres"
            );
            // Its prefetched and in-flight messages went back to the queue (the other workers
            // take them), while its broker connection stays up.
            wait_for(
                Duration::from_secs(20),
                "the victim to hand its messages back",
                || async { (victim_unacked(&rabbit, victim_ip).await == Some(0)).then_some(()) },
            )
            .await;
        }
        Cut::Rabbit => {
            wait_for(
                Duration::from_secs(20),
                "the victim to notice the dead broker",
                || async { log_has(&victim_log, "broker session ended").then_some(()) },
            )
            .await;
            assert_eq!(
                http_status(&victim_ready).await,
                Some(503),
                "/readyz without a broker"
            );
            wait_for(
                Duration::from_secs(20),
                "the broker to drop the victim's connection",
                || async {
                    let peers = rabbit
                        .ctl(&["list_connections", "peer_host"])
                        .await
                        .unwrap_or_default();
                    (!peers.contains(&victim_ip.to_string())).then_some(())
                },
            )
            .await;
        }
    }
    tokio::time::sleep(CUT.saturating_sub(cut_started.elapsed())).await;
    let during = progress(&store, &msgs).await;
    ns.heal_all().await.expect("heal");
    println!(
        "{what:?} {mode:?}: healed after {:?}; {during:?}",
        cut_started.elapsed()
    );
    // No fleet-wide stall: the two healthy workers bought on meanwhile, EC2 and Redshift (the
    // offering-locked services) included, when some were left.
    assert!(
        during.succeeded > before.succeeded,
        "nothing was bought during the cut: {before:?} → {during:?}"
    );
    for (service, left_before, left_after) in [
        ("ec2", before.ec2_left, during.ec2_left),
        ("redshift", before.redshift_left, during.redshift_left),
    ] {
        assert!(
            left_before == 0 || left_after < left_before,
            "no {service} purchase during the cut (a stranded offering lock?): {before:?} → {during:?}"
        );
    }

    let done = wait_for(Duration::from_secs(180), "every item to end", || async {
        let p = progress(&store, &msgs).await;
        (p.live == 0).then_some(p)
    })
    .await;
    println!("{what:?} {mode:?}: all ended; {done:?}");

    // 0 double-buys, 0 lost: one live commitment per item, each the one its item recorded.
    let items = store.items_of(&doc.execution_id).await.expect("items");
    let ledger = world.fc.ledger();
    let not_succeeded: Vec<String> = items
        .iter()
        .filter(|i| i.status != ItemStatus::Succeeded)
        .map(|i| {
            format!(
                "#{} {} {}: {:?}",
                i.rec_index,
                i.service,
                i.status.as_str(),
                i.error
            )
        })
        .collect();
    assert!(
        not_succeeded.is_empty(),
        "items not bought: {not_succeeded:#?}"
    );
    let recorded: BTreeSet<String> = items
        .iter()
        .filter_map(|i| i.commitment_id.clone())
        .collect();
    let bought: Vec<String> = ledger.iter().map(|e| e.commitment_id.clone()).collect();
    assert_eq!(
        bought.len(),
        items.len(),
        "{} commitments bought for {} items:\n{ledger:#?}",
        bought.len(),
        items.len()
    );
    assert_eq!(
        recorded,
        bought.iter().cloned().collect::<BTreeSet<_>>(),
        "the ledger and the items disagree"
    );

    // Nothing left behind: no advisory lock, and once the victim is gone no session of its.
    // A lock session the victim gave up on during a Drop cut ends on the server only when the
    // victim's FIN gets through: TCP retransmits it with exponential backoff, so that can be
    // tens of seconds after the heal (seen once: the items had all ended, one lock still held).
    // A session nobody closed would stay for hours: the bound still catches that.
    let started = Instant::now();
    let mut held = sessions(&store, victim_ip, true).await;
    while held > 0 && started.elapsed() < Duration::from_secs(90) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        held = sessions(&store, victim_ip, true).await;
    }
    assert_eq!(
        held,
        0,
        "offering locks left held {:?} after the items ended",
        started.elapsed()
    );
    if started.elapsed() > Duration::from_secs(1) {
        println!(
            "{what:?}: the last offering lock session ended {:?} after the items",
            started.elapsed()
        );
    }
    let live_sessions = sessions(&store, victim_ip, false).await;
    assert!(
        live_sessions <= 8 + 1,
        "{live_sessions} sessions of the victim (pool 8 + probe)"
    );
    match what {
        Cut::Postgres => {
            wait_for(
                Duration::from_secs(15),
                "the victim to see Postgres again",
                || async { log_has(&victim_log, "Postgres answers again").then_some(()) },
            )
            .await
        }
        // The startup's and the reconnect's.
        Cut::Rabbit => {
            wait_for(
                Duration::from_secs(15),
                "the victim to consume again",
                || async { (count_events(&victim_log, "consuming") >= 2).then_some(()) },
            )
            .await
        }
    }
    wait_for(
        Duration::from_secs(15),
        "the victim to be ready again",
        || async { (http_status(&victim_ready).await == Some(200)).then_some(()) },
    )
    .await;
    println!(
        "{what:?} {mode:?}: the victim's log said\n{}",
        story(&victim_log)
    );
    signal(&victim, libc::SIGTERM);
    wait_exit(&mut victim, Duration::from_secs(30)).await;
    wait_for(
        Duration::from_secs(20),
        "the victim's sessions to end",
        || async { (sessions(&store, victim_ip, false).await == 0).then_some(()) },
    )
    .await;
    drop(victim);
    world.cleanup().await;
    let _ = std::fs::remove_dir_all(&logs);
}

/// 8 EC2 and 8 Redshift items (one offering each: every purchase takes the same fleet-wide
/// lock) and 2 of every other AWS service. Not Azure: the worker allows fakecloud's emulator
/// credential only on a loopback address, which a worker in a namespace cannot reach.
fn fleet_recommendations() -> Vec<serde_json::Value> {
    SERVICES
        .iter()
        .filter(|s| recommendation(s)["provider"] == "aws")
        .flat_map(|s| {
            let n = if matches!(*s, "ec2" | "redshift") {
                8
            } else {
                2
            };
            std::iter::repeat_n(recommendation(s), n)
        })
        .collect()
}

/// Where the items of a run are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    succeeded: usize,
    /// Not ended yet (approved, queued or running).
    live: usize,
    /// EC2 items not bought yet (one offering: one fleet-wide lock).
    ec2_left: usize,
    /// Redshift items not bought yet (likewise).
    redshift_left: usize,
}

async fn progress(store: &Store, msgs: &[PurchaseMessage]) -> Progress {
    let items = match msgs.first() {
        Some(first) => store
            .items_of(&first.execution_id)
            .await
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let left = |service: &str| {
        items
            .iter()
            .filter(|i| i.status != ItemStatus::Succeeded && i.service.as_str() == service)
            .count()
    };
    Progress {
        succeeded: items
            .iter()
            .filter(|i| i.status == ItemStatus::Succeeded)
            .count(),
        live: items.iter().filter(|i| !i.status.is_terminal()).count(),
        ec2_left: left("ec2"),
        redshift_left: left("redshift"),
    }
}

/// Server sessions whose client is `ip` (with `locks_only`, those holding an advisory lock).
async fn sessions(store: &Store, ip: IpAddr, locks_only: bool) -> i64 {
    let sql = if locks_only {
        "SELECT count(DISTINCT a.pid) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
          WHERE l.locktype = 'advisory' AND l.granted AND a.client_addr = $1::text::inet"
    } else {
        "SELECT count(*) FROM pg_stat_activity WHERE client_addr = $1::text::inet"
    };
    count(store, sql, &[&ip.to_string()]).await
}

/// Server sessions of `ip` that started before `at`.
async fn sessions_since(store: &Store, ip: IpAddr, at: chrono::DateTime<chrono::Utc>) -> i64 {
    count(
        store,
        "SELECT count(*) FROM pg_stat_activity
          WHERE client_addr = $1::text::inet AND backend_start < $2",
        &[&ip.to_string(), &at],
    )
    .await
}

async fn count(
    store: &Store,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> i64 {
    let client = store.pool().get().await.expect("a test connection");
    client.query_one(sql, params).await.expect(sql).get(0)
}

/// An HTTP client for the victim's probes, which give up after 3 s.
fn probe_client() -> Option<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .ok()
}

/// The HTTP status of a GET, `None` when nothing answers within 3 s.
async fn http_status(url: &str) -> Option<u16> {
    probe_client()?
        .get(url)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// The value of an unlabelled gauge on a `/metrics` page.
async fn scrape_gauge(url: &str, name: &str) -> Option<f64> {
    let text = probe_client()?
        .get(url)
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn log_has(path: &Path, needle: &str) -> bool {
    read(path).contains(needle)
}

/// Messages the broker counts as unacked on the victim's connections; `None` when it has none.
async fn victim_unacked(rabbit: &RabbitNode, ip: IpAddr) -> Option<u64> {
    let ip = ip.to_string();
    let connections = rabbit
        .ctl(&[
            "-q",
            "--no-table-headers",
            "list_connections",
            "pid",
            "peer_host",
        ])
        .await
        .ok()?;
    let pids: BTreeSet<&str> = connections
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, host)| host.trim() == ip)
        .map(|(pid, _)| pid.trim())
        .collect();
    if pids.is_empty() {
        return None;
    }
    let channels = rabbit
        .ctl(&[
            "-q",
            "--no-table-headers",
            "list_channels",
            "connection",
            "messages_unacknowledged",
        ])
        .await
        .ok()?;
    Some(
        channels
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .filter(|(pid, _)| pids.contains(pid.trim()))
            .filter_map(|(_, n)| n.trim().parse::<u64>().ok())
            .sum(),
    )
}

/// The victim's warnings and errors, and its Postgres / broker transitions, each message once
/// with how often it came.
fn story(log: &Path) -> String {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for event in log_events(log) {
        let level = event["level"].as_str().unwrap_or_default();
        let message = event["message"].as_str().unwrap_or_default();
        let transition = ["Postgres answers again", "consuming"].contains(&message);
        if matches!(level, "WARN" | "ERROR") || transition {
            *counts.entry(format!("{level} {message}")).or_default() += 1;
        }
    }
    counts
        .iter()
        .map(|(m, n)| format!("  {n:>3} × {m}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// How many of the JSON log lines in `log` have `message` as their message.
fn count_events(log: &Path, message: &str) -> usize {
    log_events(log)
        .iter()
        .filter(|v| v["message"].as_str() == Some(message))
        .count()
}
