//! Azure settings from the environment: which credential (`BUYONCE_AZURE_CREDENTIAL`), the
//! resource-manager URL and authority host, the client-secret variables and the polling bounds.
//! `emulator` is accepted only when the resource-manager URL is a loopback address.

use std::time::Duration;

use buyonce_shared::config::{self, vars, ConfigError, EnvSource};
use url::Url;

/// Which credential to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    ClientSecret,
    ManagedIdentity,
    WorkloadIdentity,
    DeveloperTools,
    Emulator,
}

/// Azure settings from the environment.
#[derive(Debug, Clone)]
pub struct AzureSettings {
    pub credential: CredentialKind,
    pub resource_manager_url: Url,
    pub authority_host: Url,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<config::Secret>,
    /// Longest wait between polls of a 202 purchase, whatever `Retry-After` says.
    pub max_poll_interval: Duration,
    /// Give up polling (transient error; the next attempt recovers through the stored order ID).
    pub poll_timeout: Duration,
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

impl AzureSettings {
    /// Reads the Azure variables. Missing pieces for the chosen credential are reported here,
    /// at start-up, not at the first purchase.
    pub fn from_source(env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let credential = config::parse_choice(
            env,
            &vars::AZURE_CREDENTIAL,
            "credential",
            &[
                ("client-secret", CredentialKind::ClientSecret),
                ("managed-identity", CredentialKind::ManagedIdentity),
                ("workload-identity", CredentialKind::WorkloadIdentity),
                ("developer-tools", CredentialKind::DeveloperTools),
                ("emulator", CredentialKind::Emulator),
            ],
        )?;
        let resource_manager_url = config::parse_url(env, &vars::AZURE_RESOURCE_MANAGER_URL)?;
        let authority_host = config::parse_url(env, &vars::AZURE_AUTHORITY_HOST)?;
        let settings = Self {
            credential,
            tenant_id: config::get(env, &vars::AZURE_TENANT_ID),
            client_id: config::get(env, &vars::AZURE_CLIENT_ID),
            client_secret: config::get_secret(env, &vars::AZURE_CLIENT_SECRET)?,
            resource_manager_url,
            authority_host,
            max_poll_interval: Duration::from_secs(30),
            poll_timeout: Duration::from_secs(600),
        };
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let needs = |spec: &config::VarSpec, present: bool| {
            if present {
                Ok(())
            } else {
                Err(config::missing(spec).expecting(format!(
                    "{} (required by BUYONCE_AZURE_CREDENTIAL={:?})",
                    spec.expected, self.credential
                )))
            }
        };
        match self.credential {
            CredentialKind::ClientSecret | CredentialKind::Emulator => {
                needs(&vars::AZURE_TENANT_ID, self.tenant_id.is_some())?;
                needs(&vars::AZURE_CLIENT_ID, self.client_id.is_some())?;
                needs(&vars::AZURE_CLIENT_SECRET, self.client_secret.is_some())?;
            }
            CredentialKind::WorkloadIdentity => {
                needs(&vars::AZURE_TENANT_ID, self.tenant_id.is_some())?;
                needs(&vars::AZURE_CLIENT_ID, self.client_id.is_some())?;
            }
            CredentialKind::ManagedIdentity | CredentialKind::DeveloperTools => {}
        }
        if self.credential == CredentialKind::Emulator && !is_loopback(&self.resource_manager_url) {
            return Err(config::invalid(
                &vars::AZURE_CREDENTIAL,
                "emulator",
                format!(
                    "the emulator credential is only allowed with a loopback resource manager, not {}",
                    self.resource_manager_url
                ),
            )
            .expecting(
                "client-secret, managed-identity, workload-identity or developer-tools for real Azure",
            ));
        }
        if self.resource_manager_url.scheme() != "https" && !is_loopback(&self.resource_manager_url)
        {
            return Err(config::invalid(
                &vars::AZURE_RESOURCE_MANAGER_URL,
                self.resource_manager_url.as_str(),
                "plain http is only allowed for a loopback emulator",
            ));
        }
        Ok(())
    }

    /// Settings for a local emulator (tests, the demo).
    pub fn emulator(
        endpoint: &str,
        tenant: &str,
        client_id: &str,
        secret: &str,
    ) -> Result<Self, ConfigError> {
        let env = [
            (vars::AZURE_CREDENTIAL.name, "emulator"),
            (vars::AZURE_RESOURCE_MANAGER_URL.name, endpoint),
            (vars::AZURE_AUTHORITY_HOST.name, endpoint),
            (vars::AZURE_TENANT_ID.name, tenant),
            (vars::AZURE_CLIENT_ID.name, client_id),
            (vars::AZURE_CLIENT_SECRET.name, secret),
        ];
        Self::from_source(&env)
    }
}
