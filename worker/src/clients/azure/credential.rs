//! Bearer tokens for Resource Manager. `azure_identity` 1.0 has no default credential chain and
//! refuses a plain-http authority host, so the credential is chosen explicitly; `emulator`
//! fetches OAuth2 client-credentials tokens from fakecloud's token endpoint itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use azure_core::credentials::{Secret, TokenCredential};
use buyonce_shared::config;
use serde_json::Value;
use tokio::sync::Mutex;
use url::Url;

use super::settings::{AzureSettings, CredentialKind};
use crate::error::{PermanentKind, PurchaseError};

#[async_trait]
pub(super) trait TokenSource: Send + Sync {
    async fn bearer(&self) -> Result<String, PurchaseError>;
}

/// Any azure_identity credential.
struct IdentitySource {
    credential: Arc<dyn TokenCredential>,
    scope: String,
}

#[async_trait]
impl TokenSource for IdentitySource {
    async fn bearer(&self) -> Result<String, PurchaseError> {
        let token = self
            .credential
            .get_token(&[self.scope.as_str()], None)
            .await
            .map_err(|e| PurchaseError::transient(format!("azure: cannot get a token: {e}")))?;
        Ok(token.token.secret().to_owned())
    }
}

/// OAuth2 client credentials against a loopback emulator, cached until shortly before expiry.
struct EmulatorSource {
    http: reqwest::Client,
    token_url: Url,
    client_id: String,
    secret: config::Secret,
    scope: String,
    cache: Mutex<Option<(String, Instant)>>,
}

#[async_trait]
impl TokenSource for EmulatorSource {
    async fn bearer(&self) -> Result<String, PurchaseError> {
        let mut cache = self.cache.lock().await;
        if let Some((token, until)) = cache.as_ref() {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let response = self
            .http
            .post(self.token_url.clone())
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.secret.expose()),
                ("scope", self.scope.as_str()),
            ])
            .send()
            .await
            .map_err(|e| PurchaseError::transient(format!("azure token endpoint: {e}")))?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| {
            PurchaseError::transient(format!("azure token endpoint: bad response: {e}"))
        })?;
        if !status.is_success() {
            // Throttled or down: try again later. Anything else is a refusal of the credentials.
            let kind =
                if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    return Err(PurchaseError::transient(format!(
                        "azure token endpoint: HTTP {status}"
                    )));
                } else {
                    PermanentKind::Auth
                };
            return Err(PurchaseError::permanent(
                kind,
                format!(
                    "azure token endpoint refused: {}",
                    body.get("error")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown error")
                ),
            ));
        }
        let token = body
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| PurchaseError::transient("azure token endpoint: no access_token"))?
            .to_owned();
        let ttl = body
            .get("expires_in")
            .and_then(Value::as_u64)
            .unwrap_or(300);
        *cache = Some((
            token.clone(),
            Instant::now() + Duration::from_secs(ttl.saturating_sub(60).max(1)),
        ));
        Ok(token)
    }
}

fn identity_credential(
    kind: CredentialKind,
    s: &AzureSettings,
) -> anyhow::Result<Arc<dyn TokenCredential>> {
    use azure_identity::*;
    Ok(match kind {
        CredentialKind::ClientSecret => ClientSecretCredential::new(
            s.tenant_id.as_deref().unwrap_or_default(),
            s.client_id.clone().unwrap_or_default(),
            Secret::new(
                s.client_secret
                    .as_ref()
                    .map(|x| x.expose().to_owned())
                    .unwrap_or_default(),
            ),
            None,
        )?,
        // `None` authenticates the system-assigned identity only; AZURE_CLIENT_ID names a
        // user-assigned one.
        CredentialKind::ManagedIdentity => {
            ManagedIdentityCredential::new(Some(managed_identity_options(s)))?
        }
        CredentialKind::WorkloadIdentity => {
            WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                client_id: s.client_id.clone(),
                tenant_id: s.tenant_id.clone(),
                ..Default::default()
            }))?
        }
        CredentialKind::DeveloperTools => DeveloperToolsCredential::new(None)?,
        CredentialKind::Emulator => {
            anyhow::bail!("the emulator credential is not an azure_identity credential")
        }
    })
}

/// The managed identity to authenticate: user-assigned by client ID when `AZURE_CLIENT_ID` is
/// set, system-assigned otherwise.
pub fn managed_identity_options(
    s: &AzureSettings,
) -> azure_identity::ManagedIdentityCredentialOptions {
    azure_identity::ManagedIdentityCredentialOptions {
        user_assigned_id: s
            .client_id
            .clone()
            .map(azure_identity::UserAssignedId::ClientId),
        ..Default::default()
    }
}

/// The token source `settings` choose; `http` is the client the emulator's token calls use.
pub(super) fn token_source(
    settings: &AzureSettings,
    http: &reqwest::Client,
) -> anyhow::Result<Arc<dyn TokenSource>> {
    let scope = format!(
        "{}/.default",
        settings.resource_manager_url.as_str().trim_end_matches('/')
    );
    let tokens: Arc<dyn TokenSource> = match settings.credential {
        CredentialKind::Emulator => {
            let tenant = settings.tenant_id.clone().unwrap_or_default();
            Arc::new(EmulatorSource {
                http: http.clone(),
                token_url: settings
                    .authority_host
                    .join(&format!("{tenant}/oauth2/v2.0/token"))?,
                client_id: settings.client_id.clone().unwrap_or_default(),
                secret: settings
                    .client_secret
                    .clone()
                    .unwrap_or_else(|| config::Secret::new("")),
                scope,
                cache: Mutex::new(None),
            })
        }
        kind => Arc::new(IdentitySource {
            credential: identity_credential(kind, settings)?,
            scope,
        }),
    };
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use buyonce_shared::config::vars;

    #[test]
    fn a_client_id_selects_a_user_assigned_managed_identity() {
        let env = [
            (vars::AZURE_CREDENTIAL.name, "managed-identity"),
            (
                vars::AZURE_CLIENT_ID.name,
                "11111111-2222-3333-4444-555555555555",
            ),
        ];
        let s = AzureSettings::from_source(&env).unwrap();
        match managed_identity_options(&s).user_assigned_id {
            Some(azure_identity::UserAssignedId::ClientId(id)) => {
                assert_eq!(id, "11111111-2222-3333-4444-555555555555")
            }
            other => panic!("expected a client ID, got {other:?}"),
        }
        let env = [(vars::AZURE_CREDENTIAL.name, "managed-identity")];
        let s = AzureSettings::from_source(&env).unwrap();
        assert!(managed_identity_options(&s).user_assigned_id.is_none());
    }
}
