//! AWS SDK clients per (account, region), built once and cached.
//!
//! Credentials follow the SDK's standard chain. With `BUYONCE_AWS_ROLE_NAME` set, each
//! recommendation's account is reached by assuming `arn:aws:iam::<account>:role/<name>`.
//! Either way the worker checks with `sts:GetCallerIdentity` that the credentials belong to the
//! recommendation's account before buying anything: default credentials for account A must
//! never buy a commitment meant for account B.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use buyonce_shared::config::{self, vars, EnvSource};
use tokio::sync::Mutex;

use crate::error::{PermanentKind, PurchaseError};

pub mod errors;

/// How to reach AWS.
#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    /// Send every call here (`AWS_ENDPOINT_URL`; fakecloud in tests and the demo).
    pub endpoint_url: Option<String>,
    /// Region for calls without one (STS); `AWS_REGION`, default us-east-1.
    pub region: Option<String>,
    /// Assume this role name in each account (`BUYONCE_AWS_ROLE_NAME`).
    pub role_name: Option<String>,
    /// Static credentials instead of the default chain (tests).
    pub static_credentials: Option<(String, String)>,
}

impl AwsSettings {
    /// `AWS_ENDPOINT_URL`, `AWS_REGION` and `BUYONCE_AWS_ROLE_NAME`; credentials come from the
    /// SDK's standard chain.
    pub fn from_source(env: &dyn EnvSource) -> Self {
        Self {
            endpoint_url: config::get(env, &vars::AWS_ENDPOINT_URL),
            region: config::get_or_default(env, &vars::AWS_REGION),
            role_name: config::get(env, &vars::AWS_ROLE_NAME),
            static_credentials: None,
        }
    }
}

type ClientKey = (String, String);

/// Cached SDK configuration per (account, region). Cheap to clone.
#[derive(Clone)]
pub struct AwsClients {
    inner: Arc<Inner>,
}

struct Inner {
    settings: AwsSettings,
    base: SdkConfig,
    /// Credentials per account (assumed role or the default chain, verified).
    accounts: Mutex<HashMap<String, SharedCredentialsProvider>>,
    configs: std::sync::Mutex<HashMap<ClientKey, Arc<Configs>>>,
}

