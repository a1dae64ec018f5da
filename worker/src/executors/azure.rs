//! Azure reservations (`vm`, `sql-database`, `redis-cache`, `cosmos-db`).
//!
//! A client-chosen order ID looks idempotent but real Azure answers "Session timed out - Call
//! CalculatePrice again" for newer SKUs, so the order ID comes from `calculatePrice` ("GUID that
//! represents reservation order that can be placed after calculating price", 2022-11-01 spec).
//! It is stored on the item **before** the PUT. Every attempt, before buying:
//!
//! 1. the stored order ID is read back: bought → recovered; in progress → waited for; ended
//!    (`Failed`, `BillingFailed`, `Cancelled`, `Expired`) → that order bought nothing;
//! 2. the tenant's orders are listed (every page; the API takes no filter) and one carrying the
//!    token in its display name is recovered the same way;
//! 3. the settle gate: after an ambiguous PUT (timeout, 5xx, reset, a poll that did not end)
//!    nothing more is bought until the settle window has passed with the order absent from
//!    both — ARM hides a resource that is still being created, and nothing documents when a
//!    consumed order ID answers `ReservationOrderIdAlreadyExists` rather than the session
//!    timeout;
//! 4. the stored order ID is PUT again (one resource ID: a second PUT cannot create a second
//!    order) — bought, or `AlreadyExists` → recovered, or the session timeout → only now, with
//!    the ID absent for a whole settle window, a new quote;
//! 5. a new quote, its order ID stored, then the PUT, polled as a long-running operation.
//!
//! A PUT of this attempt that ends `Failed`/`BillingFailed`/`Cancelled` bought nothing: the item
//! ends with the reason (a re-drive takes a new quote).

use async_trait::async_trait;
use buyonce_shared::{IdempotencyToken, Payment, Service, Term};
use serde_json::{json, Value};

use super::{
    required, Executor, How, PermanentKind, PurchaseContext, PurchaseError, PurchaseRequest,
    Purchased,
};
use crate::clients::azure::{AzureClient, Order, OrderState, PutOutcome};

pub struct AzureReservations {
    azure: AzureClient,
    service: Service,
}

impl AzureReservations {
    pub fn new(azure: AzureClient, service: Service) -> Self {
        Self { azure, service }
    }
}

/// Microsoft.Capacity `reservedResourceType` for each service (values of the 2022-11-01
/// `ReservedResourceType` enum). Azure AI Search has none, so `search` is refused at submission
/// and has no executor.
pub fn reserved_resource_type(service: Service) -> Option<&'static str> {
    match service {
        Service::Vm => Some("VirtualMachines"),
        Service::SqlDatabase => Some("SqlDatabases"),
        Service::RedisCache => Some("RedisCache"),
        Service::CosmosDb => Some("CosmosDb"),
        _ => None,
    }
}

/// The order's display name carries the token (the 2022-11-01 purchase request has no tags):
/// `buyonce-` + 40 hex characters, short enough for Azure's display-name limits.
pub fn display_name(token: &IdempotencyToken) -> String {
    token.reservation_id("buyonce-", 64)
}

/// The purchase request body (the same for calculatePrice and the PUT).
fn purchase_request(
    service: Service,
    rec: &buyonce_shared::Recommendation,
    name: &str,
) -> Result<Value, PurchaseError> {
    let resource_type = reserved_resource_type(service).ok_or_else(|| {
        PurchaseError::permanent(
            PermanentKind::Validation,
            format!("azure/{service} has no documented reservedResourceType"),
        )
    })?;
    Ok(json!({
        "sku": {"name": required(&rec.resource_type, "resource_type")?},
        "location": required(&rec.region, "region")?,
        "properties": {
            "reservedResourceType": resource_type,
            "billingScopeId": format!("/subscriptions/{}", rec.account),
            "term": match rec.term { Term::OneYear => "P1Y", Term::ThreeYears => "P3Y" },
            "billingPlan": match rec.payment { Payment::Monthly => "Monthly", _ => "Upfront" },
            "quantity": rec.units(),
            "displayName": name,
            "appliedScopeType": "Shared",
            "renew": false,
        }
    }))
}

fn bought(order: Order, how: How, quoted_usd: Option<f64>) -> Purchased {
    Purchased {
        cost_usd: order.cost_usd.or(quoted_usd),
        commitment_id: order.id,
        how,
        tag_pending: false,
    }
}

/// This attempt's PUT ended without buying: the item ends with the reason.
fn ended(order: &Order) -> PurchaseError {
    let kind = if order.state.eq_ignore_ascii_case("BillingFailed") {
        PermanentKind::Funds
    } else {
        PermanentKind::NotLive
    };
    PurchaseError::permanent(
        kind,
        format!(
            "azure: order {} ended {}: nothing bought; fix the cause and re-drive the item (a \
             re-drive takes a new quote)",
            order.id, order.state
        ),
    )
}

/// What an earlier attempt stored before its PUT.
struct Stored {
    order_id: String,
    /// The quote's whole-term total, USD.
    quoted_usd: Option<f64>,
}

