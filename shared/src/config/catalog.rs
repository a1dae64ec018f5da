//! The catalog of every environment variable buyonce reads: name, default, expected form, doc
//! and the binaries that read it. It is data: the README's configuration table, the deployment
//! manifests' test and the parsers all read it, so they cannot drift apart.

/// One environment variable: its name, default and documentation.
#[derive(Debug, Clone, Copy)]
pub struct VarSpec {
    pub name: &'static str,
    /// Default as it would be written in the environment; `None` = unset by default.
    pub default: Option<&'static str>,
    pub expected: &'static str,
    pub doc: &'static str,
    /// Binaries that read it.
    pub read_by: &'static [&'static str],
    /// Holds a secret (accepts `<NAME>_FILE`, never logged).
    pub secret: bool,
}

/// Every environment variable buyonce reads.
pub mod vars {
    use super::VarSpec;

    const ALL_BINS: &[&str] = &["buyonce-producer", "buyonce-worker", "buyonce-reaper"];
    const WORKER: &[&str] = &["buyonce-worker"];
    const REAPER: &[&str] = &["buyonce-reaper"];
    const PRODUCER: &[&str] = &["buyonce-producer"];
    const WORKER_REAPER: &[&str] = &["buyonce-worker", "buyonce-reaper"];

    pub const AMQP_URL: VarSpec = VarSpec {
        name: "BUYONCE_AMQP_URL",
        default: Some("amqp://guest:guest@127.0.0.1:5672/%2f"),
        expected: "an amqp:// or amqps:// URL",
        doc: "RabbitMQ connection URL.",
        read_by: ALL_BINS,
        secret: true,
    };
    pub const AMQP_CA_FILE: VarSpec = VarSpec {
        name: "BUYONCE_AMQP_CA_FILE",
        default: None,
        expected: "a path to a PEM file of CA certificates",
        doc: "Private CA for amqps:// (system roots are used otherwise).",
        read_by: ALL_BINS,
        secret: false,
    };
    pub const AMQP_CLIENT_CERT_FILE: VarSpec = VarSpec {
        name: "BUYONCE_AMQP_CLIENT_CERT_FILE",
        default: None,
        expected: "a path to a PEM certificate chain",
        doc: "Client certificate for amqps:// mutual TLS (with BUYONCE_AMQP_CLIENT_KEY_FILE).",
        read_by: ALL_BINS,
        secret: false,
    };
    pub const AMQP_CLIENT_KEY_FILE: VarSpec = VarSpec {
        name: "BUYONCE_AMQP_CLIENT_KEY_FILE",
        default: None,
        expected: "a path to a PEM private key",
        doc: "Client key for amqps:// mutual TLS.",
        read_by: ALL_BINS,
        secret: false,
    };
    pub const DATABASE_URL: VarSpec = VarSpec {
        name: "BUYONCE_DATABASE_URL",
        default: Some("postgres://postgres@127.0.0.1:5432/buyonce"),
        expected: "a postgres:// URL (sslmode=disable|prefer|require|verify-ca|verify-full)",
        doc: "Postgres URL; the database is created if missing.",
        read_by: ALL_BINS,
        secret: true,
    };
    pub const DATABASE_CA_FILE: VarSpec = VarSpec {
        name: "BUYONCE_DATABASE_CA_FILE",
        default: None,
        expected: "a path to a PEM file of CA certificates",
        doc: "Private CA for Postgres TLS (system roots are used otherwise).",
        read_by: ALL_BINS,
        secret: false,
    };
    pub const DATABASE_POOL_SIZE: VarSpec = VarSpec {
        name: "BUYONCE_DATABASE_POOL_SIZE",
        default: Some("16"),
        expected: "an integer from 1 to 1000",
        doc: "Postgres connections per process (a worker or the reaper needs at least 2).",
        read_by: ALL_BINS,
        secret: false,
    };
    pub const DATABASE_STATEMENT_TIMEOUT: VarSpec = VarSpec {
        name: "BUYONCE_DATABASE_STATEMENT_TIMEOUT",
        default: Some("30s"),
        expected: "a Go duration from 1s to 1h, or 0 to leave the server's setting",
        doc: "Postgres `statement_timeout` of every session: a statement that runs longer fails (and is retried) instead of holding a purchase.",
        read_by: ALL_BINS,
        secret: false,
    };
    pub const DATABASE_TCP_TIMEOUT: VarSpec = VarSpec {
        name: "BUYONCE_DATABASE_TCP_TIMEOUT",
        default: Some("20s"),
        expected: "a Go duration from 10s to 10m",
        doc: "How long a Postgres connection may go unanswered before both ends drop it (TCP keepalives and `TCP_USER_TIMEOUT`, asked of the client and, at connect, of the server): a partitioned process loses its session, and its advisory locks, within about this long.",
        read_by: ALL_BINS,
        secret: false,
    };
    pub const DATABASE_GROUP_COMMIT: VarSpec = VarSpec {
        name: "BUYONCE_DATABASE_GROUP_COMMIT",
        default: Some("true"),
        expected: "true or false",
        doc: "Let concurrent claims, pre-buy checks and records share one Postgres transaction (each keeps its own compare-and-set outcome); `false` commits each on its own.",
        read_by: WORKER,
        secret: false,
    };
    pub const AMQP_HEARTBEAT: VarSpec = VarSpec {
        name: "BUYONCE_AMQP_HEARTBEAT",
        default: Some("15s"),
        expected: "a whole number of seconds from 2s to 10m",
        doc: "AMQP heartbeat asked of RabbitMQ (a `heartbeat` in the URL wins): a connection silent for two of them is dead, on both ends.",
        read_by: ALL_BINS,
        secret: false,
    };
    pub const QUEUE_PREFIX: VarSpec = VarSpec {
        name: "BUYONCE_QUEUE_PREFIX",
        default: Some("buyonce"),
        expected: "1-64 characters of a-z 0-9 . _ -",
        doc: "Prefix of every exchange and queue name.",
        read_by: ALL_BINS,
        secret: false,
    };
    pub const DELIVERY_LIMIT: VarSpec = VarSpec {
        name: "BUYONCE_DELIVERY_LIMIT",
        default: Some("20"),
        expected: "an integer from 1 to 1000",
        doc:
            "Quorum queue x-delivery-limit: redeliveries (crashes) before the broker dead-letters.",
        read_by: ALL_BINS,
        secret: false,
    };
    pub const LOG_FORMAT: VarSpec = VarSpec {
        name: "BUYONCE_LOG_FORMAT",
        default: Some("pretty"),
        expected: "pretty or json",
        doc: "Log line format.",
        read_by: ALL_BINS,
        secret: false,
    };
    pub const RUST_LOG: VarSpec = VarSpec {
        name: "RUST_LOG",
        default: Some("info"),
        expected: "a tracing filter, e.g. info,buyonce_worker=debug",
        doc: "Log level filter.",
        read_by: ALL_BINS,
        secret: false,
    };
    pub const API_TOKENS: VarSpec = VarSpec {
        name: "BUYONCE_API_TOKENS",
        default: None,
        expected: "comma-separated bearer tokens, each at least 32 random characters (e.g. `openssl rand -hex 32`)",
        doc: "Bearer tokens accepted by `buyonce-producer serve`; without any, it binds only to loopback.",
        read_by: PRODUCER,
        secret: true,
    };
    pub const LISTEN: VarSpec = VarSpec {
        name: "BUYONCE_LISTEN",
        default: None,
        expected: "host:port (worker 127.0.0.1:9101, reaper 127.0.0.1:9102, producer 127.0.0.1:8080)",
        doc: "HTTP listen address (metrics/health; the API for the producer). Port 0 picks a free port.",
        read_by: ALL_BINS,
        secret: false,
    };
    pub const RELAY_INTERVAL: VarSpec = VarSpec {
        name: "BUYONCE_RELAY_INTERVAL",
        default: Some("30s"),
        expected: "a positive Go duration, e.g. 30s",
        doc: "How often `serve` republishes committed-but-unpublished items.",
        read_by: PRODUCER,
        secret: false,
    };
    pub const CONCURRENCY: VarSpec = VarSpec {
        name: "BUYONCE_CONCURRENCY",
        default: Some("64"),
        expected: "an integer from 1 to 10000",
        doc: "In-flight purchases per worker (prefetch is set to match).",
        read_by: WORKER,
        secret: false,
    };
    pub const PER_ACCOUNT_CONCURRENCY: VarSpec = VarSpec {
        name: "BUYONCE_PER_ACCOUNT_CONCURRENCY",
        default: Some("4"),
        expected: "an integer from 1 to 10000",
        doc: "In-flight purchases per cloud account per worker, so one throttled account cannot starve the rest.",
        read_by: WORKER,
        secret: false,
    };
    pub const MAX_ATTEMPTS: VarSpec = VarSpec {
        name: "BUYONCE_MAX_ATTEMPTS",
        default: Some("8"),
        expected: "an integer from 1 to 100",
        doc: "Purchase attempts (transient failures) before an item is dead.",
        read_by: WORKER_REAPER,
        secret: false,
    };
    pub const RETRY_DELAYS: VarSpec = VarSpec {
        name: "BUYONCE_RETRY_DELAYS",
        default: Some("1s,5s,30s,2m,10m"),
        expected: "comma-separated Go durations, increasing, e.g. 1s,5s,30s",
        doc: "Backoff wait queues: attempt n waits about the n-th delay (with jitter), the last repeats.",
        read_by: ALL_BINS,
        secret: false,
    };
    pub const HEARTBEAT_INTERVAL: VarSpec = VarSpec {
        name: "BUYONCE_HEARTBEAT_INTERVAL",
        default: Some("10s"),
        expected: "a positive Go duration",
        doc: "How often a worker refreshes heartbeat_at while a purchase runs.",
        read_by: WORKER,
        secret: false,
    };
    pub const AWS_SETTLE_WINDOW: VarSpec = VarSpec {
        name: "BUYONCE_AWS_SETTLE_WINDOW",
        default: Some("5m"),
        expected: "a positive Go duration",
        doc: "After an AWS purchase call whose outcome is unknown, how long a retry that finds nothing waits before it may buy again (AWS describe calls may not show a new reservation at once).",
        read_by: WORKER,
        secret: false,
    };
    pub const AZURE_SETTLE_WINDOW: VarSpec = VarSpec {
        name: "BUYONCE_AZURE_SETTLE_WINDOW",
        default: Some("30m"),
        expected: "a positive Go duration",
        doc: "After an Azure purchase whose outcome is unknown, how long the order must stay absent from GET and from the order list before a new quote is bought.",
        read_by: WORKER,
        secret: false,
    };
    pub const SHUTDOWN_GRACE: VarSpec = VarSpec {
        name: "BUYONCE_SHUTDOWN_GRACE",
        default: Some("25s"),
        expected: "a Go duration",
        doc: "On SIGTERM, how long in-flight purchases may take before the worker exits.",
        read_by: WORKER,
        secret: false,
    };
    pub const DRY_RUN: VarSpec = VarSpec {
        name: "BUYONCE_DRY_RUN",
        default: Some("false"),
        expected: "true or false",
        doc: "Resolve offerings and guards but buy nothing.",
        read_by: WORKER,
        secret: false,
    };
    pub const DAILY_BUDGET_USD: VarSpec = VarSpec {
        name: "BUYONCE_DAILY_BUDGET_USD",
        default: None,
        expected: "a non-negative amount in USD, e.g. 25000",
        doc: "Fleet-wide upfront spend per UTC day; purchases above it wait (the producer shows it in `status`).",
        read_by: &["buyonce-worker", "buyonce-producer"],
        secret: false,
    };
    pub const TAG_KEY: VarSpec = VarSpec {
        name: "BUYONCE_TAG_KEY",
        default: Some("buyonce-idempotency-token"),
        expected: "1-128 characters",
        doc: "Tag key carrying the token: the EC2 guard, and set on Savings Plans, RDS, ElastiCache and MemoryDB purchases.",
        read_by: WORKER_REAPER,
        secret: false,
    };
    pub const AWS_ROLE_NAME: VarSpec = VarSpec {
        name: "BUYONCE_AWS_ROLE_NAME",
        default: None,
        expected: "an IAM role name",
        doc: "If set, assume arn:aws:iam::<account>:role/<name> for each recommendation's account.",
        read_by: WORKER_REAPER,
        secret: false,
    };
    pub const AWS_ENDPOINT_URL: VarSpec = VarSpec {
        name: "AWS_ENDPOINT_URL",
        default: None,
        expected: "a URL",
        doc: "AWS SDK standard: send every AWS call here (fakecloud in tests and the demo).",
        read_by: WORKER_REAPER,
        secret: false,
    };
    pub const AWS_REGION: VarSpec = VarSpec {
        name: "AWS_REGION",
        default: Some("us-east-1"),
        expected: "an AWS region",
        doc: "AWS SDK standard: region for calls that have none in the recommendation (STS).",
        read_by: WORKER_REAPER,
        secret: false,
    };
    pub const AZURE_CREDENTIAL: VarSpec = VarSpec {
        name: "BUYONCE_AZURE_CREDENTIAL",
        default: Some("client-secret"),
        expected: "client-secret, managed-identity, workload-identity, developer-tools or emulator",
        doc: "Which Azure credential the worker uses (azure_identity has no default chain). Azure is enabled when this or AZURE_CLIENT_ID is set.",
        read_by: WORKER,
        secret: false,
    };
    pub const AZURE_RESOURCE_MANAGER_URL: VarSpec = VarSpec {
        name: "BUYONCE_AZURE_RESOURCE_MANAGER_URL",
        default: Some("https://management.azure.com"),
        expected: "an https:// URL (http:// only for a loopback emulator)",
        doc: "Azure Resource Manager endpoint.",
        read_by: WORKER,
        secret: false,
    };
    pub const AZURE_AUTHORITY_HOST: VarSpec = VarSpec {
        name: "AZURE_AUTHORITY_HOST",
        default: Some("https://login.microsoftonline.com"),
        expected: "a URL",
        doc: "Azure identity standard: token authority (the emulator credential's token endpoint).",
        read_by: WORKER,
        secret: false,
    };
    pub const AZURE_TENANT_ID: VarSpec = VarSpec {
        name: "AZURE_TENANT_ID",
        default: None,
        expected: "a tenant GUID or domain",
        doc: "Azure identity standard (client-secret, workload-identity, emulator).",
        read_by: WORKER,
        secret: false,
    };
    pub const AZURE_CLIENT_ID: VarSpec = VarSpec {
        name: "AZURE_CLIENT_ID",
        default: None,
        expected: "an application (client) ID",
        doc: "Azure identity standard (client-secret, workload-identity, user-assigned managed identity, emulator).",
        read_by: WORKER,
        secret: false,
    };
    pub const AZURE_CLIENT_SECRET: VarSpec = VarSpec {
        name: "AZURE_CLIENT_SECRET",
        default: None,
        expected: "the application's client secret",
        doc: "Azure identity standard (client-secret, emulator).",
        read_by: WORKER,
        secret: true,
    };
    pub const REAP_AFTER: VarSpec = VarSpec {
        name: "PURCHASE_APPROVED_REAP_AFTER",
        default: Some("10m"),
        expected: "a positive Go duration, e.g. 10m or 2h30m",
        doc: "Items running longer than this without a heartbeat are failed by the reaper (invalid → WARN and 10m).",
        read_by: REAPER,
        secret: false,
    };
    pub const REAP_INTERVAL: VarSpec = VarSpec {
        name: "BUYONCE_REAP_INTERVAL",
        default: Some("5m"),
        expected: "a positive Go duration",
        doc: "How often the reaper sweeps (without --once).",
        read_by: REAPER,
        secret: false,
    };
    pub const UNPUBLISHED_GRACE: VarSpec = VarSpec {
        name: "BUYONCE_UNPUBLISHED_GRACE",
        default: Some("30s"),
        expected: "a positive Go duration",
        doc: "Queued items unpublished for longer than this are republished (reaper and producer relay).",
        read_by: &["buyonce-producer", "buyonce-reaper"],
        secret: false,
    };