/// The two SDK configurations of one (account, region), and the clients built from them
/// (one [`Clients`] per SDK, built on first use); see [`Clients`].
struct Configs {
    lookup: SdkConfig,
    once: SdkConfig,
    /// `Clients<C>` by `TypeId` of `C`. An SDK client is built once and shared: building one
    /// resolves its configuration and runtime plugins (the SDK's docs ask to reuse clients),
    /// and two were built per purchase before.
    clients: std::sync::Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

/// The HTTP client every SDK client uses: hyper + rustls with ring (one crypto provider in the
/// process), plain http allowed for a local emulator endpoint.
fn http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// Accounts whose credentials stay cached at once (far more than an organisation buys in).
const MAX_ACCOUNTS_CACHED: usize = 10_000;

impl AwsClients {
    /// Loads the base configuration (environment, credential chain).
    pub async fn new(settings: AwsSettings) -> Self {
        let region = settings
            .region
            .clone()
            .unwrap_or_else(|| "us-east-1".to_owned());
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http_client())
            // One cache partition per account's assumed-role credentials. The SDK's default
            // keeps 64 and evicts beyond that: buying in more accounts re-assumed the role for
            // most purchases (the bench, 200 accounts: 1.4 sts:AssumeRole per purchase).
            .identity_cache(
                aws_config::identity::IdentityCache::lazy()
                    .max_partitions(MAX_ACCOUNTS_CACHED)
                    .build(),
            )
            .region(Region::new(region))
            // Lookups retry throttling inside the SDK; purchase calls override this to a
            // single attempt (see [`Clients::once`]).
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(30))
                    .operation_timeout(Duration::from_secs(60))
                    .build(),
            );
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some((key, secret)) = &settings.static_credentials {
            loader = loader.credentials_provider(Credentials::new(
                key.clone(),
                secret.clone(),
                None,
                None,
                "buyonce-static",
            ));
        }
        let base = loader.load().await;
        Self {
            inner: Arc::new(Inner {
                settings,
                base,
                accounts: Mutex::new(HashMap::new()),
                configs: std::sync::Mutex::new(HashMap::new()),
            }),
        }
    }

    /// SDK configurations for `account` in `region`, with verified credentials: the lookup
    /// one and its retry-free twin, derived once per (account, region).
    async fn configs(&self, account: &str, region: &str) -> Result<Arc<Configs>, PurchaseError> {
        let key = (account.to_owned(), region.to_owned());
        if let Some(c) = self
            .inner
            .configs
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned())
        {
            return Ok(c);
        }
        let credentials = self.credentials_for(account).await?;
        let lookup = self
            .inner
            .base
            .to_builder()
            .region(Region::new(region.to_owned()))
            .credentials_provider(credentials)
            .build();
        let once = lookup
            .to_builder()
            .retry_config(RetryConfig::disabled())
            .build();
        let configs = Arc::new(Configs {
            lookup,
            once,
            clients: std::sync::Mutex::new(HashMap::new()),
        });
        if let Ok(mut m) = self.inner.configs.lock() {
            m.insert(key, configs.clone());
        }
        Ok(configs)
    }

    async fn credentials_for(
        &self,
        account: &str,
    ) -> Result<SharedCredentialsProvider, PurchaseError> {
        let mut accounts = self.inner.accounts.lock().await;
        if let Some(p) = accounts.get(account) {
            return Ok(p.clone());
        }
        let provider = match &self.inner.settings.role_name {
            Some(role) => {
                let arn = format!("arn:aws:iam::{account}:role/{role}");
                let p = aws_config::sts::AssumeRoleProvider::builder(arn)
                    .session_name("buyonce")
                    .configure(&self.inner.base)
                    .build()
                    .await;
                SharedCredentialsProvider::new(p)
            }
            None => self.inner.base.credentials_provider().ok_or_else(|| {
                PurchaseError::permanent(
                    PermanentKind::Auth,
                    "no AWS credentials found (standard chain: env, profile, web identity, IMDS)",
                )
            })?,
        };
        // Verify the account before anything can be bought with these credentials.
        let sts_config = self
            .inner
            .base
            .to_builder()
            .credentials_provider(provider.clone())
            .build();
        let sts = aws_sdk_sts::Client::new(&sts_config);
        let identity = sts
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| errors::lookup_failed("sts:GetCallerIdentity", &e))?;
        let actual = identity.account().unwrap_or_default();
        if actual != account {
            return Err(PurchaseError::permanent(
                PermanentKind::Auth,
                format!(
                    "AWS credentials belong to account {actual}, the recommendation is for {account}; \
                     set BUYONCE_AWS_ROLE_NAME to assume a role in each account"
                ),
            ));
        }
        accounts.insert(account.to_owned(), provider.clone());
        Ok(provider)
    }

    /// The clients of SDK `C` for `account` in `region`, with verified credentials: one for
    /// lookups (the SDK retries throttling), one for calls sent exactly once (purchases).
    pub async fn clients<C: SdkClient>(
        &self,
        account: &str,
        region: &str,
    ) -> Result<Clients<C>, PurchaseError> {
        let configs = self.configs(account, region).await?;
        let built = configs.clients.lock().ok().and_then(|m| {
            m.get(&TypeId::of::<C>())
                .and_then(|c| c.downcast_ref::<Clients<C>>())
                .cloned()
        });
        if let Some(clients) = built {
            return Ok(clients);
        }
        let clients = Clients {
            lookup: C::from_conf(&configs.lookup),
            once: C::from_conf(&configs.once),
        };
        if let Ok(mut m) = configs.clients.lock() {
            m.insert(TypeId::of::<C>(), Arc::new(clients.clone()));
        }
        Ok(clients)
    }
}

/// One service's SDK client for one (account, region), in the two retry policies buying needs.
#[derive(Clone, Debug)]
pub struct Clients<C> {
    /// Describe, offering and tag calls: the SDK retries throttling (standard, 3 attempts).
    pub lookup: C,
    /// Calls the SDK sends exactly once: purchases (a retry inside the SDK after a lost
    /// response would buy twice where the provider has no client token: EC2, Redshift; a
    /// possibly-committed purchase is retried only through the queue, guard first) and calls
    /// whose caller is the retry policy (EC2's tag loop).
    pub once: C,
}

/// An `aws-sdk-*` client, built from an [`SdkConfig`].
pub trait SdkClient: Clone + Sized + Send + Sync + 'static {
    fn from_conf(config: &SdkConfig) -> Self;
}

macro_rules! sdk_clients {
    ($($client:ty),* $(,)?) => {
        $(impl SdkClient for $client {
            fn from_conf(config: &SdkConfig) -> Self {
                <$client>::new(config)
            }
        })*
    };
}

sdk_clients!(
    aws_sdk_ec2::Client,
    aws_sdk_savingsplans::Client,
    aws_sdk_rds::Client,
    aws_sdk_elasticache::Client,
    aws_sdk_memorydb::Client,
    aws_sdk_opensearch::Client,
    aws_sdk_redshift::Client,
);

/// Savings Plans is a global service served from us-east-1.
pub const SAVINGS_PLANS_REGION: &str = "us-east-1";
