//! Building real `aws-sdk-*` clients that talk to a fakecloud: explicit endpoint, static
//! credentials, a region, and the workspace's rustls/ring HTTP client (aws-lc is disabled on
//! purpose, so the SDK has no default HTTP client here).
//!
//! ```no_run
//! use buyonce_fakecloud::sdk;
//! # fn demo(fc: &buyonce_fakecloud::FakeCloud) {
//! let config = sdk::config(&fc.endpoint(), "us-east-1");
//! let ec2 = aws_sdk_ec2::Client::new(&config);
//! # }
//! ```

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::behavior_version::BehaviorVersion;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_types::retry::RetryConfig;
use aws_types::region::Region;
use aws_types::SdkConfig;

use super::config::DEFAULT_ACCESS_KEY;

/// An HTTP client for the SDK using rustls with the ring provider.
pub fn http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// Static credentials (`test` / `test` unless given).
pub fn credentials(access_key: &str, secret: &str, session_token: Option<String>) -> Credentials {
    Credentials::new(access_key, secret, session_token, None, "fakecloud")
}

/// An [`SdkConfig`] for `endpoint` and `region` with the default credentials and the SDK's
/// standard retries.
pub fn config(endpoint: &str, region: &str) -> SdkConfig {
    config_with(
        endpoint,
        region,
        credentials(DEFAULT_ACCESS_KEY, DEFAULT_ACCESS_KEY, None),
        RetryConfig::standard(),
    )
}

/// The same without retries, so that an injected fault reaches the caller as it happened.
pub fn config_without_retries(endpoint: &str, region: &str) -> SdkConfig {
    config_with(
        endpoint,
        region,
        credentials(DEFAULT_ACCESS_KEY, DEFAULT_ACCESS_KEY, None),
        RetryConfig::disabled(),
    )
}

/// An [`SdkConfig`] with explicit credentials and retry policy.
pub fn config_with(
    endpoint: &str,
    region: &str,
    credentials: Credentials,
    retry: RetryConfig,
) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .endpoint_url(endpoint)
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .http_client(http_client())
        .retry_config(retry)
        .build()
}
