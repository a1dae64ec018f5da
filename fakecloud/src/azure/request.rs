//! The 2022-11-01 `PurchaseRequest`, validated: what `calculatePrice` quotes and a
//! reservation-order PUT buys, and the catalog price of it.

use serde_json::Value;

use super::wire::bad_request;
use super::Ctx;
use crate::catalog::{ONE_YEAR, THREE_YEARS};
use crate::protocol::ApiError;

/// The 2022-11-01 spec's `ReservedResourceType` values. The enum is declared extensible, but a
/// value outside it is refused here: nothing documents what Azure does with one.
const RESERVED_RESOURCE_TYPES: [&str; 26] = [
    "VirtualMachines",
    "SqlDatabases",
    "SuseLinux",
    "CosmosDb",
    "RedHat",
    "SqlDataWarehouse",
    "VMwareCloudSimple",
    "RedHatOsa",
    "Databricks",
    "AppService",
    "ManagedDisk",
    "BlockBlob",
    "RedisCache",
    "AzureDataExplorer",
    "MySql",
    "MariaDb",
    "PostgreSql",
    "DedicatedHost",
    "SapHana",
    "SqlAzureHybridBenefit",
    "AVS",
    "DataFactory",
    "NetAppStorage",
    "AzureFiles",
    "SqlEdge",
    "VirtualMachineSoftware",
];

/// A validated `PurchaseRequest`.
#[derive(Debug, Clone)]
pub(super) struct Purchase {
    pub(super) sku: String,
    pub(super) location: String,
    pub(super) reserved_resource_type: String,
    pub(super) billing_scope_id: String,
    pub(super) subscription: String,
    pub(super) term: String,
    pub(super) billing_plan: String,
    pub(super) quantity: u32,
    pub(super) display_name: Option<String>,
    pub(super) applied_scope_type: String,
}

