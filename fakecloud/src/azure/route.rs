//! Azure routing: which paths are Azure's and which operation a method and path name (ARM paths
//! are case-insensitive; the token endpoint is per tenant).

use http::Method;

use crate::faults::OpKind;

const PROVIDER_PREFIX: &str = "/providers/microsoft.capacity/";

/// Whether a path belongs to the Azure side (ARM paths are case-insensitive).
pub fn is_azure_path(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.starts_with(PROVIDER_PREFIX) || token_tenant(path).is_some()
}

/// `/{tenant}/oauth2/v2.0/token` → tenant.
pub(super) fn token_tenant(path: &str) -> Option<&str> {
    let mut parts = path.trim_start_matches('/').split('/');
    let tenant = parts.next()?;
    let rest: Vec<&str> = parts.collect();
    (rest == ["oauth2", "v2.0", "token"] && !tenant.is_empty()).then_some(tenant)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Route {
    Token(String),
    CalculatePrice,
    ListOrders,
    PurchaseOrder(String),
    GetOrder(String),
    OperationStatus(String),
    OperationResult(String),
}

impl Route {
    pub(super) fn operation(&self) -> &'static str {
        match self {
            Route::Token(_) => "GetToken",
            Route::CalculatePrice => "CalculatePrice",
            Route::ListOrders => "ListReservationOrders",
            Route::PurchaseOrder(_) => "PurchaseReservationOrder",
            Route::GetOrder(_) => "GetReservationOrder",
            Route::OperationStatus(_) => "GetOperationStatus",
            Route::OperationResult(_) => "GetOperationResult",
        }
    }

    pub(super) fn kind(&self) -> OpKind {
        match self {
            Route::Token(_) | Route::CalculatePrice => OpKind::Other,
            Route::PurchaseOrder(_) => OpKind::Purchase,
            _ => OpKind::Lookup,
        }
    }

    pub(super) fn parse(method: &Method, path: &str) -> Option<Route> {
        if let Some(tenant) = token_tenant(path) {
            return (method == Method::POST).then(|| Route::Token(tenant.to_string()));
        }
        let lower = path.to_ascii_lowercase();
        let rest = lower.strip_prefix(PROVIDER_PREFIX)?.trim_end_matches('/');
        let segments: Vec<&str> = rest.split('/').collect();
        match (method.as_str(), segments.as_slice()) {
            ("POST", ["calculateprice"]) => Some(Route::CalculatePrice),
            ("GET", ["reservationorders"]) => Some(Route::ListOrders),
            ("PUT", ["reservationorders", id]) => Some(Route::PurchaseOrder(id.to_string())),
            ("GET", ["reservationorders", id]) => Some(Route::GetOrder(id.to_string())),
            ("GET", ["reservationorders", id, "operationstatus"]) => {
                Some(Route::OperationStatus(id.to_string()))
            }
            ("GET", ["reservationorders", id, "operationresults"]) => {
                Some(Route::OperationResult(id.to_string()))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            Route::parse(&Method::POST, "/t/oauth2/v2.0/token"),
            Some(Route::Token("t".into()))
        );
        assert_eq!(
            Route::parse(
                &Method::PUT,
                "/providers/Microsoft.Capacity/reservationOrders/ABC"
            ),
            Some(Route::PurchaseOrder("abc".into()))
        );
        assert_eq!(
            Route::parse(
                &Method::GET,
                "/providers/microsoft.capacity/reservationorders"
            ),
            Some(Route::ListOrders)
        );
        assert_eq!(
            Route::parse(
                &Method::DELETE,
                "/providers/Microsoft.Capacity/reservationOrders/x"
            ),
            None
        );
        assert!(is_azure_path(
            "/providers/Microsoft.Capacity/calculatePrice"
        ));
        assert!(!is_azure_path("/"));
        assert!(!is_azure_path("/2021-01-01/opensearch/reservedInstances"));
    }
}
