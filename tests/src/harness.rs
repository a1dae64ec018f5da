//! The integration-test harness: one isolated world per test — its own Postgres schema, its own
//! queue prefix on the shared RabbitMQ, its own fakecloud on port 0 — plus workers built the
//! way the binaries build them, pointed at all three.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use buyonce_fakecloud::{FakeCloud, FakeCloudConfig, Realism, DEFAULT_TENANT};
use buyonce_shared::amqp::Publisher;
use buyonce_shared::store::executions::Submitted;
use buyonce_shared::store::{ItemRow, Store};
use buyonce_shared::testing::{TestBroker, TestDb};
use buyonce_shared::{ExecutionDocument, PurchaseMessage, Recommendation};
use buyonce_worker::clients::aws::AwsSettings;
use buyonce_worker::clients::azure::AzureSettings;
use buyonce_worker::config::WorkerConfig;
use buyonce_worker::handler::{Handler, HandlerSettings, Outcome};
use buyonce_worker::metrics::Metrics;
use buyonce_worker::startup::{self, RunningWorker};
use tokio_util::sync::CancellationToken;

/// The role name workers assume in each account (fakecloud accepts any role).
pub const ROLE: &str = "buyonce-purchaser";

/// The settle window of test workers (production: minutes).
pub const TEST_SETTLE_WINDOW: Duration = Duration::from_millis(1500);

/// How long a strict fakecloud hides a new commitment from lookups in tests: well inside
/// [`TEST_SETTLE_WINDOW`], as the design assumes of the real providers.
pub const TEST_VISIBILITY_DELAY: Duration = Duration::from_millis(400);

/// One test's world.
pub struct World {
    pub db: TestDb,
    pub broker: TestBroker,
    pub fc: FakeCloud,
}

impl World {
    /// A world with a default (friendly) fakecloud and short retry delays.
    pub async fn new() -> Self {
        Self::with_fakecloud(FakeCloudConfig::default()).await
    }

    /// A world whose fakecloud is as pessimistic as the providers are allowed to be, without
    /// random faults: new commitments stay invisible for [`TEST_VISIBILITY_DELAY`] (shorter
    /// than the workers' [`TEST_SETTLE_WINDOW`]), and the other strict behaviours on.
    pub async fn strict() -> Self {
        Self::with_fakecloud(FakeCloudConfig {
            realism: Realism::strict_deterministic(TEST_VISIBILITY_DELAY),
            ..FakeCloudConfig::default()
        })
        .await
    }

    pub async fn with_fakecloud(config: FakeCloudConfig) -> Self {
        buyonce_shared::tls::install_crypto_provider();
        let db = TestDb::new(8).await.expect("test database");
        let broker = TestBroker::new().await.expect("test broker");
        let fc = FakeCloud::start(config).await.expect("fakecloud");
        Self { db, broker, fc }
    }

    pub fn store(&self) -> &Store {
        &self.db.store
    }

    pub fn publisher(&self) -> &Publisher {
        &self.broker.publisher
    }

    /// AWS settings pointing at this world's fakecloud, assuming [`ROLE`] in each account.
    pub fn aws_settings(&self) -> AwsSettings {
        AwsSettings {
            endpoint_url: Some(self.fc.endpoint()),
            region: Some("us-east-1".into()),
            role_name: Some(ROLE.into()),
            static_credentials: Some(("test".into(), "test".into())),
        }
    }

    pub fn azure_settings(&self) -> AzureSettings {
        let mut s = AzureSettings::emulator(&self.fc.endpoint(), DEFAULT_TENANT, "test", "test")
            .expect("azure emulator settings");
        s.max_poll_interval = Duration::from_millis(200);
        s
    }

    /// A worker configuration for this world (metrics on a free port, short heartbeats).
    pub fn worker_config(&self) -> WorkerConfig {
        let empty: [(&str, &str); 0] = [];
        let mut c = WorkerConfig::from_source(&empty).expect("worker config");
        c.common.database = self.db.config.clone();
        c.common.database.pool_size = buyonce_shared::testing::pool_size(6);
        c.common.amqp = self.broker.config.clone();
        c.common.queue_prefix = self.broker.topology.prefix.clone();
        c.common.retry_delays = self.broker.topology.retry_delays.clone();
        c.common.delivery_limit = self.broker.topology.delivery_limit;
        c.concurrency = 16;
        c.heartbeat_interval = Duration::from_millis(500);
        c.stale_after = Duration::from_millis(1500);
        c.shutdown_grace = Duration::from_secs(10);
        c.aws_settle_window = TEST_SETTLE_WINDOW;
        c.azure_settle_window = TEST_SETTLE_WINDOW;
        c.listen = "127.0.0.1:0".parse().expect("addr");
        c.aws = self.aws_settings();
        c.azure = Some(self.azure_settings());
        c
    }

