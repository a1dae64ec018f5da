//! Success responses: the XML and JSON bodies with the request-id header the SDKs read, the
//! awsQuery result document, and the formatting of prices, recurring charges and timestamps.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};

use super::{AwsService, Protocol};
use crate::xml::XmlWriter;

/// An XML success or error body with the request-id header the SDK reads.
pub fn xml_response(status: StatusCode, body: String, request_id: &str) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml;charset=UTF-8"),
    );
    insert_request_id(headers, request_id);
    response
}

/// A JSON body with the given content type and the request-id header.
pub fn json_response(
    status: StatusCode,
    content_type: &'static str,
    body: &impl serde::Serialize,
    request_id: &str,
) -> Response {
    // A `Value` or a typed body (serialised straight from borrowed fields, without building a
    // `Value` first); neither can fail to serialise.
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".to_owned());
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    insert_request_id(headers, request_id);
    response
}

fn insert_request_id(headers: &mut http::HeaderMap, request_id: &str) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-RequestId", value);
    }
}

/// Writes an awsQuery success document: `<{op}Response><{op}Result>…</{op}Result><ResponseMetadata>`.
pub fn query_success(
    service: AwsService,
    operation: &str,
    request_id: &str,
    result: impl FnOnce(&mut XmlWriter),
) -> Response {
    let namespace = match service.protocol() {
        Protocol::AwsQuery(namespace) => namespace,
        _ => "",
    };
    let mut w = XmlWriter::new();
    w.root(&format!("{operation}Response"), namespace, |w| {
        w.elem(&format!("{operation}Result"), result);
        w.elem("ResponseMetadata", |w| w.leaf("RequestId", request_id));
    });
    xml_response(StatusCode::OK, w.finish(), request_id)
}

/// Formats a price the way AWS XML does: no exponent, no trailing noise.
pub fn fmt_price(value: f64) -> String {
    let s = format!("{value:.6}");
    let s = s.trim_end_matches('0');
    let s = s
        .strip_suffix('.')
        .map(|s| format!("{s}.0"))
        .unwrap_or_else(|| s.to_string());
    s
}

/// awsQuery `<RecurringCharges><RecurringCharge>…` of an hourly charge.
pub fn query_recurring_charges(w: &mut XmlWriter, hourly: f64) {
    w.elem("RecurringCharges", |w| {
        if hourly > 0.0 {
            w.elem("RecurringCharge", |w| {
                w.leaf("RecurringChargeAmount", fmt_price(hourly));
                w.leaf("RecurringChargeFrequency", "Hourly");
            });
        }
    });
}

/// The JSON protocols' `RecurringCharges` list of an hourly charge.
pub fn json_recurring_charges(hourly: f64) -> serde_json::Value {
    if hourly > 0.0 {
        serde_json::json!([{ "RecurringChargeAmount": hourly, "RecurringChargeFrequency": "Hourly" }])
    } else {
        serde_json::json!([])
    }
}

/// ISO 8601 with milliseconds, as AWS XML timestamps are written.
pub fn iso_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices() {
        assert_eq!(fmt_price(1.0), "1.0");
        assert_eq!(fmt_price(0.0123), "0.0123");
        assert_eq!(fmt_price(512.5), "512.5");
    }
}
