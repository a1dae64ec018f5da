//! Azure reservations (`vm`, `sql-database`, `redis-cache`, `cosmos-db`, `search`).
//!
//! A client-chosen order ID looks idempotent but real Azure answers "Session timed out - Call
//! CalculatePrice again" for newer SKUs, so the order ID comes from `calculatePrice`. It is
//! stored on the item **before** the PUT. On every attempt, before buying: the stored order ID
//! is read back (found → recover; `ReservationOrderNotFound` → go on), then the tenant's orders
//! are listed and matched by the token in the display name (Cancelled/Failed/Expired skipped).
//! `ReservationOrderIdAlreadyExists` → recover; 202 + `Azure-AsyncOperation`/`Location` is polled
//! honouring `Retry-After`.

use async_trait::async_trait;
use buyonce_shared::{IdempotencyToken, Payment, Service, Term};
use serde_json::{json, Value};

use super::{
    required, Executor, How, PermanentKind, PurchaseContext, PurchaseError, PurchaseRequest,
    Purchased,
};
use crate::azure::{AzureClient, Order, PutOutcome};

pub struct AzureReservations {
    azure: AzureClient,
    service: Service,
}

impl AzureReservations {
    pub fn new(azure: AzureClient, service: Service) -> Self {
        Self { azure, service }
    }
}

/// Microsoft.Capacity `reservedResourceType` for each service. The 2022-11-01 enum is open
/// ("| string"); Cognitive Search reservations use `SearchService`.
pub fn reserved_resource_type(service: Service) -> &'static str {
    match service {
        Service::Vm => "VirtualMachines",
        Service::SqlDatabase => "SqlDatabases",
        Service::RedisCache => "RedisCache",
        Service::CosmosDb => "CosmosDb",
        Service::Search => "SearchService",
        _ => "Unknown",
    }
}

/// The order's display name carries the token (the 2022-11-01 purchase request has no tags):
/// `buyonce-` + 40 hex characters, short enough for Azure's display-name limits.
pub fn display_name(token: &IdempotencyToken) -> String {
    token.reservation_id("buyonce-", 64)
}

fn recovered(order: Order, how: How) -> Result<Purchased, PurchaseError> {
    if !order.is_succeeded() {
        // Still provisioning: not bought for sure yet, not safe to buy again either.
        return Err(PurchaseError::transient(format!(
            "azure: order {} is {}; waiting for it to finish",
            order.id, order.state
        )));
    }
    Ok(Purchased {
        commitment_id: order.id,
        cost_usd: order.cost_usd,
        how,
        tag_pending: false,
    })
}

/// The purchase request body (the same for calculatePrice and the PUT).
fn purchase_request(
    service: Service,
    rec: &buyonce_shared::Recommendation,
    name: &str,
) -> Result<Value, PurchaseError> {
    Ok(json!({
        "sku": {"name": required(&rec.resource_type, "resource_type")?},
        "location": required(&rec.region, "region")?,
        "properties": {
            "reservedResourceType": reserved_resource_type(service),
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

impl AzureReservations {
    /// PUTs `order_id` and maps the result; `None` when the price session has expired (nothing
    /// was bought with this ID).
    async fn finish_put(
        &self,
        order_id: &str,
        request: &Value,
        quoted_usd: f64,
    ) -> Result<Option<Purchased>, PurchaseError> {
        match self.azure.put_order(order_id, request).await? {
            PutOutcome::Done(order) if order.state == "BillingFailed" => {
                Err(PurchaseError::permanent(
                    PermanentKind::Funds,
                    format!("azure: order {} billing failed", order.id),
                ))
            }
            PutOutcome::Done(order) if order.is_dead() => Err(PurchaseError::transient(format!(
                "azure: order {} ended {}",
                order.id, order.state
            ))),
            PutOutcome::Done(mut order) => {
                if order.cost_usd.is_none() {
                    order.cost_usd = Some(quoted_usd);
                }
                recovered(order, How::Purchased).map(Some)
            }
            PutOutcome::AlreadyExists => match self.azure.get_order(order_id).await? {
                Some(order) => recovered(self.azure.settle(order).await?, How::Recovered).map(Some),
                None => Err(PurchaseError::transient(
                    "azure: ReservationOrderIdAlreadyExists but the order is not visible yet",
                )),
            },
            PutOutcome::SessionExpired(message) => {
                tracing::debug!(%message, "price session expired");
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
        let stored = req.intent.and_then(|i| i.get("azure"));
        let stored_id = stored
            .and_then(|a| a.get("order_id"))
            .and_then(Value::as_str);
        if let Some(order_id) = stored_id {
            if let Some(order) = self.azure.get_order(order_id).await? {
                let order = self.azure.settle(order).await?;
                if !order.is_dead() {
                    return recovered(order, How::Recovered);
                }
            }
        }
        // 2. Any live order carrying the token (covers an order ID lost before it was stored).
        if let Some(order) = self
            .azure
            .list_orders()
            .await?
            .into_iter()
            .find(|o| o.display_name == name && !o.is_dead())
        {
            // The list does not carry the price; read the order for it.
            let order = match self.azure.get_order(&order.id).await? {
                Some(full) => full,
                None => order,
            };
            let order = self.azure.settle(order).await?;
            if !order.is_dead() {
                return recovered(order, How::Guard);
            }
        }
        // 2b. Nothing visible, but an earlier attempt had an order ID: PUT it again rather than
        // minting a new one. Azure accepts one purchase per order ID, so if the earlier PUT did
        // go through this answers ReservationOrderIdAlreadyExists (recovered), and if it did not,
        // this is the purchase; an expired price session falls through to a fresh quote.
        if let Some(order_id) = stored_id {
            let quoted = stored
                .and_then(|a| a.get("quoted_usd"))
                .and_then(Value::as_f64)
                .unwrap_or(0.0);
            ctx.authorize_spend(quoted, &format!("Azure {} order {order_id}", self.service))
                .await?;
            match self.finish_put(order_id, &request, quoted).await? {
                Some(done) => return Ok(done),
                None => {
                    tracing::info!(order.id = %order_id, "stored price session expired; taking a new quote")
                }
            }
        }

        // 3. A fresh quote and order ID.
        let quote = self.azure.calculate_price(&request).await?;
        ctx.authorize_spend(
            quote.amount_usd,
            &format!("Azure {} order {}", self.service, quote.order_id),
        )
        .await?;
        // 4. Intent before the PUT: a retry finds the order by this ID.
        ctx.save_intent(&json!({
            "azure": {"order_id": quote.order_id, "quoted_usd": quote.amount_usd}
        }))
        .await?;

        // 5. Buy.
        match self.finish_put(&quote.order_id, &request, quote.amount_usd).await? {
            Some(done) => Ok(done),
            None => Err(PurchaseError::transient(
                "azure: price session expired before the purchase; a new quote is taken next attempt",
            )),
        }
    }
}