    /// Every variable, for documentation and manifest checks.
    pub const ALL: &[VarSpec] = &[
        AMQP_URL,
        AMQP_CA_FILE,
        AMQP_CLIENT_CERT_FILE,
        AMQP_CLIENT_KEY_FILE,
        DATABASE_URL,
        DATABASE_CA_FILE,
        DATABASE_POOL_SIZE,
        DATABASE_STATEMENT_TIMEOUT,
        DATABASE_TCP_TIMEOUT,
        DATABASE_GROUP_COMMIT,
        AMQP_HEARTBEAT,
        QUEUE_PREFIX,
        DELIVERY_LIMIT,
        RETRY_DELAYS,
        LOG_FORMAT,
        RUST_LOG,
        LISTEN,
        API_TOKENS,
        RELAY_INTERVAL,
        UNPUBLISHED_GRACE,
        CONCURRENCY,
        PER_ACCOUNT_CONCURRENCY,
        MAX_ATTEMPTS,
        HEARTBEAT_INTERVAL,
        AWS_SETTLE_WINDOW,
        AZURE_SETTLE_WINDOW,
        SHUTDOWN_GRACE,
        DRY_RUN,
        DAILY_BUDGET_USD,
        TAG_KEY,
        AWS_ROLE_NAME,
        AWS_ENDPOINT_URL,
        AWS_REGION,
        AZURE_CREDENTIAL,
        AZURE_RESOURCE_MANAGER_URL,
        AZURE_AUTHORITY_HOST,
        AZURE_TENANT_ID,
        AZURE_CLIENT_ID,
        AZURE_CLIENT_SECRET,
        REAP_AFTER,
        REAP_INTERVAL,
    ];
}
