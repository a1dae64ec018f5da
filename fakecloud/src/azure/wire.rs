//! The ARM wire shapes fakecloud answers with: error bodies, request-ID headers, and the
//! reservation-order document and its URLs.

use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use http::{HeaderValue, StatusCode};
use serde_json::{json, Value};

use super::{Ctx, API_VERSION};
use crate::faults::InjectedError;
use crate::ledger::{Commitment, Detail};
use crate::protocol::ApiError;

/// An ARM error: `{"error": {"code": …, "message": …}}`.
pub(super) fn arm_error(error: &ApiError, request_id: &str) -> Response {
    let body = json!({ "error": { "code": error.code, "message": error.message } });
    let mut response = (error.status, axum::Json(body)).into_response();
    set_request_id(&mut response, request_id);
    response
}

pub(super) fn set_request_id(response: &mut Response, request_id: &str) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response
            .headers_mut()
            .insert("x-ms-request-id", value.clone());
        response
            .headers_mut()
            .insert("x-ms-correlation-request-id", value);
    }
}

pub(super) fn bad_request(code: &str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(code, message)
}

pub(super) fn injected(error: &InjectedError) -> ApiError {
    match error {
        InjectedError::Throttling => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "The request is being throttled as the limit has been reached for operation type.",
        ),
        InjectedError::InternalFailure => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "Internal server error.",
        ),
        InjectedError::ServiceUnavailable => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The service is unavailable.",
        ),
        InjectedError::Custom {
            status,
            code,
            message,
        } => ApiError::injected(*status, code, message.as_deref()),
    }
}

pub(super) fn price_json(currency: &str, amount: f64) -> Value {
    json!({ "currencyCode": currency, "amount": amount })
}

pub(super) fn order_url(base: &str, id: &str, suffix: &str) -> String {
    format!("{base}/providers/Microsoft.Capacity/reservationOrders/{id}{suffix}?api-version={API_VERSION}")
}

pub(super) fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(super) fn order_json(ctx: &Ctx<'_>, c: &Commitment, with_schedule: bool) -> Value {
    let Detail::Azure(order) = &c.detail else {
        return Value::Null;
    };
    let expiry = c.end();
    let mut properties = json!({
        "displayName": order.display_name,
        "requestDateTime": iso(c.created_at),
        "createdDateTime": iso(c.created_at),
        "benefitStartTime": iso(c.created_at),
        "expiryDate": expiry.format("%Y-%m-%d").to_string(),
        "expiryDateTime": iso(expiry),
        "term": order.term,
        "billingPlan": order.billing_plan,
        "provisioningState": c.state_at(ctx.now),
        "originalQuantity": c.count,
        "reservations": [{
            "id": format!("/providers/microsoft.capacity/reservationOrders/{}/reservations/{}", c.id, order.reservation_id)
        }],
    });
    if with_schedule {
        properties["planInformation"] = json!({
            "pricingCurrencyTotal": price_json(&c.currency, order.total),
            "startDate": c.created_at.format("%Y-%m-%d").to_string(),
            "transactions": [],
        });
    }
    json!({
        "id": format!("/providers/microsoft.capacity/reservationOrders/{}", c.id),
        "type": "Microsoft.Capacity/reservationOrders",
        "name": c.id,
        "etag": order.etag,
        "properties": properties,
    })
}
