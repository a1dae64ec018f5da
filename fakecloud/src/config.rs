//! fakecloud's configuration, with the defaults tests rely on.

use std::net::SocketAddr;
use std::time::Duration;

use super::catalog::Catalog;
use super::faults::Faults;
use super::realism::Realism;

/// Default AWS access key ID and secret (`test` / `test`, as other local AWS emulators use).
pub const DEFAULT_ACCESS_KEY: &str = "test";
/// Default AWS account of the static credentials.
pub const DEFAULT_ACCOUNT: &str = "000000000000";
/// Default Azure tenant ID accepted by the token endpoint.
pub const DEFAULT_TENANT: &str = "00000000-0000-4000-8000-000000000001";
/// The tag key buyonce writes on EC2 Reserved Instances (reported as the ledger handle).
pub const DEFAULT_IDEMPOTENCY_TAG_KEY: &str = "buyonce-idempotency-token";

/// Extra static AWS credentials mapped to their own account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticCredentials {
    /// Access key ID.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Account the calls are attributed to.
    pub account: String,
}

/// How to run a fakecloud.
#[derive(Debug, Clone)]
pub struct FakeCloudConfig {
    /// Address to listen on (default `127.0.0.1:0`, an ephemeral port).
    pub listen: SocketAddr,
    /// AWS access key ID of the default account (default `test`).
    pub access_key_id: String,
    /// AWS secret access key (default `test`).
    pub secret_access_key: String,
    /// Account of the default credentials (default `000000000000`).
    pub default_account: String,
    /// More static credentials, each with its own account.
    pub extra_credentials: Vec<StaticCredentials>,
    /// Azure tenant accepted by `/{tenant}/oauth2/v2.0/token` (default [`DEFAULT_TENANT`]).
    pub azure_tenant_id: String,
    /// Azure client ID accepted by the token endpoint (default `test`).
    pub azure_client_id: String,
    /// Azure client secret accepted by the token endpoint (default `test`).
    pub azure_client_secret: String,
    /// Seed of fault decisions (unless the faults carry their own) and of generated IDs.
    pub seed: u64,
    /// Faults active at start and after `reset()`.
    pub faults: Faults,
    /// Catalog; `None` uses [`Catalog::builtin`].
    pub catalog: Option<Catalog>,
    /// How long EC2 RIs, Savings Plans and other AWS reservations stay `payment-pending`
    /// (Redshift: `pending-payment`) before `active` (default 1 s).
    pub ri_activation_delay: Duration,
    /// How long a `calculatePrice` reservation order ID can be purchased (default 5 min).
    pub azure_price_session_ttl: Duration,
    /// How long an Azure order stays `Creating` before `Succeeded` (default 1 s).
    pub azure_provisioning_delay: Duration,
    /// Latency added to every AWS and Azure call (default 0).
    pub latency: Duration,
    /// Lifetime of STS sessions and Azure tokens (default 1 h).
    pub token_lifetime: Duration,
    /// Page size of `GET reservationOrders` (default 20; Azure has no client page size).
    pub azure_page_size: usize,
    /// EC2 tag key reported as the ledger's idempotency handle.
    pub idempotency_tag_key: String,
    /// How pessimistic to be about undocumented provider behaviour (default: friendly).
    pub realism: Realism,
}

impl Default for FakeCloudConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            access_key_id: DEFAULT_ACCESS_KEY.to_string(),
            secret_access_key: DEFAULT_ACCESS_KEY.to_string(),
            default_account: DEFAULT_ACCOUNT.to_string(),
            extra_credentials: Vec::new(),
            azure_tenant_id: DEFAULT_TENANT.to_string(),
            azure_client_id: "test".to_string(),
            azure_client_secret: "test".to_string(),
            seed: 0,
            faults: Faults::default(),
            catalog: None,
            ri_activation_delay: Duration::from_secs(1),
            azure_price_session_ttl: Duration::from_secs(300),
            azure_provisioning_delay: Duration::from_secs(1),
            latency: Duration::ZERO,
            token_lifetime: Duration::from_secs(3600),
            azure_page_size: 20,
            idempotency_tag_key: DEFAULT_IDEMPOTENCY_TAG_KEY.to_string(),
            realism: Realism::friendly(),
        }
    }
}
