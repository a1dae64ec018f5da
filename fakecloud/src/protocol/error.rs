//! Errors as the AWS services report them, and how each protocol writes one: the XML shapes of
//! EC2 query and awsQuery, `__type` for awsJson1_1, the `x-amzn-ErrorType` header for restJson1.

use axum::response::Response;
use http::{HeaderValue, StatusCode};

use super::response::{json_response, xml_response};
use super::Protocol;
use crate::xml::XmlWriter;

/// An error as the service reports it; rendered per protocol by [`ApiError::render`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The service's error code (`ReservedDBInstanceAlreadyExists`, `Throttling`, …).
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// awsQuery `<Type>`: `Sender` for client faults, `Receiver` for server faults.
    pub sender: bool,
}

impl ApiError {
    /// A client fault (awsQuery `Sender`).
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_string(),
            message: message.into(),
            sender: status.as_u16() < 500,
        }
    }

    /// HTTP 400 with the given code.
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// The error a custom fault rule asks for (an unknown status is a 500).
    pub fn injected(status: u16, code: &str, message: Option<&str>) -> Self {
        Self::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message.map_or_else(|| format!("Injected fault {code}"), str::to_string),
        )
    }

    /// Writes the error in the protocol's shape.
    pub fn render(&self, protocol: Protocol, request_id: &str) -> Response {
        match protocol {
            Protocol::Ec2Query => {
                let mut w = XmlWriter::new();
                w.elem("Response", |w| {
                    w.elem("Errors", |w| {
                        w.elem("Error", |w| {
                            w.leaf("Code", &self.code);
                            w.leaf("Message", &self.message);
                        })
                    });
                    w.leaf("RequestID", request_id);
                });
                xml_response(self.status, w.finish(), request_id)
            }
            Protocol::AwsQuery(_) => {
                let mut w = XmlWriter::new();
                w.elem("ErrorResponse", |w| {
                    w.elem("Error", |w| {
                        w.leaf("Type", if self.sender { "Sender" } else { "Receiver" });
                        w.leaf("Code", &self.code);
                        w.leaf("Message", &self.message);
                    });
                    w.leaf("RequestId", request_id);
                });
                xml_response(self.status, w.finish(), request_id)
            }
            Protocol::AwsJson11 => {
                let body = serde_json::json!({ "__type": self.code, "message": self.message });
                json_response(self.status, "application/x-amz-json-1.1", &body, request_id)
            }
            Protocol::RestJson1 => {
                let body = serde_json::json!({ "message": self.message });
                let mut response =
                    json_response(self.status, "application/json", &body, request_id);
                if let Ok(value) = HeaderValue::from_str(&self.code) {
                    response.headers_mut().insert("x-amzn-ErrorType", value);
                }
                response
            }
        }
    }
}

/// The query protocols' (EC2, awsQuery) 400 `InvalidParameterValue`.
pub fn invalid_parameter(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("InvalidParameterValue", message)
}

/// The query protocols' (EC2, awsQuery) 400 `MissingParameter` for `key`.
pub fn missing_parameter(key: &str) -> ApiError {
    ApiError::bad_request(
        "MissingParameter",
        format!("The request must contain the parameter {key}"),
    )
}

/// awsQuery's 400 `InvalidAction` for an operation the service does not have.
pub fn unknown_query_operation(operation: &str) -> ApiError {
    ApiError::bad_request(
        "InvalidAction",
        format!("Could not find operation {operation}"),
    )
}