    /// A handler (no broker) wired like a worker's.
    pub async fn handler(&self) -> Handler {
        self.handler_with(|_| {}).await
    }

    pub async fn handler_with(&self, tweak: impl FnOnce(&mut HandlerSettings)) -> Handler {
        let c = self.worker_config();
        // The handler's own defaults are the worker's, built by the worker's own startup
        // code; tests drive one handler with many accounts at once.
        let mut settings = startup::handler_settings(&c);
        settings.per_account_concurrency = 64;
        tweak(&mut settings);
        Handler::new(
            self.store().clone(),
            startup::executors_for(&c).await.expect("executors"),
            settings,
            Arc::new(Metrics::new()),
        )
    }

    /// Records an execution and returns the messages of its items (not published).
    pub async fn submit(&self, doc: &ExecutionDocument) -> Vec<PurchaseMessage> {
        match self.store().submit_execution(doc).await.expect("submit") {
            Submitted::Created(items) | Submitted::Identical(items) => items
                .iter()
                .map(|i| i.to_message(&doc.lineage_key()).expect("message"))
                .collect(),
            Submitted::Conflict { .. } => panic!("conflicting execution"),
        }
    }

    /// Records and publishes (what the producer does).
    pub async fn enqueue(&self, doc: &ExecutionDocument) -> Vec<PurchaseMessage> {
        let msgs = self.submit(doc).await;
        for r in self.publisher().publish_purchases(&msgs).await {
            r.expect("publish");
        }
        let tokens: Vec<buyonce_shared::IdempotencyToken> =
            msgs.iter().map(|m| m.token.clone()).collect();
        self.store()
            .mark_published(&tokens)
            .await
            .expect("mark published");
        msgs
    }

    /// Starts a worker in this process.
    pub async fn start_worker(&self, shutdown: CancellationToken) -> RunningWorker {
        startup::spawn(self.worker_config(), shutdown)
            .await
            .expect("worker starts")
    }

    pub async fn item(&self, msg: &PurchaseMessage) -> ItemRow {
        self.store()
            .item_by_token(&msg.token)
            .await
            .expect("item query")
            .expect("item exists")
    }

    /// Tears everything down.
    pub async fn cleanup(self) {
        self.fc.shutdown().await;
        let _ = self.broker.cleanup().await;
        let _ = self.db.cleanup().await;
    }
}

/// An execution document from recommendations (JSON values), validated.
pub fn execution(id: &str, recommendations: Vec<serde_json::Value>) -> ExecutionDocument {
    let doc = serde_json::json!({
        "execution_id": id,
        "approved_by": "finops@example.com",
        "source": "integration-test",
        "recommendations": recommendations,
    });
    ExecutionDocument::from_json(&serde_json::to_vec(&doc).expect("json")).expect("valid document")
}

/// A valid recommendation for each service, matching fakecloud's built-in catalog.
pub fn recommendation(service: &str) -> serde_json::Value {
    use serde_json::json;
    let aws = "123456789012";
    let sub = "3f2b8c1e-5a4d-4e7f-9b06-1c2d3e4f5a6b";
    match service {
        "ec2" => json!({"provider": "aws", "service": "ec2", "account": aws, "region": "us-east-1",
            "resource_type": "m5.large", "count": 2, "term": "1y", "payment": "all-upfront"}),
        "savings-plans" => json!({"provider": "aws", "service": "savings-plans", "account": aws,
            "plan_type": "compute", "term": "1y", "payment": "all-upfront", "commitment_usd_per_hour": 0.5}),
        "rds" => json!({"provider": "aws", "service": "rds", "account": aws, "region": "eu-west-1",
            "resource_type": "db.r6g.large", "engine": "postgresql", "multi_az": false, "count": 1,
            "term": "1y", "payment": "all-upfront"}),
        "elasticache" => json!({"provider": "aws", "service": "elasticache", "account": aws,
            "region": "us-east-1", "resource_type": "cache.r6g.large", "engine": "redis", "count": 2,
            "term": "1y", "payment": "all-upfront"}),
        "memorydb" => json!({"provider": "aws", "service": "memorydb", "account": aws,
            "region": "us-east-1", "resource_type": "db.r6g.large", "count": 1, "term": "1y",
            "payment": "all-upfront"}),
        "opensearch" => json!({"provider": "aws", "service": "opensearch", "account": aws,
            "region": "us-east-1", "resource_type": "r6g.large.search", "count": 2, "term": "1y",
            "payment": "all-upfront"}),
        "redshift" => json!({"provider": "aws", "service": "redshift", "account": aws,
            "region": "us-east-1", "resource_type": "ra3.xlplus", "count": 2, "term": "1y",
            "payment": "all-upfront"}),
        "vm" => {
            json!({"provider": "azure", "service": "vm", "account": sub, "region": "westeurope",
            "resource_type": "Standard_D2s_v5", "count": 3, "term": "1y", "payment": "upfront"})
        }
        "sql-database" => json!({"provider": "azure", "service": "sql-database", "account": sub,
            "region": "westeurope", "resource_type": "SQLDB_GP_Compute_Gen5", "count": 2, "term": "1y",
            "payment": "upfront"}),
        "redis-cache" => json!({"provider": "azure", "service": "redis-cache", "account": sub,
            "region": "westeurope", "resource_type": "Premium_P1", "count": 1, "term": "1y",
            "payment": "upfront"}),
        "cosmos-db" => json!({"provider": "azure", "service": "cosmos-db", "account": sub,
            "region": "westeurope", "resource_type": "Cosmos_DB_100_RU_S", "count": 10, "term": "1y",
            "payment": "upfront"}),
        other => panic!("no sample recommendation for {other}"),
    }
}

