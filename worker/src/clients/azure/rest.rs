//! The REST calls against Resource Manager (Microsoft.Capacity, api-version 2022-11-01) the
//! executor needs, and how their HTTP errors map to a [`PurchaseError`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use url::Url;

use super::credential::{token_source, TokenSource};
use super::orders::{quote_total_usd, Order, OrderState, PutOutcome, Quote};
use super::settings::AzureSettings;
use crate::error::{PermanentKind, PurchaseError};

pub const API_VERSION: &str = "2022-11-01";

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
        let tokens = token_source(settings, &http)?;
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
    #[tracing::instrument(
        name = "provider_call",
        level = "debug",
        skip_all,
        fields(op = "azure:CalculatePrice")
    )]
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
    #[tracing::instrument(
        name = "provider_call",
        level = "debug",
        skip_all,
        fields(op = "azure:GetReservationOrder")
    )]
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
    #[tracing::instrument(
        name = "provider_call",
        level = "debug",
        skip_all,
        fields(op = "azure:ListReservationOrders")
    )]
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
    #[tracing::instrument(
        name = "provider_call",
        level = "debug",
        skip_all,
        fields(op = "azure:PurchaseReservationOrder")
    )]
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
}
