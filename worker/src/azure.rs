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

/// Where an order is, from its `provisioningState` (Microsoft.Capacity 2022-11-01
/// `ProvisioningState`: Creating, PendingResourceHold, ConfirmedResourceHold, PendingBilling,
/// ConfirmedBilling, Created, Succeeded, Cancelled, Expired, BillingFailed, Failed, Split,
/// Merged — an open enum that does not say which are terminal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderState {
    /// Bought: `Succeeded`, or later reshaped by the owner (`Split`, `Merged`).
    Bought,
    /// Not bought (or not any more): `Failed`, `BillingFailed`, `Cancelled`/`Canceled`, `Expired`.
    Ended,
    /// Anything else, including states the spec may add: not bought for sure yet, and not safe
    /// to buy again either.
    InProgress,
}

impl OrderState {
    pub fn of(state: &str) -> Self {
        match state.to_ascii_lowercase().as_str() {
            "succeeded" | "split" | "merged" => OrderState::Bought,
            "failed" | "billingfailed" | "cancelled" | "canceled" | "expired" => OrderState::Ended,
            _ => OrderState::InProgress,
        }
    }
}

/// A reservation order as returned by ARM (only what the executor needs).
#[derive(Debug, Clone)]
pub struct Order {
    pub id: String,
    pub display_name: String,
    pub state: String,
    /// The order's price in USD (`planInformation.pricingCurrencyTotal`, with `$expand`).
    pub cost_usd: Option<f64>,
}

/// `{"currencyCode": "USD", "amount": 12.5}` as USD, `None` for another currency or no amount.
fn usd(price: &Value) -> Option<f64> {
    let currency = price["currencyCode"].as_str()?;
    currency
        .eq_ignore_ascii_case("USD")
        .then(|| price["amount"].as_f64())
        .flatten()
}

impl Order {
    fn from_json(v: &Value) -> Self {
        let props = &v["properties"];
        // `name` is the order ID; `id` is its ARM path ending in it.
        let name = v["name"].as_str().map(str::to_owned).unwrap_or_else(|| {
            v["id"]
                .as_str()
                .and_then(|id| id.rsplit('/').next())
                .unwrap_or_default()
                .to_owned()
        });
        Self {
            id: name,
            display_name: props["displayName"].as_str().unwrap_or_default().to_owned(),
            state: props["provisioningState"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            cost_usd: usd(&props["planInformation"]["pricingCurrencyTotal"]),
        }
    }

    pub fn state(&self) -> OrderState {
        OrderState::of(&self.state)
    }
}

/// What `calculatePrice` said.
#[derive(Debug, Clone)]
pub struct Quote {
    pub order_id: String,
    /// What the whole term costs, USD.
    pub total_usd: f64,
}

/// The whole term's price of a quote in USD. The spec does not say whether
/// `pricingCurrencyTotal` is the whole term or one instalment for a `Monthly` plan (its example
/// shows one instalment), so the larger of it and the sum of `paymentSchedule` is taken; a quote
/// without a USD amount is refused rather than read as free.
pub fn quote_total_usd(props: &Value, monthly: bool) -> Result<f64, PurchaseError> {
    let refuse = |why: &str| {
        PurchaseError::permanent(
            PermanentKind::Validation,
            format!("azure:calculatePrice: {why}; refusing to buy without knowing the price"),
        )
    };
    let total = usd(&props["pricingCurrencyTotal"]).or_else(|| usd(&props["billingCurrencyTotal"]));
    let schedule: Option<Vec<Option<f64>>> = props["paymentSchedule"].as_array().map(|entries| {
        entries
            .iter()
            .map(|p| usd(&p["pricingCurrencyTotal"]))
            .collect()
    });
    let scheduled = match &schedule {
        Some(amounts) if amounts.iter().any(Option::is_none) => {
            return Err(refuse("a paymentSchedule entry has no USD amount"))
        }
        Some(amounts) if !amounts.is_empty() => Some(amounts.iter().flatten().sum::<f64>()),
        _ => None,
    };
    match (total, scheduled) {
        (Some(t), Some(s)) => Ok(t.max(s)),
        (Some(_), None) if monthly => Err(refuse(
            "a monthly quote without a paymentSchedule does not say what the whole term costs",
        )),
        (Some(t), None) => Ok(t),
        (None, Some(s)) => Ok(s),
        (None, None) => Err(refuse("the quote carries no USD amount")),
    }
}

/// Outcome of the purchase PUT, after waiting for the order to leave its in-progress states.
#[derive(Debug)]
pub enum PutOutcome {
    /// The order is bought.
    Bought(Order),
    /// The order ended without buying (`Failed`, `BillingFailed`, …).
    Ended(Order),
    /// `ReservationOrderIdAlreadyExists`: an earlier PUT with this ID created the order.
    AlreadyExists,
    /// `Session timed out - Call CalculatePrice again`: this ID cannot be bought with. Whether an
    /// earlier PUT consumed it is not said.
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