/// Every service buyonce buys, AWS first. (`search` is refused at submission: no documented
/// Azure reservedResourceType.)
pub const SERVICES: [&str; 11] = [
    "ec2",
    "savings-plans",
    "rds",
    "elasticache",
    "memorydb",
    "opensearch",
    "redshift",
    "vm",
    "sql-database",
    "redis-cache",
    "cosmos-db",
];

/// fakecloud's name of the purchase operation of a service.
pub fn purchase_op(service: &str) -> &'static str {
    match service {
        "ec2" => "ec2:PurchaseReservedInstancesOffering",
        "savings-plans" => "savingsplans:CreateSavingsPlan",
        "rds" => "rds:PurchaseReservedDBInstancesOffering",
        "elasticache" => "elasticache:PurchaseReservedCacheNodesOffering",
        "memorydb" => "memorydb:PurchaseReservedNodesOffering",
        "opensearch" => "opensearch:PurchaseReservedInstanceOffering",
        "redshift" => "redshift:PurchaseReservedNodeOffering",
        _ => "azure:PurchaseReservationOrder",
    }
}

/// fakecloud's name of the guard lookup of a service (the first provider call of a purchase).
pub fn guard_op(service: &str) -> &'static str {
    match service {
        "ec2" => "ec2:DescribeReservedInstances",
        "savings-plans" => "savingsplans:DescribeSavingsPlans",
        "rds" => "rds:DescribeReservedDBInstances",
        "elasticache" => "elasticache:DescribeReservedCacheNodes",
        "memorydb" => "memorydb:DescribeReservedNodes",
        "opensearch" => "opensearch:DescribeReservedInstances",
        "redshift" => "redshift:DescribeReservedNodes",
        _ => "azure:ListReservationOrders",
    }
}

/// Handles `msg` the way a broker would redeliver it: on `Retry`, waits the retry's delay and
/// handles it again, until an outcome that ends the delivery (`Done` or `Dead`) or `timeout`.
/// Returns that outcome and the reasons of the retries on the way.
pub async fn handle_until_settled(
    handler: &Handler,
    msg: &PurchaseMessage,
    timeout: Duration,
) -> (Outcome, Vec<&'static str>) {
    let started = Instant::now();
    let mut retries = Vec::new();
    loop {
        match handler.handle(&msg.to_bytes()).await {
            Outcome::Retry { after, reason, .. } => {
                assert!(
                    started.elapsed() < timeout,
                    "still retrying after {timeout:?}: {retries:?}, last {reason}"
                );
                retries.push(reason);
                tokio::time::sleep(after.min(Duration::from_secs(2))).await;
            }
            done => return (done, retries),
        }
    }
}

/// The text of a worker's `/metrics` endpoint.
pub async fn scrape_metrics(addr: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("metrics endpoint answers")
        .text()
        .await
        .expect("metrics text")
}

/// Total provider calls (every operation) made against a fakecloud.
pub fn total_calls(fc: &FakeCloud) -> u64 {
    fc.calls().values().sum()
}