fn stored(intent: Option<&Value>) -> Option<Stored> {
    let azure = intent?.get("azure")?;
    Some(Stored {
        order_id: azure.get("order_id")?.as_str()?.to_owned(),
        quoted_usd: azure
            .get("quoted_total_usd")
            .or_else(|| azure.get("quoted_usd"))
            .and_then(Value::as_f64),
    })
}

impl AzureReservations {
    /// A visible order: waited for while in progress; `Some` when bought, `None` when ended.
    async fn settled(&self, order: Order, how: How) -> Result<Option<Purchased>, PurchaseError> {
        let order = self.azure.wait_final(order).await?;
        Ok(match order.state() {
            OrderState::Ended => {
                tracing::info!(order.id = %order.id, state = %order.state, "an earlier order ended; it bought nothing");
                None
            }
            _ => Some(bought(order, how, None)),
        })
    }

    /// Maps the outcome of a PUT; `None` when the price session has expired.
    async fn after_put(
        &self,
        order_id: &str,
        outcome: PutOutcome,
        quoted_usd: Option<f64>,
    ) -> Result<Option<Purchased>, PurchaseError> {
        match outcome {
            PutOutcome::Bought(order) => Ok(Some(bought(order, How::Purchased, quoted_usd))),
            PutOutcome::Ended(order) => Err(ended(&order)),
            PutOutcome::AlreadyExists => match self.azure.get_order(order_id).await? {
                Some(order) => match self.azure.wait_final(order).await? {
                    o if o.state() == OrderState::Ended => Err(ended(&o)),
                    o => Ok(Some(bought(o, How::Recovered, quoted_usd))),
                },
                None => Err(PurchaseError::transient(format!(
                    "azure: order {order_id} already exists but is not visible yet"
                ))),
            },
            PutOutcome::SessionExpired(message) => {
                tracing::info!(order.id = %order_id, %message, "the order ID's price session has expired");
                Ok(None)
            }
        }
    }
}

#[async_trait]
impl Executor for AzureReservations {
    async fn purchase(
        &self,
        req: &PurchaseRequest<'_>,
        ctx: &dyn PurchaseContext,
    ) -> Result<Purchased, PurchaseError> {
        let rec = req.rec;
        let name = display_name(req.token);
        let request = purchase_request(self.service, rec, &name)?;

        // 1. The order ID an earlier attempt stored before its PUT.
        let mut stored = stored(req.intent);
        if let Some(s) = &stored {
            if let Some(order) = self.azure.get_order(&s.order_id).await? {
                match self.settled(order, How::Recovered).await? {
                    Some(done) => return Ok(done),
                    // Ended: that order ID bought nothing and will buy nothing.
                    None => stored = None,
                }
            }
        }
        // 2. Any order carrying the token (covers an order ID lost before it was stored).
        for order in self
            .azure
            .list_orders()
            .await?
            .into_iter()
            .filter(|o| o.display_name == name && o.state() != OrderState::Ended)
        {
            // The list does not carry the price; read the order for it.
            let order = match self.azure.get_order(&order.id).await? {
                Some(full) => full,
                None => order,
            };
            if let Some(done) = self.settled(order, How::Guard).await? {
                return Ok(done);
            }
        }
        // 3. Nothing visible. After an ambiguous PUT, wait out the settle window first.
        ctx.settle_gate()?;

        // 4. The stored order ID again: one resource ID cannot become two orders.
        if let Some(s) = &stored {
            let quoted = s.quoted_usd.ok_or_else(|| {
                PurchaseError::permanent(
                    PermanentKind::Validation,
                    "azure: the stored quote has no amount; refusing to buy without knowing the price",
                )
            })?;
            ctx.authorize_spend(
                quoted,
                &format!("Azure {} order {}", self.service, s.order_id),
            )
            .await?;
            let outcome = self.azure.put_order(&s.order_id, &request).await?;
            if let Some(done) = self.after_put(&s.order_id, outcome, Some(quoted)).await? {
                return Ok(done);
            }
            // Session expired, and the ID has been absent from GET and the list for a whole
            // settle window (the gate above): it was never consumed. A new quote is safe.
        }

        // 5. A fresh quote and order ID, stored before the PUT.
        let quote = self.azure.calculate_price(&request).await?;
        ctx.authorize_spend(
            quote.total_usd,
            &format!(
                "Azure {} order {} (whole term)",
                self.service, quote.order_id
            ),
        )
        .await?;
        ctx.save_intent(&json!({
            "azure": {"order_id": quote.order_id, "quoted_total_usd": quote.total_usd}
        }))
        .await?;
        let outcome = self.azure.put_order(&quote.order_id, &request).await?;
        match self
            .after_put(&quote.order_id, outcome, Some(quote.total_usd))
            .await?
        {
            Some(done) => Ok(done),
            // A fresh ID never PUT before: nothing was bought with it.
            None => Err(PurchaseError::transient(
                "azure: the price session expired before the purchase; the next attempt takes a new quote",
            )),
        }
    }
}
