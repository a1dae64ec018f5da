//! fakecloud: a local emulator of the AWS and Azure commitment-purchase APIs, and the
//! `buyonce-fakecloud` server binary around it.
//!
//! Real `aws-sdk-*` clients and a real Azure client-credentials token flow talk to it unchanged,
//! pointed at it by configuration only: one endpoint (`AWS_ENDPOINT_URL`, the Azure
//! resource-manager URL and the Azure authority host are all [`FakeCloud::endpoint`]).
//!
//! * AWS: EC2 (query), Savings Plans and OpenSearch (restJson1), RDS, ElastiCache, Redshift and
//!   STS (awsQuery), MemoryDB (awsJson1_1), routed by `X-Amz-Target`, path, `Action`/`Version`
//!   and the SigV4 credential scope, which also gives the region. Signatures are verified against
//!   the configured credentials (`test` / `test` → account `000000000000`); `sts:AssumeRole`
//!   issues temporary credentials attributed to the role's account.
//! * Azure: `/{tenant}/oauth2/v2.0/token` and Microsoft.Capacity (`calculatePrice`,
//!   `reservationOrders`) at api-version `2022-11-01`, bearer token required.
//! * Admin API under `/_fakecloud/` (see [`admin`]), fault injection (see [`Faults`]).
//!
//! Operation names (call counts and fault rules) are `"<service>:<Operation>"` with the services
//! `ec2`, `savingsplans`, `rds`, `elasticache`, `memorydb`, `opensearch`, `redshift`, `sts` and
//! `azure` (`GetToken`, `CalculatePrice`, `PurchaseReservationOrder`, `GetReservationOrder`,
//! `ListReservationOrders`, `GetOperationStatus`, `GetOperationResult`). The ledger names services
//! as the project's recommendations do (`savings-plans`, Azure `vm`, `sql-database`, …).
//!
//! Commitments start pending (`payment-pending`; Redshift `pending-payment`; Azure `Creating`)
//! and become `active` / `Succeeded` after [`FakeCloudConfig::ri_activation_delay`] /
//! [`FakeCloudConfig::azure_provisioning_delay`], unless a provisioning-failure fault or
//! [`FakeCloud::set_state`] says otherwise.
//!
//! ```no_run
//! use buyonce_fakecloud::{sdk, FakeCloud, FakeCloudConfig};
//! # async fn demo() -> anyhow::Result<()> {
//! let fc = FakeCloud::start(FakeCloudConfig::default()).await?;
//! let ec2 = aws_sdk_ec2::Client::new(&sdk::config(&fc.endpoint(), "us-east-1"));
//! // … exercise the code under test …
//! assert_eq!(fc.ledger().len(), 1);
//! fc.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod admin;
mod aws;
mod azure;
pub mod catalog;
mod client;
mod config;
mod ec2;
mod elasticache;
pub mod faults;
mod identity;
mod ledger;
mod memorydb;
mod opensearch;
mod protocol;
mod rds;
pub mod realism;
mod redshift;
mod reserved;
mod savingsplans;
pub mod sdk;
mod server;
mod sigv4;
mod sts;
mod xml;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use azure::{azure_service, API_VERSION as AZURE_API_VERSION};
pub use catalog::{AzureSku, Catalog, PaymentOption, ReservationOffering, SavingsPlanOffering};
pub use client::AdminClient;
pub use config::{
    FakeCloudConfig, StaticCredentials, DEFAULT_ACCESS_KEY, DEFAULT_ACCOUNT,
    DEFAULT_IDEMPOTENCY_TAG_KEY, DEFAULT_TENANT,
};
pub use faults::{CommitFailure, FaultAction, FaultRule, Faults, InjectedError, LookupFailureMode};
pub use ledger::{LedgerEntry, LedgerPrice};
pub use protocol::AwsService;
pub use realism::Realism;

/// A running fakecloud. Dropping it stops the server; [`FakeCloud::shutdown`] also waits for it.
#[derive(Debug)]
pub struct FakeCloud {
    addr: SocketAddr,
    shared: Arc<server::Shared>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl FakeCloud {
    /// Binds `config.listen` (default `127.0.0.1:0`) and serves in the background.
    pub async fn start(config: FakeCloudConfig) -> anyhow::Result<FakeCloud> {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let shared = Arc::new(server::Shared::new(config));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server::serve(
            listener,
            server::router(shared.clone()),
            shutdown.clone(),
        ));
        tracing::debug!(%addr, "fakecloud started");
        Ok(FakeCloud {
            addr,
            shared,
            shutdown,
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT`: the AWS endpoint URL, the Azure resource-manager URL and the
    /// Azure authority host.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &FakeCloudConfig {
        &self.shared.config
    }

    /// The Azure token endpoint of the configured tenant.
    pub fn azure_token_url(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.endpoint(),
            self.shared.config.azure_tenant_id
        )
    }

    /// Every commitment ever created, oldest first.
    pub fn ledger(&self) -> Vec<LedgerEntry> {
        self.shared.ledger()
    }

    /// Calls per `"<service>:<Operation>"` (e.g. `"ec2:PurchaseReservedInstancesOffering"`,
    /// `"azure:PurchaseReservationOrder"`), counted before authentication and faults.
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.shared.store().calls.clone()
    }

    /// Calls of one operation.
    pub fn call_count(&self, operation: &str) -> u64 {
        self.shared
            .store()
            .calls
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    /// The realism knobs now.
    pub fn realism(&self) -> Realism {
        self.shared.realism()
    }

    /// Replaces the realism knobs (see [`Realism`]).
    pub fn set_realism(&self, realism: Realism) {
        self.shared.set_realism(realism);
    }

    /// Replaces the faults (and restarts their counters).
    pub fn set_faults(&self, faults: Faults) {
        self.shared.set_faults(faults);
    }

    /// The active faults, with the effective seed.
    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    /// Forgets commitments, price sessions and call counts, and restores the startup faults.
    /// Issued credentials and tokens stay valid.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Overrides the provider state of a commitment (`Cancelled`, `Expired`, `retired`, …).
    pub fn set_state(&self, commitment_id: &str, state: &str) -> Option<LedgerEntry> {
        self.shared.set_state(commitment_id, state)
    }

    /// Stops accepting, drains in-flight requests (at most a few seconds) and returns.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            if let Err(error) = task.await {
                tracing::warn!(%error, "fakecloud server task failed");
            }
        }
    }
}

impl Drop for FakeCloud {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Runs a fakecloud on `config.listen` until `shutdown` is cancelled (the binary's entry point).
pub async fn run(config: FakeCloudConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let shared = Arc::new(server::Shared::new(config));
    tracing::info!(
        endpoint = %format!("http://{addr}"),
        account = %shared.config.default_account,
        azure.tenant = %shared.config.azure_tenant_id,
        "fakecloud listening"
    );
    server::serve(listener, server::router(shared), shutdown).await;
    tracing::info!("fakecloud stopped");
    Ok(())
}