impl Purchase {
    /// Parses a `PurchaseRequest`. `strict_names` (realism): refuse what ARM might normalise
    /// — a location not in canonical form, `billingScopeId` not spelled `/subscriptions/<guid>`
    /// — instead of normalising it.
    pub(super) fn parse(body: &[u8], strict_names: bool) -> Result<Self, ApiError> {
        let invalid = |m: String| bad_request("InvalidRequestContent", m);
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            invalid(format!(
                "The request content was invalid and could not be deserialized: {e}"
            ))
        })?;
        let text = |v: Option<&Value>, name: &str| -> Result<String, ApiError> {
            v.and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .ok_or_else(|| {
                    invalid(format!(
                        "The request content is missing the required property '{name}'."
                    ))
                })
        };
        let props = value.get("properties").filter(|p| p.is_object());
        let props = props.ok_or_else(|| {
            invalid("The request content is missing the required property 'properties'.".into())
        })?;
        let sku = text(value.get("sku").and_then(|s| s.get("name")), "sku.name")?;
        let given_location = text(value.get("location"), "location")?;
        // ARM's RPC guidance has providers accept "West Europe" for `westeurope`; strict mode
        // does not, so a worker that sends anything but the canonical name is caught.
        let location = given_location.to_ascii_lowercase().replace(' ', "");
        if strict_names && location != given_location {
            return Err(bad_request(
                "InvalidLocationId",
                format!(
                    "The location '{given_location}' is not in canonical form (e.g. 'westeurope')."
                ),
            ));
        }
        let reserved_resource_type = text(
            props.get("reservedResourceType"),
            "properties.reservedResourceType",
        )?;
        if !RESERVED_RESOURCE_TYPES
            .iter()
            .any(|t| t.eq_ignore_ascii_case(&reserved_resource_type))
        {
            return Err(invalid(format!(
                "The reserved resource type '{reserved_resource_type}' is not supported."
            )));
        }
        let billing_scope_id = text(props.get("billingScopeId"), "properties.billingScopeId")?;
        let subscription = billing_scope_id
            .strip_prefix("/subscriptions/")
            .or_else(|| {
                (!strict_names)
                    .then(|| billing_scope_id.strip_prefix("/Subscriptions/"))
                    .flatten()
            })
            .filter(|s| !s.is_empty() && !s.contains('/'))
            .ok_or_else(|| {
                bad_request(
                    "InvalidSubscriptionId",
                    format!("Invalid billingScopeId '{billing_scope_id}'."),
                )
            })?
            .to_ascii_lowercase();
        let term = text(props.get("term"), "properties.term")?;
        if !["P1Y", "P3Y", "P5Y"].contains(&term.as_str()) {
            return Err(bad_request(
                "UnsupportedReservationTerm",
                format!("The term '{term}' is not supported."),
            ));
        }
        let billing_plan = props
            .get("billingPlan")
            .and_then(Value::as_str)
            .unwrap_or("Upfront")
            .to_string();
        if billing_plan != "Upfront" && billing_plan != "Monthly" {
            return Err(invalid(format!("Invalid billingPlan '{billing_plan}'.")));
        }
        let quantity = props
            .get("quantity")
            .and_then(Value::as_i64)
            .and_then(|q| u32::try_from(q).ok())
            .filter(|q| *q >= 1)
            .ok_or_else(|| invalid("The quantity must be an integer greater than zero.".into()))?;
        let applied_scope_type = props
            .get("appliedScopeType")
            .and_then(Value::as_str)
            .unwrap_or("Shared")
            .to_string();
        match applied_scope_type.as_str() {
            "Shared" | "ManagementGroup" => {}
            "Single" => {
                let scopes = props
                    .get("appliedScopes")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty());
                let properties = props.get("appliedScopeProperties").is_some_and(|p| {
                    p.get("subscriptionId").is_some() || p.get("resourceGroupId").is_some()
                });
                if !scopes && !properties {
                    return Err(bad_request(
                        "MissingAppliedScopesForSingle",
                        "Applied scopes are required when the applied scope type is Single.",
                    ));
                }
            }
            other => return Err(invalid(format!("Invalid appliedScopeType '{other}'."))),
        }
        let display_name = props
            .get("displayName")
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(Self {
            sku,
            location,
            reserved_resource_type,
            billing_scope_id,
            subscription,
            term,
            billing_plan,
            quantity,
            display_name,
            applied_scope_type,
        })
    }

    /// What must not change between the quote and the purchase.
    pub(super) fn fingerprint(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}|{}|{}|{}",
            self.sku.to_ascii_lowercase(),
            self.location,
            self.reserved_resource_type.to_ascii_lowercase(),
            self.subscription,
            self.term,
            self.billing_plan,
            self.quantity,
            self.applied_scope_type
        )
    }

    pub(super) fn months(&self) -> u32 {
        match self.term.as_str() {
            "P3Y" => 36,
            "P5Y" => 60,
            _ => 12,
        }
    }

    pub(super) fn duration_seconds(&self) -> i64 {
        match self.term.as_str() {
            "P3Y" => THREE_YEARS,
            "P5Y" => ONE_YEAR * 5,
            _ => ONE_YEAR,
        }
    }

    /// The order's total price and currency, from the catalog.
    pub(super) fn price(&self, ctx: &Ctx<'_>) -> Result<(f64, String), ApiError> {
        let sku = ctx
            .shared
            .catalog
            .catalog()
            .azure_sku(&self.reserved_resource_type, &self.sku, &self.term, &self.location)
            .ok_or_else(|| {
                bad_request(
                    "BadRequest",
                    format!(
                        "The SKU '{}' of reserved resource type '{}' is not available for term {} in location '{}'.",
                        self.sku, self.reserved_resource_type, self.term, self.location
                    ),
                )
            })?;
        Ok((
            round2(sku.price * f64::from(self.quantity)),
            sku.currency.clone(),
        ))
    }
}

pub(super) fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}
