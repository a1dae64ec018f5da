//! Azure Resource Manager access for reservations (Microsoft.Capacity, api-version 2022-11-01):
//! credentials and the four REST calls the executor needs.
//!
//! `azure_identity` 1.0 has no default credential chain and refuses a plain-http authority host,
//! so the credential is chosen explicitly (`BUYONCE_AZURE_CREDENTIAL`). `emulator` fetches
//! OAuth2 client-credentials tokens from fakecloud's token endpoint itself and is accepted only
//! when the resource-manager URL is a loopback address.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use azure_core::credentials::{Secret, TokenCredential};
use buyonce_shared::config::{self, vars, ConfigError, EnvSource};
use serde_json::Value;
use tokio::sync::Mutex;
use url::Url;

use crate::executors::{PermanentKind, PurchaseError};

pub const API_VERSION: &str = "2022-11-01";

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

fn parse_url(env: &dyn EnvSource, spec: &config::VarSpec) -> Result<Url, ConfigError> {
    let raw = config::get_or_default(env, spec).unwrap_or_default();
    Url::parse(&raw).map_err(|e| ConfigError::Invalid {
        var: spec.name.into(),
        shown: format!("{raw:?}"),
        problem: e.to_string(),
        expected: spec.expected.into(),
    })
}

impl AzureSettings {
    /// Reads the Azure variables. Missing pieces for the chosen credential are reported here,
    /// at start-up, not at the first purchase.
    pub fn from_source(env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let kind_raw = config::get_or_default(env, &vars::AZURE_CREDENTIAL).unwrap_or_default();
        let credential = match kind_raw.as_str() {
            "client-secret" => CredentialKind::ClientSecret,
            "managed-identity" => CredentialKind::ManagedIdentity,
            "workload-identity" => CredentialKind::WorkloadIdentity,
            "developer-tools" => CredentialKind::DeveloperTools,
            "emulator" => CredentialKind::Emulator,
            other => {
                return Err(ConfigError::Invalid {
                    var: vars::AZURE_CREDENTIAL.name.into(),
                    shown: format!("{other:?}"),
                    problem: "unknown credential".into(),
                    expected: vars::AZURE_CREDENTIAL.expected.into(),
                })
            }
        };
        let resource_manager_url = parse_url(env, &vars::AZURE_RESOURCE_MANAGER_URL)?;
        let authority_host = parse_url(env, &vars::AZURE_AUTHORITY_HOST)?;
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
                Err(ConfigError::Missing {
                    var: spec.name.into(),
                    expected: format!(
                        "{} (required by BUYONCE_AZURE_CREDENTIAL={:?})",
                        spec.expected, self.credential
                    ),
                })
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
            return Err(ConfigError::Invalid {
                var: vars::AZURE_CREDENTIAL.name.into(),
                shown: "\"emulator\"".into(),
                problem: format!(
                    "the emulator credential is only allowed with a loopback resource manager, not {}",
                    self.resource_manager_url
                ),
                expected: "client-secret, managed-identity, workload-identity or developer-tools for real Azure".into(),
            });
        }
        if self.resource_manager_url.scheme() != "https" && !is_loopback(&self.resource_manager_url)
        {
            return Err(ConfigError::Invalid {
                var: vars::AZURE_RESOURCE_MANAGER_URL.name.into(),
                shown: format!("{:?}", self.resource_manager_url.as_str()),
                problem: "plain http is only allowed for a loopback emulator".into(),
                expected: vars::AZURE_RESOURCE_MANAGER_URL.expected.into(),
            });
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

#[async_trait]
trait TokenSource: Send + Sync {
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

/// A reservation order as returned by ARM (only what the executor needs).
#[derive(Debug, Clone)]
pub struct Order {
    pub id: String,
    pub display_name: String,
    pub state: String,
    pub cost_usd: Option<f64>,
}

impl Order {
    fn from_json(v: &Value) -> Self {
        let props = &v["properties"];
        let name = v["name"].as_str().unwrap_or_default();
        Self {
            id: name.to_owned(),
            display_name: props["displayName"].as_str().unwrap_or_default().to_owned(),
            state: props["provisioningState"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            cost_usd: props["planInformation"]["pricingCurrencyTotal"]["amount"]
                .as_f64()
                .or_else(|| props["billingCurrencyTotal"]["amount"].as_f64()),
        }
    }

    /// Orders in these states bought nothing (or nothing any more).
    pub fn is_dead(&self) -> bool {
        matches!(
            self.state.as_str(),
            "Cancelled" | "Failed" | "Expired" | "BillingFailed"
        )
    }

    pub fn is_succeeded(&self) -> bool {
        matches!(
            self.state.as_str(),
            "Succeeded" | "Created" | "ConfirmedBilling"
        )
    }
}

/// What `calculatePrice` said.
#[derive(Debug, Clone)]
pub struct Quote {
    pub order_id: String,
    pub amount_usd: f64,
}

/// Outcome of the purchase PUT (after polling).
#[derive(Debug)]
pub enum PutOutcome {
    Done(Order),
    /// `ReservationOrderIdAlreadyExists`: an earlier PUT with this ID bought it.
    AlreadyExists,
    /// `Session timed out - Call CalculatePrice again`: the order ID expired, nothing bought.
    SessionExpired(String),
}

/// ARM client for Microsoft.Capacity. Cheap to clone.
#[derive(Clone)]
pub struct AzureClient {
    http: reqwest::Client,
    arm: Url,
    tokens: Arc<dyn TokenSource>,
    max_poll_interval: Duration,
    poll_timeout: Duration,
}

impl AzureClient {
    pub fn new(settings: &AzureSettings) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()?;
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
        Ok(Self {
            http,
            arm: settings.resource_manager_url.clone(),
            tokens,
            max_poll_interval: settings.max_poll_interval,
            poll_timeout: settings.poll_timeout,
        })
    }

    fn url(&self, path: &str) -> Result<Url, PurchaseError> {
        let mut url = self.arm.join(path).map_err(|e| {
            PurchaseError::permanent(PermanentKind::Validation, format!("azure url: {e}"))
        })?;
        url.query_pairs_mut()
            .append_pair("api-version", API_VERSION);
        Ok(url)
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: Url,
        body: Option<&Value>,
        op: &str,
    ) -> Result<(reqwest::StatusCode, reqwest::header::HeaderMap, Value), PurchaseError> {
        let token = self.tokens.bearer().await?;
        let mut request = self.http.request(method, url).bearer_auth(token);
        if let Some(b) = body {
            request = request.json(b);
        }
        let response = request
            .send()
            .await
            .map_err(|e| PurchaseError::transient(format!("{op}: network error: {e}")))?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response
            .text()
            .await
            .map_err(|e| PurchaseError::transient(format!("{op}: unreadable response: {e}")))?;
        let json = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, headers, json))
    }

    /// A read (or a quote) with bounded retries on throttling, 5xx and network errors,
    /// honouring `Retry-After`. Never used for the purchase PUT: only reads are retried here.
    async fn read_retrying(
        &self,
        method: reqwest::Method,
        url: Url,
        body: Option<&Value>,
        op: &str,
    ) -> Result<(reqwest::StatusCode, reqwest::header::HeaderMap, Value), PurchaseError> {
        const ATTEMPTS: u32 = 4;
        let mut wait = Duration::from_millis(200);
        for attempt in 1..=ATTEMPTS {
            let last = attempt == ATTEMPTS;
            match self.send(method.clone(), url.clone(), body, op).await {
                Ok((status, headers, _))
                    if !last
                        && (status.is_server_error()
                            || status == reqwest::StatusCode::TOO_MANY_REQUESTS) =>
                {
                    let pause = retry_after(&headers)
                        .unwrap_or(wait)
                        .min(self.max_poll_interval);
                    tokio::time::sleep(pause).await;
                }
                Err(PurchaseError::Transient(_)) if !last => tokio::time::sleep(wait).await,
                other => return other,
            }
            wait *= 2;
        }
        Err(PurchaseError::transient(format!("{op}: retries exhausted")))
    }

    /// `POST /providers/Microsoft.Capacity/calculatePrice`: a quote and the order ID to buy with.
    pub async fn calculate_price(&self, request: &Value) -> Result<Quote, PurchaseError> {
        let op = "azure:calculatePrice";
        // A quote buys nothing; retrying it only mints another order ID, and only the one used
        // is stored.
        let (status, _, body) = self
            .read_retrying(
                reqwest::Method::POST,
                self.url("providers/Microsoft.Capacity/calculatePrice")?,
                Some(request),
                op,
            )
            .await?;
        if !status.is_success() {
            return Err(error_of(op, status, &body));
        }
        let props = &body["properties"];
        let order_id = props["reservationOrderId"]
            .as_str()
            .ok_or_else(|| {
                PurchaseError::transient(format!("{op}: no reservationOrderId in the response"))
            })?
            .to_owned();
        let amount_usd = props["pricingCurrencyTotal"]["amount"]
            .as_f64()
            .or_else(|| props["billingCurrencyTotal"]["amount"].as_f64())
            .or_else(|| props["grandTotal"].as_f64())
            .unwrap_or(0.0);
        Ok(Quote {
            order_id,
            amount_usd,
        })
    }

    /// `GET reservationOrders/{id}`; `None` for `ReservationOrderNotFound`.
    pub async fn get_order(&self, order_id: &str) -> Result<Option<Order>, PurchaseError> {
        let op = "azure:GetReservationOrder";
        let mut url = self.url(&format!(
            "providers/Microsoft.Capacity/reservationOrders/{order_id}"
        ))?;
        // planInformation (the price) is only returned with the payment schedule expanded.
        url.query_pairs_mut().append_pair("$expand", "schedule");
        let (status, _, body) = self
            .read_retrying(reqwest::Method::GET, url, None, op)
            .await?;
        if status == reqwest::StatusCode::NOT_FOUND
            || error_code(&body) == Some("ReservationOrderNotFound")
        {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(lookup(error_of(op, status, &body)));
        }
        Ok(Some(Order::from_json(&body)))
    }

    /// Waits (polling `GET`) until an order found in progress (`Creating`, pending billing, …)
    /// is terminal, within the poll timeout; a still-running order is a transient error (not
    /// bought for sure, not safe to buy again either).
    pub async fn settle(&self, mut order: Order) -> Result<Order, PurchaseError> {
        let started = Instant::now();
        let mut wait = Duration::from_millis(250);
        while !order.is_dead() && !order.is_succeeded() {
            if started.elapsed() > self.poll_timeout {
                return Err(PurchaseError::transient(format!(
                    "azure: order {} still {} after {:?}",
                    order.id, order.state, self.poll_timeout
                )));
            }
            tokio::time::sleep(wait.min(self.max_poll_interval)).await;
            wait = (wait * 2).min(Duration::from_secs(5));
            match self.get_order(&order.id).await? {
                Some(o) => order = o,
                None => {
                    return Err(PurchaseError::transient(format!(
                        "azure: order {} vanished while {}",
                        order.id, order.state
                    )))
                }
            }
        }
        Ok(order)
    }

    /// `GET reservationOrders`, every page.
    pub async fn list_orders(&self) -> Result<Vec<Order>, PurchaseError> {
        let op = "azure:ListReservationOrders";
        let mut url = self.url("providers/Microsoft.Capacity/reservationOrders")?;
        let mut orders = Vec::new();
        for _page in 0..10_000 {
            // Each page is retried on its own: one flaky page must not fail the whole guard.
            let (status, _, body) = self
                .read_retrying(reqwest::Method::GET, url.clone(), None, op)
                .await?;
            if !status.is_success() {
                return Err(lookup(error_of(op, status, &body)));
            }
            if let Some(values) = body["value"].as_array() {
                orders.extend(values.iter().map(Order::from_json));
            }
            match body["nextLink"].as_str().filter(|s| !s.is_empty()) {
                Some(next) => {
                    url = Url::parse(next)
                        .map_err(|e| PurchaseError::transient(format!("{op}: bad nextLink: {e}")))?
                }
                None => return Ok(orders),
            }
        }
        Err(PurchaseError::transient(format!("{op}: too many pages")))
    }

    /// `PUT reservationOrders/{id}`, then polls a 202 to a terminal state honouring
    /// `Retry-After`.
    pub async fn put_order(
        &self,
        order_id: &str,
        request: &Value,
    ) -> Result<PutOutcome, PurchaseError> {
        let op = "azure:PurchaseReservationOrder";
        let (status, headers, body) = self
            .send(
                reqwest::Method::PUT,
                self.url(&format!(
                    "providers/Microsoft.Capacity/reservationOrders/{order_id}"
                ))?,
                Some(request),
                op,
            )
            .await?;
        match error_code(&body) {
            Some("ReservationOrderIdAlreadyExists") => return Ok(PutOutcome::AlreadyExists),
            _ if !status.is_success() => {
                let message = error_message(&body);
                if message.contains("Session timed out") || message.contains("CalculatePrice again")
                {
                    return Ok(PutOutcome::SessionExpired(message));
                }
                return Err(error_of(op, status, &body));
            }
            _ => {}
        }
        if status != reqwest::StatusCode::ACCEPTED {
            return Ok(PutOutcome::Done(Order::from_json(&body)));
        }
        // 202: poll the operation (Azure-AsyncOperation preferred, else Location).
        let poll = headers
            .get("azure-asyncoperation")
            .or_else(|| headers.get("location"))
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned);
        let started = Instant::now();
        let mut wait = retry_after(&headers).unwrap_or(Duration::from_secs(1));
        loop {
            if started.elapsed() > self.poll_timeout {
                return Err(PurchaseError::transient(format!(
                    "{op}: order {order_id} still provisioning after {:?}",
                    self.poll_timeout
                )));
            }
            tokio::time::sleep(wait.min(self.max_poll_interval)).await;
            let (status, headers, body) = match &poll {
                Some(link) => {
                    let url = Url::parse(link).map_err(|e| {
                        PurchaseError::transient(format!("{op}: bad poll URL: {e}"))
                    })?;
                    self.send(reqwest::Method::GET, url, None, op).await?
                }
                None => {
                    self.send(
                        reqwest::Method::GET,
                        self.url(&format!(
                            "providers/Microsoft.Capacity/reservationOrders/{order_id}"
                        ))?,
                        None,
                        op,
                    )
                    .await?
                }
            };
            if !status.is_success() && status != reqwest::StatusCode::ACCEPTED {
                return Err(PurchaseError::transient(format!(
                    "{op}: polling failed: {}",
                    error_of(op, status, &body)
                )));
            }
            // An async-operation document has a top-level status; an order has properties.
            let state = body["status"]
                .as_str()
                .or_else(|| body["properties"]["provisioningState"].as_str())
                .unwrap_or("");
            if !matches!(
                state,
                "Creating" | "InProgress" | "Running" | "Pending" | "Accepted" | ""
            ) || status == reqwest::StatusCode::OK && state.is_empty()
            {
                // Terminal: read the order itself for its final state and price.
                return match self.get_order(order_id).await? {
                    Some(order) => Ok(PutOutcome::Done(order)),
                    None => Err(PurchaseError::transient(format!(
                        "{op}: operation finished ({state}) but order {order_id} is not visible"
                    ))),
                };
            }
            wait = retry_after(&headers).unwrap_or(wait * 2);
        }
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
        CredentialKind::ManagedIdentity => ManagedIdentityCredential::new(None)?,
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

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn error_code(body: &Value) -> Option<&str> {
    body["error"]["code"].as_str()
}

fn error_message(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| body.to_string())
}

/// Maps an ARM error response to a purchase error.
fn error_of(op: &str, status: reqwest::StatusCode, body: &Value) -> PurchaseError {
    let code = error_code(body).unwrap_or("Unknown");
    let text = format!(
        "{op}: {code} (HTTP {}): {}",
        status.as_u16(),
        error_message(body)
    );
    if status.is_server_error() || status.as_u16() == 429 {
        PurchaseError::transient(text)
    } else if status.as_u16() == 401 || status.as_u16() == 403 {
        PurchaseError::permanent(PermanentKind::Auth, text)
    } else if code.contains("Billing") || code.contains("Payment") || code.contains("Credit") {
        PurchaseError::permanent(PermanentKind::Funds, text)
    } else {
        PurchaseError::permanent(PermanentKind::Validation, text)
    }
}

/// A failed guard lookup refuses to buy (transient), unless credentials are refused.
fn lookup(e: PurchaseError) -> PurchaseError {
    match e {
        p @ PurchaseError::Permanent {
            kind: PermanentKind::Auth,
            ..
        } => p,
        PurchaseError::Permanent { message, .. } | PurchaseError::Transient(message) => {
            PurchaseError::transient(format!("guard lookup failed, refusing to buy: {message}"))
        }
        other => other,
    }
}
