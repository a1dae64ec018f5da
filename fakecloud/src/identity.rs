//! Who is calling: AWS access keys (static, or temporary ones issued by `sts:AssumeRole`) and
//! Azure bearer tokens issued by the emulated token endpoint.
//!
//! Temporary credentials and tokens are self-contained and HMAC-signed with a per-instance key,
//! so they survive `reset()` and need no table: the session token names the account, and the
//! secret of an `ASIA…` key is derived from the key ID. That is how multi-account works: assume
//! `arn:aws:iam::<acct>:role/<name>`, sign with what you got back, and every call is attributed
//! to `<acct>`.

use base64::Engine as _;
use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::config::FakeCloudConfig;

type HmacSha256 = Hmac<Sha256>;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The AWS principal behind a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsIdentity {
    /// Account the calls are attributed to.
    pub account: String,
    /// `arn:aws:iam::<acct>:root` or `arn:aws:sts::<acct>:assumed-role/<role>/<session>`.
    pub arn: String,
    /// `GetCallerIdentity` user ID.
    pub user_id: String,
    /// The secret the request must be signed with.
    pub secret: String,
}

/// Why an access key is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialError {
    /// Unknown key, or a temporary key without a valid session token.
    Unknown,
    /// A temporary key whose session has expired.
    Expired,
}

/// Temporary credentials issued by `AssumeRole`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemporaryCredentials {
    /// `ASIA…` access key ID.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token (`X-Amz-Security-Token`).
    pub session_token: String,
    /// Expiry.
    pub expiration: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SessionClaims {
    /// Access key ID the token belongs to.
    k: String,
    /// Account.
    a: String,
    /// Role name.
    r: String,
    /// Session name.
    s: String,
    /// Expiry, Unix seconds.
    e: i64,
}

/// Claims of an Azure access token (a JWT signed with HS256 by the emulator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AzureClaims {
    /// Audience (`https://management.azure.com`).
    pub aud: String,
    /// Issuer.
    pub iss: String,
    /// Tenant.
    pub tid: String,
    /// Client (application) ID.
    pub appid: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expiry, Unix seconds.
    pub exp: i64,
}

/// Mints and checks credentials and tokens.
#[derive(Debug, Clone)]
pub struct Identities {
    key: [u8; 32],
}

impl Identities {
    /// Uses `key` to sign everything it issues.
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn mac(&self, purpose: &str, data: &[u8]) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }

    /// Resolves an access key (and session token, for temporary keys) to an identity.
    pub fn resolve_aws(
        &self,
        config: &FakeCloudConfig,
        access_key: &str,
        session_token: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<AwsIdentity, CredentialError> {
        if access_key == config.access_key_id {
            return Ok(root_identity(
                &config.default_account,
                &config.secret_access_key,
            ));
        }
        if let Some(extra) = config
            .extra_credentials
            .iter()
            .find(|c| c.access_key_id == access_key)
        {
            return Ok(root_identity(&extra.account, &extra.secret_access_key));
        }
        if !access_key.starts_with("ASIA") {
            return Err(CredentialError::Unknown);
        }
        let claims = self.session_claims(session_token.ok_or(CredentialError::Unknown)?)?;
        if claims.k != access_key {
            return Err(CredentialError::Unknown);
        }
        if claims.e <= now.timestamp() {
            return Err(CredentialError::Expired);
        }
        Ok(AwsIdentity {
            arn: format!(
                "arn:aws:sts::{}:assumed-role/{}/{}",
                claims.a, claims.r, claims.s
            ),
            user_id: format!("{}:{}", role_id(&claims.a, &claims.r), claims.s),
            account: claims.a,
            secret: self.secret_for(access_key),
        })
    }

    fn secret_for(&self, access_key: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.mac("secret", access_key.as_bytes()))
            [..40]
            .to_string()
    }

    fn session_claims(&self, token: &str) -> Result<SessionClaims, CredentialError> {
        let (payload, signature) = token.split_once('.').ok_or(CredentialError::Unknown)?;
        let expected = B64.encode(self.mac("session", payload.as_bytes()));
        if !bool::from(expected.as_bytes().ct_eq(signature.as_bytes())) {
            return Err(CredentialError::Unknown);
        }
        let json = B64.decode(payload).map_err(|_| CredentialError::Unknown)?;
        serde_json::from_slice(&json).map_err(|_| CredentialError::Unknown)
    }

    /// Issues credentials for `role_name` in `account`; `nonce` makes the key ID unique.
    pub fn assume_role(
        &self,
        account: &str,
        role_name: &str,
        session_name: &str,
        duration: TimeDelta,
        nonce: u64,
        now: DateTime<Utc>,
    ) -> TemporaryCredentials {
        let digest = self.mac(
            "akid",
            format!("{account}|{role_name}|{session_name}|{nonce}").as_bytes(),
        );
        let suffix: String = digest
            .iter()
            .take(16)
            .map(|b| char::from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[(*b % 32) as usize]))
            .collect();
        let access_key_id = format!("ASIA{suffix}");
        let expiration = now + duration;
        let claims = SessionClaims {
            k: access_key_id.clone(),
            a: account.to_string(),
            r: role_name.to_string(),
            s: session_name.to_string(),
            e: expiration.timestamp(),
        };
        let payload = B64.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let signature = B64.encode(self.mac("session", payload.as_bytes()));
        TemporaryCredentials {
            secret_access_key: self.secret_for(&access_key_id),
            access_key_id,
            session_token: format!("{payload}.{signature}"),
            expiration,
        }
    }

    /// Issues an Azure access token.
    pub fn azure_token(&self, claims: &AzureClaims) -> String {
        let header = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{header}.{payload}");
        let signature = B64.encode(self.mac("azure", signing_input.as_bytes()));
        format!("{signing_input}.{signature}")
    }

    /// Checks an Azure access token; `Err(true)` means well-formed but expired.
    pub fn verify_azure_token(&self, token: &str, now: DateTime<Utc>) -> Result<AzureClaims, bool> {
        let (signing_input, signature) = token.rsplit_once('.').ok_or(false)?;
        let expected = B64.encode(self.mac("azure", signing_input.as_bytes()));
        if !bool::from(expected.as_bytes().ct_eq(signature.as_bytes())) {
            return Err(false);
        }
        let (_, payload) = signing_input.split_once('.').ok_or(false)?;
        let claims: AzureClaims =
            serde_json::from_slice(&B64.decode(payload).map_err(|_| false)?).map_err(|_| false)?;
        if claims.exp <= now.timestamp() {
            return Err(true);
        }
        Ok(claims)
    }
}