    fn order_url(&self, order_id: &str) -> Result<Url, PurchaseError> {
        self.url(&format!(
            "providers/Microsoft.Capacity/reservationOrders/{order_id}"
        ))
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
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                PurchaseError::transient(format!("{op}: no reservationOrderId in the response"))
            })?
            .to_owned();
        let monthly = request["properties"]["billingPlan"]
            .as_str()
            .is_some_and(|p| p.eq_ignore_ascii_case("Monthly"));
        Ok(Quote {
            order_id,
            total_usd: quote_total_usd(props, monthly)?,
        })
    }

    /// `GET reservationOrders/{id}`; `None` for `ReservationOrderNotFound` (or a 404).
    pub async fn get_order(&self, order_id: &str) -> Result<Option<Order>, PurchaseError> {
        let op = "azure:GetReservationOrder";
        let mut url = self.order_url(order_id)?;
        // planInformation (the price) is only returned when expanded.
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

    /// Polls an order found in progress until it is bought or ended. Still in progress at the
    /// poll timeout, or gone from view meanwhile: [`PurchaseError::Ambiguous`] (not bought for
    /// sure yet, not safe to buy again either).
    pub async fn wait_final(&self, mut order: Order) -> Result<Order, PurchaseError> {
        let started = Instant::now();
        let mut wait = Duration::from_millis(250);
        while order.state() == OrderState::InProgress {
            if started.elapsed() > self.poll_timeout {
                return Err(PurchaseError::ambiguous(format!(
                    "azure: order {} still {} after {:?}",
                    order.id, order.state, self.poll_timeout
                )));
            }
            tokio::time::sleep(wait.min(self.max_poll_interval)).await;
            wait = (wait * 2).min(Duration::from_secs(5));
            match self.get_order(&order.id).await? {
                Some(o) => order = o,
                // ARM hides a resource that is still being created behind a 404.
                None => continue,
            }
        }
        Ok(order)
    }

    /// `GET reservationOrders`, every page (the API takes no filter).
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
                // An absolute URL carrying its own api-version and $skiptoken: followed as is.
                Some(next) => {
                    url = Url::parse(next)
                        .map_err(|e| PurchaseError::transient(format!("{op}: bad nextLink: {e}")))?
                }
                None => return Ok(orders),
            }
        }
        Err(PurchaseError::transient(format!("{op}: too many pages")))
    }

    /// `PUT reservationOrders/{id}` (a long-running operation, `final-state-via: location`),
    /// then waits until the order is bought or ended. Any outcome that does not prove the PUT
    /// was refused — a network error, a 5xx, a transient error code, a poll that does not end —
    /// is [`PurchaseError::Ambiguous`].
    pub async fn put_order(
        &self,
        order_id: &str,
        request: &Value,
    ) -> Result<PutOutcome, PurchaseError> {
        let op = "azure:PurchaseReservationOrder";
        let (status, headers, body) = self
            .send(
                reqwest::Method::PUT,
                self.order_url(order_id)?,
                Some(request),
                op,
            )
            .await
            .map_err(|e| PurchaseError::ambiguous(e.message()))?;
        if error_code(&body) == Some("ReservationOrderIdAlreadyExists") {
            return Ok(PutOutcome::AlreadyExists);
        }
        if !status.is_success() {
            let message = error_message(&body);
            if message.contains("Session timed out") || message.contains("CalculatePrice again") {
                return Ok(PutOutcome::SessionExpired(message));
            }
            return Err(match error_of(op, status, &body) {
                PurchaseError::Transient(m) => PurchaseError::ambiguous(m),
                other => other,
            });
        }
        let mut order = if status == reqwest::StatusCode::ACCEPTED {
            self.poll_operation(order_id, &headers, op).await?
        } else {
            // 200/201 may carry a non-terminal provisioningState: the order is still coming.
            Order::from_json(&body)
        };
        if order.id.is_empty() {
            order.id = order_id.to_owned();
        }
        let order = self.wait_final(order).await?;
        Ok(match order.state() {
            OrderState::Ended => PutOutcome::Ended(order),
            _ => PutOutcome::Bought(order),
        })
    }

    /// Follows a 202: `Azure-AsyncOperation` if the service sent one, else `Location` (the
    /// purchase's documented final-state link; 202 while running, then the order), else the
    /// order itself. Waits `Retry-After` (seconds or an HTTP date) between polls; a throttled or
    /// failed poll waits and polls again, until the poll timeout.
    async fn poll_operation(
        &self,
        order_id: &str,
        headers: &reqwest::header::HeaderMap,
        op: &str,
    ) -> Result<Order, PurchaseError> {
        let link = |name: &str| {
            headers
                .get(name)
                .and_then(|h| h.to_str().ok())
                .and_then(|s| Url::parse(s).ok())
        };
        let async_operation = link("azure-asyncoperation");
        let poll_url = match async_operation.clone().or_else(|| link("location")) {
            Some(url) => url,
            None => self.order_url(order_id)?,
        };
        let started = Instant::now();
        let mut wait = retry_after(headers).unwrap_or(Duration::from_secs(1));
        loop {
            if started.elapsed() > self.poll_timeout {
                return Err(PurchaseError::ambiguous(format!(
                    "{op}: order {order_id} still provisioning after {:?}",
                    self.poll_timeout
                )));
            }
            tokio::time::sleep(wait.min(self.max_poll_interval)).await;
            let polled = self
                .send(reqwest::Method::GET, poll_url.clone(), None, op)
                .await;
            let (status, headers, body) = match polled {
                Ok(answer) => answer,
                Err(e) => {
                    tracing::debug!(error = %e, "polling the purchase failed; polling again");
                    wait = (wait * 2).min(self.max_poll_interval);
                    continue;
                }
            };
            wait = retry_after(&headers).unwrap_or((wait * 2).min(self.max_poll_interval));
            let in_progress = status == reqwest::StatusCode::ACCEPTED
                || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                || status == reqwest::StatusCode::NOT_FOUND
                || status.is_server_error();
            if in_progress {
                continue;
            }
            if !status.is_success() {
                return Err(PurchaseError::ambiguous(format!(
                    "{op}: polling failed: {}",
                    error_of(op, status, &body)
                )));
            }
            if async_operation.is_some() && body["properties"].is_null() {
                // An operation status document: Succeeded / Failed / Canceled, else running.
                match body["status"].as_str().unwrap_or_default() {
                    "Succeeded" | "Failed" | "Canceled" | "Cancelled" => {}
                    _ => continue,
                }
                // Terminal: the order itself has the final state and the price.
                return match self.get_order(order_id).await? {
                    Some(order) => Ok(order),
                    None => Err(PurchaseError::ambiguous(format!(
                        "{op}: the operation finished but order {order_id} is not visible"
                    ))),
                };
            }
            let order = Order::from_json(&body);
            // The final resource may lack the price (no $expand): read it once more.
            return Ok(match order.cost_usd {
                Some(_) => order,
                None => self.get_order(order_id).await?.unwrap_or(order),
            });
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

/// `Retry-After` as seconds or an HTTP date (RFC 9110 allows both; ARM documents seconds).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let raw = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(raw).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
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

/// `ErrorResponseCode` values (Microsoft.Capacity 2022-11-01) that name a passing condition.
const TRANSIENT_CODES: &[&str] = &[
    "InternalServerError",
    "ServerTimeout",
    "BillingTransientError",
    "FulfillmentTransientError",
    "UnauthenticatedRequestsThrottled",
];

/// `ErrorResponseCode` values that mean billing or payment refused the purchase.
const FUNDS_CODES: &[&str] = &[
    "BillingError",
    "BillingCustomerInputError",
    "BillingPaymentInstrumentSoftError",
    "BillingPaymentInstrumentHardError",
    "PaymentInstrumentNotFound",
    "RiskCheckFailed",
];

/// Maps an ARM error response to a purchase error.
fn error_of(op: &str, status: reqwest::StatusCode, body: &Value) -> PurchaseError {
    let code = error_code(body).unwrap_or("Unknown");
    let text = format!(
        "{op}: {code} (HTTP {}): {}",
        status.as_u16(),
        error_message(body)
    );
    if TRANSIENT_CODES.contains(&code) || status.is_server_error() || status.as_u16() == 429 {
        PurchaseError::transient(text)
    } else if status.as_u16() == 401 || status.as_u16() == 403 {
        PurchaseError::permanent(PermanentKind::Auth, text)
    } else if FUNDS_CODES.contains(&code) {
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
        other => PurchaseError::transient(format!(
            "guard lookup failed, refusing to buy: {}",
            other.message()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn provisioning_states_are_sorted_into_bought_ended_and_in_progress() {
        for s in ["Succeeded", "succeeded", "Split", "Merged"] {
            assert_eq!(OrderState::of(s), OrderState::Bought, "{s}");
        }
        for s in [
            "Failed",
            "BillingFailed",
            "Cancelled",
            "Canceled",
            "Expired",
        ] {
            assert_eq!(OrderState::of(s), OrderState::Ended, "{s}");
        }
        for s in [
            "Creating",
            "PendingResourceHold",
            "ConfirmedResourceHold",
            "PendingBilling",
            "ConfirmedBilling",
            "Created",
            "SomethingNew",
            "",
        ] {
            assert_eq!(OrderState::of(s), OrderState::InProgress, "{s}");
        }
    }

    #[test]
    fn transient_error_codes_are_transient_and_billing_refusals_are_funds() {
        let bad = reqwest::StatusCode::BAD_REQUEST;
        for code in [
            "BillingTransientError",
            "FulfillmentTransientError",
            "ServerTimeout",
        ] {
            let e = error_of("op", bad, &json!({"error": {"code": code, "message": "m"}}));
            assert!(matches!(e, PurchaseError::Transient(_)), "{code}: {e}");
        }
        let e = error_of(
            "op",
            bad,
            &json!({"error": {"code": "BillingError", "message": "m"}}),
        );
        assert!(
            matches!(
                e,
                PurchaseError::Permanent {
                    kind: PermanentKind::Funds,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn a_monthly_quote_costs_its_whole_schedule() {
        // The spec's example: pricingCurrencyTotal equal to one instalment.
        let props = json!({
            "pricingCurrencyTotal": {"currencyCode": "USD", "amount": 46.0},
            "paymentSchedule": [
                {"pricingCurrencyTotal": {"currencyCode": "USD", "amount": 46}},
                {"pricingCurrencyTotal": {"currencyCode": "USD", "amount": 46}},
                {"pricingCurrencyTotal": {"currencyCode": "USD", "amount": 46}}
            ]
        });
        assert_eq!(quote_total_usd(&props, true).unwrap(), 138.0);
        let upfront = json!({"pricingCurrencyTotal": {"currencyCode": "USD", "amount": 552.0}});
        assert_eq!(quote_total_usd(&upfront, false).unwrap(), 552.0);
    }

    #[test]
    fn a_quote_without_a_usd_amount_is_refused() {
        for props in [
            json!({}),
            json!({"pricingCurrencyTotal": {"currencyCode": "EUR", "amount": 40.0}}),
            json!({"pricingCurrencyTotal": {"currencyCode": "USD"}}),
        ] {
            assert!(quote_total_usd(&props, false).is_err(), "{props}");
        }
        let monthly_without_schedule =
            json!({"pricingCurrencyTotal": {"currencyCode": "USD", "amount": 46.0}});
        assert!(quote_total_usd(&monthly_without_schedule, true).is_err());
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_as_an_http_date() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        let later = (chrono::Utc::now() + chrono::TimeDelta::seconds(30))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        headers.insert("retry-after", later.parse().unwrap());
        let wait = retry_after(&headers).unwrap();
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        headers.insert(
            "retry-after",
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
    }

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
