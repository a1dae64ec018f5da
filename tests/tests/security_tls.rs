//! Issue 13: TLS to the broker and the database, secrets from files.
//!
//! Each test makes a throwaway CA here (rcgen) and starts servers of its own with it
//! (`buyonce_tests::nodes`): a Postgres cluster and a RabbitMQ node that accept TLS only. The
//! machine's Postgres and RabbitMQ are neither reconfigured nor used.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use buyonce_fakecloud::FakeCloudConfig;
use buyonce_shared::config::{AmqpConfig, DatabaseConfig};
use buyonce_shared::{amqp, db};
use buyonce_tests::harness::{execution, recommendation, signal, wait_for};
use buyonce_tests::nodes::{
    find_log_event, process_env_with, spawn_binary, wait_exit, with_search_path, world_on,
    PgCluster, PgOptions, RabbitNode, RabbitOptions, ServerTls,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A throwaway PKI: a CA, a server certificate it signed for `localhost` and `127.0.0.1`, a
/// client certificate it signed, and a second CA that signed nothing we serve (the wrong CA).
struct Pki {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn generate() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let (ca, issuer) = new_ca("buyonce test CA");
        let (wrong_ca, _) = new_ca("someone else's CA");
        std::fs::write(dir.path().join("ca.pem"), ca).unwrap();
        std::fs::write(dir.path().join("wrong-ca.pem"), wrong_ca).unwrap();
        let pki = Pki { dir, issuer };
        pki.issue(
            "server",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        pki.issue("client", &[], ExtendedKeyUsagePurpose::ClientAuth);
        pki
    }

    /// Signs a certificate for `names` into `<name>.pem` and `<name>.key`.
    fn issue(&self, name: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) {
        let (cert, key) = leaf(&self.issuer, name, names, usage);
        std::fs::write(self.path(&format!("{name}.pem")), cert).unwrap();
        std::fs::write(self.path(&format!("{name}.key")), key).unwrap();
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    fn wrong_ca(&self) -> PathBuf {
        self.path("wrong-ca.pem")
    }

    /// The server certificate `name` (default `server`) for a node.
    fn server_named(&self, name: &str) -> ServerTls {
        ServerTls {
            cert_file: self.path(&format!("{name}.pem")),
            key_file: self.path(&format!("{name}.key")),
            ca_file: Some(self.ca()),
        }
    }

    fn server(&self) -> ServerTls {
        self.server_named("server")
    }
}

fn new_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

/// A certificate signed by `issuer` and its private key (PKCS#8 PEM).
fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    common_name: &str,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A Postgres cluster that accepts TLS only.
async fn tls_only_postgres(pki: &Pki) -> PgCluster {
    PgCluster::start(PgOptions {
        tls: Some(pki.server()),
        tls_only: true,
        ..PgOptions::default()
    })
    .await
    .expect("TLS-only Postgres cluster")
}

/// A RabbitMQ node with an AMQPS listener only.
async fn tls_only_rabbit(pki: &Pki, require_client_cert: bool) -> RabbitNode {
    RabbitNode::start(RabbitOptions {
        tls: Some(pki.server()),
        tls_only: true,
        require_client_cert,
        ..RabbitOptions::default()
    })
    .await
    .expect("TLS-only RabbitMQ node")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// The nodes themselves
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn our_own_postgres_cluster_serves_cuts_connections_restarts_and_is_removed_on_drop() {
    let started = Instant::now();
    let mut pg = PgCluster::start(PgOptions::default()).await.unwrap();
    eprintln!("PgCluster started in {:?}", started.elapsed());
    assert_ne!(pg.port(), 5432, "never the machine's Postgres");
    let url = pg.url("postgres");
    let connect = || async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok::<_, tokio_postgres::Error>(client)
    };
    let client = connect().await.unwrap();
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);

    assert!(pg.kill_connections().await.unwrap() >= 1);
    assert!(
        client.query_one("SELECT 1", &[]).await.is_err(),
        "a terminated connection fails its next query"
    );

    pg.restart().await.unwrap();
    let client = connect().await.unwrap();
    client
        .batch_execute("CREATE TABLE survived (x int)")
        .await
        .unwrap();
    drop(client);
    pg.restart().await.unwrap();
    let client = connect().await.unwrap();
    client
        .batch_execute("SELECT * FROM survived")
        .await
        .expect("data survives a restart");

    pg.stop().await.unwrap();
    assert!(
        connect().await.is_err(),
        "a stopped cluster refuses connections"
    );
    pg.start_again().await.unwrap();
    assert!(connect().await.is_ok());

    let dir = pg.dir().to_path_buf();
    drop(pg);
    assert!(!dir.exists(), "Drop removes {}", dir.display());
}

#[tokio::test]
async fn our_own_rabbitmq_node_serves_stops_and_starts_its_app_and_is_removed_on_drop() {
    let started = Instant::now();
    let mut node = RabbitNode::start(RabbitOptions::default()).await.unwrap();
    eprintln!("RabbitNode started in {:?}", started.elapsed());
    assert_ne!(node.port(), Some(5672), "never the machine's RabbitMQ");
    assert!(node.node_name().starts_with("buyonce-"));
    // The release the node runs is the one installed where it runs from (the machine's, or
    // BUYONCE_TEST_RABBITMQ_ROOT's: the RabbitMQ 4 run of the suite).
    let version = node.ctl(&["version"]).await.unwrap();
    let root = buyonce_tests::nodes::rabbitmq_root()
        .unwrap()
        .unwrap_or_else(|| "/".into());
    let installed = std::fs::read_dir(root.join("usr/lib/rabbitmq/lib"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find_map(|name| name.strip_prefix("rabbitmq_server-").map(str::to_owned))
        .expect("an installed rabbitmq_server");
    eprintln!("RabbitNode runs RabbitMQ {}", version.trim());
    assert_eq!(version.trim(), installed);
    let config = AmqpConfig::new(node.amqp_url());
    let conn = amqp::connect(&config, "nodes-test").await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .queue_declare(
            "nodes-test".into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();

    node.stop_app().await.unwrap();
    let refused = amqp::connect(&config, "nodes-test").await;
    assert!(refused.is_err(), "a stopped app refuses connections");
    assert!(!conn.status().connected(), "and drops the open ones");

    node.start_app().await.unwrap();
    let conn = amqp::connect(&config, "nodes-test").await.unwrap();
    amqp::queue_len(&conn, "nodes-test")
        .await
        .expect("the durable queue is still there after start_app");
    drop(conn);

    node.stop().await.unwrap();
    assert!(amqp::connect(&config, "nodes-test").await.is_err());
    let dir = node.dir().to_path_buf();
    drop(node);
    assert!(!dir.exists(), "Drop removes {}", dir.display());
}

// ---------------------------------------------------------------------------------------------
// Issue 13
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn with_the_right_ca_a_worker_buys_over_tls_to_both_servers_reading_its_secrets_from_files() {
    let pki = Pki::generate();
    let (pg, rabbit) = tokio::join!(tls_only_postgres(&pki), tls_only_rabbit(&pki, true));

    // verify-full against the IP SAN; amqps:// against the DNS SAN, with a client certificate.
    let database_url = format!("{}?sslmode=verify-full", pg.url("buyonce"));
    let mut database = DatabaseConfig::new(&database_url);
    database.ca_file = Some(pki.ca());
    let amqp_url = rabbit.amqps_url("localhost");
    let mut broker = AmqpConfig::new(&amqp_url);
    broker.ca_file = Some(pki.ca());

    let refused = amqp::connect(&broker, "no-client-cert").await.unwrap_err();
    assert!(
        format!("{refused:#}").contains("certificate"),
        "mutual TLS without a client certificate is refused: {refused:#}"
    );
    broker.client_cert_file = Some(pki.path("client.pem"));
    broker.client_key_file = Some(pki.path("client.key"));

    let azure_secret = format!("from-a-file-{}", uuid::Uuid::new_v4().simple());
    let world = world_on(
        database,
        broker,
        FakeCloudConfig {
            azure_client_secret: azure_secret.clone(),
            ..FakeCloudConfig::default()
        },
    )
    .await
    .expect("a world on the TLS servers");

    let secrets = tempfile::tempdir().unwrap();
    let file = |name: &str, value: &str| {
        let path = secrets.path().join(name);
        // A trailing newline, as `echo … > file` and most secret stores leave one.
        std::fs::write(&path, format!("{value}\n")).unwrap();
        path.display().to_string()
    };
    let path = |p: PathBuf| p.display().to_string();
    let env = process_env_with(
        &world,
        &[
            (
                "BUYONCE_DATABASE_URL_FILE",
                file(
                    "database-url",
                    &with_search_path(&database_url, &world.db.schema),
                ),
            ),
            ("BUYONCE_DATABASE_CA_FILE", path(pki.ca())),
            ("BUYONCE_AMQP_URL_FILE", file("amqp-url", &amqp_url)),
            ("BUYONCE_AMQP_CA_FILE", path(pki.ca())),
            (
                "BUYONCE_AMQP_CLIENT_CERT_FILE",
                path(pki.path("client.pem")),
            ),
            ("BUYONCE_AMQP_CLIENT_KEY_FILE", path(pki.path("client.key"))),
            (
                "AZURE_CLIENT_SECRET_FILE",
                file("azure-client-secret", &azure_secret),
            ),
        ],
        &[
            "BUYONCE_DATABASE_URL",
            "BUYONCE_AMQP_URL",
            "AZURE_CLIENT_SECRET",
        ],
    );
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut worker = spawn_binary("buyonce-worker", &[], &env, log.path()).unwrap();

    // An Azure purchase: the worker's token request carries the secret read from the file.
    let msgs = world
        .enqueue(&execution("exec-tls", vec![recommendation("vm")]))
        .await;
    let (w, item, log_path) = (&world, &msgs[0], log.path());
    wait_for(Duration::from_secs(60), "the item bought over TLS", || {
        let exited = worker.try_wait().ok().flatten();
        async move {
            if let Some(status) = exited {
                panic!("worker exited {status}:\n{}", read(log_path));
            }
            (w.item(item).await.status.as_str() == "succeeded").then_some(())
        }
    })
    .await;
    assert_eq!(world.fc.ledger().len(), 1, "{}", read(log.path()));
    assert_eq!(world.fc.call_count("azure:PurchaseReservationOrder"), 1);

    signal(&worker, libc::SIGTERM);
    let status = wait_exit(&mut worker, Duration::from_secs(20))
        .await
        .expect("the worker exits on SIGTERM");
    assert!(status.success(), "{status}\n{}", read(log.path()));
    world.cleanup().await;
}

#[tokio::test]
async fn with_the_wrong_ca_the_worker_names_the_certificate_problem_and_buys_nothing() {
    let pki = Pki::generate();
    let (pg, rabbit) = tokio::join!(tls_only_postgres(&pki), tls_only_rabbit(&pki, false));
    let database_url = format!("{}?sslmode=verify-full", pg.url("buyonce"));
    let amqp_url = rabbit.amqps_url("localhost");
    let mut database = DatabaseConfig::new(&database_url);
    database.ca_file = Some(pki.ca());
    let mut broker = AmqpConfig::new(&amqp_url);
    broker.ca_file = Some(pki.ca());
    let world = world_on(database, broker, FakeCloudConfig::default())
        .await
        .expect("a world on the TLS servers");
    let msgs = world
        .enqueue(&execution(
            "exec-wrong-ca",
            vec![recommendation("savings-plans")],
        ))
        .await;

    let env = |database_ca: PathBuf, amqp_ca: PathBuf| {
        process_env_with(
            &world,
            &[
                (
                    "BUYONCE_DATABASE_URL",
                    with_search_path(&database_url, &world.db.schema),
                ),
                (
                    "BUYONCE_DATABASE_CA_FILE",
                    database_ca.display().to_string(),
                ),
                ("BUYONCE_AMQP_URL", amqp_url.clone()),
                ("BUYONCE_AMQP_CA_FILE", amqp_ca.display().to_string()),
            ],
            &[],
        )
    };
    // Worker A trusts the wrong CA for the broker, worker B for the database.
    let log_a = tempfile::NamedTempFile::new().unwrap();
    let mut a = spawn_binary(
        "buyonce-worker",
        &[],
        &env(pki.ca(), pki.wrong_ca()),
        log_a.path(),
    )
    .unwrap();
    let log_b = tempfile::NamedTempFile::new().unwrap();
    let mut b = spawn_binary(
        "buyonce-worker",
        &[],
        &env(pki.wrong_ca(), pki.ca()),
        log_b.path(),
    )
    .unwrap();

    // A reaches Postgres, then keeps refusing the broker's certificate (it retries: a broker
    // can get its certificate fixed) and never becomes ready.
    wait_for(
        Duration::from_secs(60),
        "worker A naming the broker's certificate problem",
        || async {
            read(log_a.path())
                .contains("TLS certificate problem: check BUYONCE_AMQP_CA_FILE")
                .then_some(())
        },
    )
    .await;
    let started = find_log_event(log_a.path(), "worker started").expect("worker A started");
    let readyz = reqwest::get(format!(
        "http://{}/readyz",
        started["listen"].as_str().unwrap()
    ))
    .await
    .unwrap();
    assert_eq!(readyz.status(), 503, "not ready without a broker");
    assert!(a.try_wait().unwrap().is_none());

    // B cannot open the database: it gives up (after its start-up retries) and exits non-zero.
    let status = wait_exit(&mut b, Duration::from_secs(120))
        .await
        .expect("worker B gives up on the database");
    let text_b = read(log_b.path());
    assert!(!status.success(), "{status}\n{text_b}");
    assert!(
        text_b.contains("invalid peer certificate: UnknownIssuer")
            && text_b.contains("TLS certificate problem: check BUYONCE_DATABASE_CA_FILE"),
        "the error names the certificate problem and what to check:\n{text_b}"
    );

    signal(&a, libc::SIGTERM);
    wait_exit(&mut a, Duration::from_secs(20))
        .await
        .expect("worker A exits on SIGTERM");
    assert!(world.fc.ledger().is_empty(), "nothing bought");
    assert_eq!(
        world.fc.calls().values().sum::<u64>(),
        0,
        "no provider call"
    );
    assert_eq!(world.item(&msgs[0]).await.status.as_str(), "queued");
    world.cleanup().await;
}

#[tokio::test]
async fn verify_full_checks_the_host_name_and_verify_ca_only_the_chain() {
    let pki = Pki::generate();
    pki.issue(
        "localhost-only",
        &["localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let pg = PgCluster::start(PgOptions {
        tls: Some(pki.server_named("localhost-only")),
        tls_only: true,
        ..PgOptions::default()
    })
    .await
    .unwrap();
    buyonce_shared::tls::install_crypto_provider();
    let config = |host: &str, sslmode: &str, ca: Option<PathBuf>| {
        let mut c = DatabaseConfig::new(format!(
            "postgres://postgres@{host}:{}/buyonce?sslmode={sslmode}",
            pg.port()
        ));
        c.ca_file = ca;
        c
    };

    let e = db::connect(&config("127.0.0.1", "verify-full", Some(pki.ca())))
        .await
        .unwrap_err();
    let text = format!("{e:#}");
    assert!(
        text.contains("certificate not valid for name \"127.0.0.1\"")
            && text.contains("TLS certificate problem"),
        "the certificate does not name 127.0.0.1: {text}"
    );
    db::connect(&config("127.0.0.1", "verify-ca", Some(pki.ca())))
        .await
        .expect("verify-ca checks the chain only");
    db::connect(&config("localhost", "verify-full", Some(pki.ca())))
        .await
        .expect("verify-full with the name the certificate carries");
    // With a root certificate, `require` verifies the chain, as libpq does.
    let e = db::connect(&config("localhost", "require", Some(pki.wrong_ca())))
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("UnknownIssuer"), "{e:#}");
    // Without one, the system's roots are the trust anchors; they do not include our CA.
    let e = db::connect(&config("localhost", "verify-full", None))
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("UnknownIssuer"), "{e:#}");
}

#[tokio::test]
async fn plain_connections_to_tls_only_servers_are_refused_with_a_clear_error() {
    let pki = Pki::generate();
    let (pg, rabbit) = tokio::join!(tls_only_postgres(&pki), tls_only_rabbit(&pki, false));
    buyonce_shared::tls::install_crypto_provider();

    let plain = DatabaseConfig::new(format!("{}?sslmode=disable", pg.url("buyonce")));
    let e = db::connect(&plain).await.unwrap_err();
    let text = format!("{e:#}");
    assert!(
        text.contains("no pg_hba.conf entry") && text.contains("no encryption"),
        "{text}"
    );
    // `require` without a CA encrypts without verifying, as libpq does.
    let require = DatabaseConfig::new(format!("{}?sslmode=require", pg.url("buyonce")));
    db::connect(&require)
        .await
        .expect("sslmode=require connects");

    let started = Instant::now();
    let tls_port = rabbit.tls_port().unwrap();
    let plain = AmqpConfig::new(format!(
        "amqp://{}:{}@127.0.0.1:{tls_port}/%2f",
        rabbit.user(),
        rabbit.password()
    ));
    let e = amqp::connect(&plain, "plain-to-tls").await.unwrap_err();
    let text = format!("{e:#}");
    eprintln!(
        "amqp:// to the TLS port failed after {:?}: {text}",
        started.elapsed()
    );
    assert!(
        text.contains("cannot connect to RabbitMQ at amqp://"),
        "{text}"
    );
    assert!(
        text.contains("a TLS port that needs an amqps:// URL"),
        "{text}"
    );
    assert!(!text.contains(rabbit.password()), "{text}");

    // amqps:// without BUYONCE_AMQP_CA_FILE trusts the system's roots only, not our CA.
    let e = amqp::connect(
        &AmqpConfig::new(rabbit.amqps_url("localhost")),
        "system-roots",
    )
    .await
    .unwrap_err();
    let text = format!("{e:#}");
    assert!(
        text.contains("UnknownIssuer") && text.contains("TLS certificate problem"),
        "{text}"
    );
}

#[tokio::test]
async fn a_secret_set_both_directly_and_from_a_file_stops_the_process_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, "from-the-file-0123456789\n").unwrap();
    let secret_file = secret_file.display().to_string();
    let cases = [
        (
            "buyonce-worker",
            vec![],
            "BUYONCE_AMQP_URL",
            "amqp://u:p@127.0.0.1:1/%2f",
        ),
        (
            "buyonce-worker",
            vec![],
            "BUYONCE_DATABASE_URL",
            "postgres://u:p@127.0.0.1:1/x",
        ),
        ("buyonce-worker", vec![], "AZURE_CLIENT_SECRET", "direct"),
        (
            "buyonce-producer",
            vec!["serve"],
            "BUYONCE_API_TOKENS",
            "direct-token-0123456789abcdefghijkl",
        ),
    ];
    for (binary, args, var, value) in cases {
        let env = vec![
            ("PATH".to_owned(), std::env::var("PATH").unwrap_or_default()),
            (
                "BUYONCE_AZURE_CREDENTIAL".to_owned(),
                "client-secret".into(),
            ),
            ("AZURE_TENANT_ID".to_owned(), "t".into()),
            ("AZURE_CLIENT_ID".to_owned(), "c".into()),
            ("AZURE_CLIENT_SECRET".to_owned(), "s".into()),
            (var.to_owned(), value.to_owned()),
            (format!("{var}_FILE"), secret_file.clone()),
        ];
        let log = dir.path().join(format!("{binary}-{var}.log"));
        let mut child = spawn_binary(binary, &args, &env, &log).unwrap();
        let status = wait_exit(&mut child, Duration::from_secs(30)).await;
        let text = read(&log);
        if status.is_none() {
            let _ = child.kill();
        }
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(2),
            "{binary} with {var} and {var}_FILE: {text}"
        );
        assert!(
            text.contains(&format!("both {var} and {var}_FILE are set")),
            "{binary}: {text}"
        );
        assert!(!text.contains("from-the-file"), "{text}");
    }
}