fn root_identity(account: &str, secret: &str) -> AwsIdentity {
    AwsIdentity {
        account: account.to_string(),
        arn: format!("arn:aws:iam::{account}:root"),
        user_id: account.to_string(),
        secret: secret.to_string(),
    }
}

/// A stable `AROA…` role ID.
pub fn role_id(account: &str, role: &str) -> String {
    let digest = super::catalog::derived_id(&["role", account, role]).replace('-', "");
    format!("AROA{}", digest[..17].to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assumed_role_credentials_resolve_to_their_account() {
        let ids = Identities::new([7; 32]);
        let config = FakeCloudConfig::default();
        let now = Utc::now();
        let creds = ids.assume_role("111122223333", "buyer", "s1", TimeDelta::hours(1), 1, now);
        let who = ids
            .resolve_aws(
                &config,
                &creds.access_key_id,
                Some(&creds.session_token),
                now,
            )
            .unwrap();
        assert_eq!(who.account, "111122223333");
        assert_eq!(who.secret, creds.secret_access_key);
        assert_eq!(who.arn, "arn:aws:sts::111122223333:assumed-role/buyer/s1");
        assert_eq!(
            ids.resolve_aws(&config, &creds.access_key_id, None, now),
            Err(CredentialError::Unknown)
        );
        let later = now + TimeDelta::hours(2);
        assert_eq!(
            ids.resolve_aws(
                &config,
                &creds.access_key_id,
                Some(&creds.session_token),
                later
            ),
            Err(CredentialError::Expired)
        );
        let other = Identities::new([8; 32]);
        assert_eq!(
            other.resolve_aws(
                &config,
                &creds.access_key_id,
                Some(&creds.session_token),
                now
            ),
            Err(CredentialError::Unknown)
        );
    }

    #[test]
    fn azure_tokens_verify_and_expire() {
        let ids = Identities::new([1; 32]);
        let now = Utc::now();
        let claims = AzureClaims {
            aud: "https://management.azure.com".into(),
            iss: "x".into(),
            tid: "t".into(),
            appid: "a".into(),
            iat: now.timestamp(),
            exp: now.timestamp() + 60,
        };
        let token = ids.azure_token(&claims);
        assert_eq!(ids.verify_azure_token(&token, now), Ok(claims));
        assert_eq!(
            ids.verify_azure_token(&token, now + TimeDelta::minutes(2)),
            Err(true)
        );
        assert_eq!(
            ids.verify_azure_token(&format!("{token}x"), now),
            Err(false)
        );
        assert_eq!(ids.verify_azure_token("garbage", now), Err(false));
    }
}
