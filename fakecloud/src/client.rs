//! A typed client for the admin API, for tests that run fakecloud as a separate process.

use std::collections::BTreeMap;

use anyhow::Context as _;

use super::admin::{CallsResponse, LedgerResponse, StateRequest};
use super::catalog::Catalog;
use super::faults::Faults;
use super::ledger::LedgerEntry;

/// Talks to `http://host:port/_fakecloud/…`.
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: String,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client for the fakecloud at `endpoint` (e.g. `http://127.0.0.1:4566`).
    pub fn new(endpoint: impl Into<String>) -> anyhow::Result<Self> {
        // reqwest is built without a TLS provider in this workspace; it still needs one installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .context("building the admin HTTP client")?;
        Ok(Self {
            base: endpoint.into().trim_end_matches('/').to_string(),
            http,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/_fakecloud/{path}", self.base)
    }

    async fn check(response: reqwest::Response) -> anyhow::Result<reqwest::Response> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        anyhow::bail!("fakecloud admin API answered {status}: {body}")
    }

    /// Every commitment ever created.
    pub async fn ledger(&self) -> anyhow::Result<Vec<LedgerEntry>> {
        let response = Self::check(self.http.get(self.url("ledger")).send().await?).await?;
        Ok(response.json::<LedgerResponse>().await?.commitments)
    }

    /// Calls per operation.
    pub async fn calls(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let response = Self::check(self.http.get(self.url("calls")).send().await?).await?;
        Ok(response.json::<CallsResponse>().await?.calls)
    }

    /// Replaces the faults; returns them with the effective seed.
    pub async fn set_faults(&self, faults: &Faults) -> anyhow::Result<Faults> {
        let response = Self::check(
            self.http
                .put(self.url("faults"))
                .json(faults)
                .send()
                .await?,
        )
        .await?;
        Ok(response.json().await?)
    }

    /// The active faults.
    pub async fn faults(&self) -> anyhow::Result<Faults> {
        Ok(Self::check(self.http.get(self.url("faults")).send().await?)
            .await?
            .json()
            .await?)
    }

    /// Forgets everything and restores the startup faults.
    pub async fn reset(&self) -> anyhow::Result<()> {
        Self::check(self.http.post(self.url("reset")).send().await?).await?;
        Ok(())
    }

    /// Overrides the state of a commitment.
    pub async fn set_state(&self, commitment_id: &str, state: &str) -> anyhow::Result<LedgerEntry> {
        let request = StateRequest {
            state: state.to_string(),
        };
        let url = self.url(&format!("commitments/{commitment_id}/state"));
        Ok(Self::check(self.http.put(url).json(&request).send().await?)
            .await?
            .json()
            .await?)
    }

    /// The active catalog.
    pub async fn catalog(&self) -> anyhow::Result<Catalog> {
        Ok(
            Self::check(self.http.get(self.url("catalog")).send().await?)
                .await?
                .json()
                .await?,
        )
    }
}