/// Polls `check` until it returns `Some`, or panics after `timeout` with `what`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The recommendation of a message, for building variants in tests.
pub fn rec_of(msg: &PurchaseMessage) -> Recommendation {
    msg.recommendation.clone()
}

/// Path of a workspace binary built next to the running test (`target/<profile>/<name>`),
/// building it first if it is missing (e.g. `cargo test -p buyonce-tests` alone).
pub fn binary(name: &str) -> std::path::PathBuf {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let exe = std::env::current_exe().expect("test executable path");
    // Tests run from target/<profile>/deps/, binaries (the bench) from target/<profile>/.
    let mut dir = exe.parent().expect("target directory").to_path_buf();
    if dir.file_name().and_then(|n| n.to_str()) == Some("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    let _guard = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "--workspace", "--bin", name]);
        if dir.file_name().and_then(|n| n.to_str()) == Some("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build");
        assert!(status.success(), "building {name} failed");
    }
    path
}

impl World {
    /// The database URL of this world's schema, for child processes.
    pub fn database_url(&self) -> String {
        format!(
            "{}?options=-c%20search_path%3D{}",
            buyonce_shared::testing::database_url(),
            self.db.schema
        )
    }

    /// The environment a worker / reaper / producer process of this world needs (the caller
    /// starts from an empty environment so nothing of the machine's leaks in).
    pub fn process_env(&self) -> Vec<(String, String)> {
        let endpoint = self.fc.endpoint();
        let delays: Vec<String> = self
            .broker
            .topology
            .retry_delays
            .iter()
            .map(|d| buyonce_shared::duration::format_duration(*d))
            .collect();
        [
            ("PATH", std::env::var("PATH").unwrap_or_default()),
            ("HOME", std::env::var("HOME").unwrap_or_default()),
            ("BUYONCE_DATABASE_URL", self.database_url()),
            (
                "BUYONCE_DATABASE_POOL_SIZE",
                buyonce_shared::testing::pool_size(4).to_string(),
            ),
            ("BUYONCE_AMQP_URL", buyonce_shared::testing::amqp_url()),
            ("BUYONCE_QUEUE_PREFIX", self.broker.topology.prefix.clone()),
            ("BUYONCE_RETRY_DELAYS", delays.join(",")),
            (
                "BUYONCE_DELIVERY_LIMIT",
                self.broker.topology.delivery_limit.to_string(),
            ),
            ("BUYONCE_LISTEN", "127.0.0.1:0".into()),
            ("BUYONCE_HEARTBEAT_INTERVAL", "500ms".into()),
            (
                "BUYONCE_AWS_SETTLE_WINDOW",
                buyonce_shared::duration::format_duration(TEST_SETTLE_WINDOW),
            ),
            (
                "BUYONCE_AZURE_SETTLE_WINDOW",
                buyonce_shared::duration::format_duration(TEST_SETTLE_WINDOW),
            ),
            ("BUYONCE_LOG_FORMAT", "json".into()),
            ("RUST_LOG", "info".into()),
            ("AWS_ENDPOINT_URL", endpoint.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("BUYONCE_AWS_ROLE_NAME", ROLE.into()),
            ("BUYONCE_AZURE_CREDENTIAL", "emulator".into()),
            ("BUYONCE_AZURE_RESOURCE_MANAGER_URL", endpoint.clone()),
            ("AZURE_AUTHORITY_HOST", endpoint),
            ("AZURE_TENANT_ID", DEFAULT_TENANT.into()),
            ("AZURE_CLIENT_ID", "test".into()),
            ("AZURE_CLIENT_SECRET", "test".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Starts `buyonce-worker` as a child process with this world's environment plus `extra`.
    pub fn spawn_worker_process(
        &self,
        extra: &[(&str, &str)],
        log: &std::path::Path,
    ) -> std::process::Child {
        let log_file = std::fs::File::create(log).expect("worker log file");
        let mut cmd = std::process::Command::new(binary("buyonce-worker"));
        cmd.env_clear()
            .envs(self.process_env())
            .envs(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .stdout(std::process::Stdio::null())
            .stderr(log_file);
        // A concurrent cargo build may be relinking the binary this very moment: retry briefly.
        let mut tries = 0;
        loop {
            match cmd.spawn() {
                Ok(child) => return child,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("starting buyonce-worker: {e}"),
            }
        }
    }
}

/// Sends `signal` (e.g. `libc::SIGTERM`) to a child process.
pub fn signal(child: &std::process::Child, signal: i32) {
    let pid = i32::try_from(child.id()).expect("pid");
    // Through kill(1): the workspace forbids unsafe code. Failure means the process is gone.
    let _ = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}
