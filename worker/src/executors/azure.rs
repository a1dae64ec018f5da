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

#[async_trait]
impl Executor for AzureReservations {
    async fn purchase(
        &self,
        req: &PurchaseRequest<'_>,
        ctx: &dyn PurchaseContext,
    ) -> Result<Purchased, PurchaseError> {
        let rec = req.rec;
        let name = display_name(req.token);

        // 1. The order ID an earlier attempt stored before its PUT.
        let stored = req
            .intent
            .and_then(|i| i.get("azure"))
            .and_then(|a| a.get("order_id"))
            .and_then(Value::as_str);
        if let Some(order_id) = stored {
            if let Some(order) = self.azure.get_order(order_id).await? {
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
            return recovered(order, How::Guard);
        }

        // 3. A fresh quote and order ID.
        let request = json!({
            "sku": {"name": required(&rec.resource_type, "resource_type")?},
            "location": required(&rec.region, "region")?,
            "properties": {
                "reservedResourceType": reserved_resource_type(self.service),
                "billingScopeId": format!("/subscriptions/{}", rec.account),
                "term": match rec.term { Term::OneYear => "P1Y", Term::ThreeYears => "P3Y" },
                "billingPlan": match rec.payment { Payment::Monthly => "Monthly", _ => "Upfront" },
                "quantity": rec.units(),
                "displayName": name,
                "appliedScopeType": "Shared",
                "renew": false,
            }
        });
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
        match self.azure.put_order(&quote.order_id, &request).await? {
            PutOutcome::Done(order) if order.state == "BillingFailed" => Err(PurchaseError::permanent(
                PermanentKind::Funds,
                format!("azure: order {} billing failed", order.id),
            )),
            PutOutcome::Done(order) if order.is_dead() => Err(PurchaseError::transient(format!(
                "azure: order {} ended {}",
                order.id, order.state
            ))),
            PutOutcome::Done(mut order) => {
                if order.cost_usd.is_none() {
                    order.cost_usd = Some(quote.amount_usd);
                }
                recovered(order, How::Purchased)
            }
            PutOutcome::AlreadyExists => match self.azure.get_order(&quote.order_id).await? {
                Some(order) => recovered(order, How::Recovered),
                None => Err(PurchaseError::transient(
                    "azure: ReservationOrderIdAlreadyExists but the order is not visible yet",
                )),
            },
            PutOutcome::SessionExpired(message) => Err(PurchaseError::transient(format!(
                "azure: price session expired before the purchase ({message}); a new quote is taken next attempt"
            ))),
        }
    }
}
