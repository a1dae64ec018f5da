//! Azure catalog entries: reservation SKUs per resource type, term and location, and the
//! lookup of a purchase request's SKU.

use serde::{Deserialize, Serialize};

use super::{usd, Catalog};

/// An Azure reservation SKU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureSku {
    /// Microsoft.Capacity `reservedResourceType` (`VirtualMachines`, …).
    pub reserved_resource_type: String,
    /// `sku.name` (`Standard_D2s_v5`).
    pub sku: String,
    /// `P1Y` or `P3Y`.
    pub term: String,
    /// Price of one unit for the whole term (the same total for `Upfront` and `Monthly`).
    pub price: f64,
    /// Currency code.
    #[serde(default = "usd")]
    pub currency: String,
    /// Locations where it is sold (default: every location).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locations: Option<Vec<String>>,
}

impl Catalog {
    /// The Azure SKU for a purchase request, matched case-insensitively like ARM does.
    pub fn azure_sku(
        &self,
        resource_type: &str,
        sku: &str,
        term: &str,
        location: &str,
    ) -> Option<&AzureSku> {
        self.azure.iter().find(|s| {
            s.reserved_resource_type.eq_ignore_ascii_case(resource_type)
                && s.sku.eq_ignore_ascii_case(sku)
                && s.term.eq_ignore_ascii_case(term)
                && s.locations
                    .as_ref()
                    .is_none_or(|l| l.iter().any(|x| x.eq_ignore_ascii_case(location)))
        })
    }
}
