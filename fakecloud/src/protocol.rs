//! The four AWS wire protocols fakecloud speaks: how a request is read and how a success or an
//! error is written, byte for byte what the `aws-sdk-*` deserializers expect.
//!
//! * EC2 query: form body, XML answer `<OpResponse><requestId>…`, errors
//!   `<Response><Errors><Error><Code>…` (read by `ec2_query_errors.rs` in aws-sdk-ec2).
//! * awsQuery (RDS, ElastiCache, Redshift, STS): form body, XML answer
//!   `<OpResponse><OpResult>…</OpResult><ResponseMetadata>…`, errors
//!   `<ErrorResponse><Error><Type>…<Code>…` (`rest_xml_wrapped_errors.rs`). The `OpResult` element
//!   must be the first child: the SDK parser only looks there.
//! * awsJson1_1 (MemoryDB): `X-Amz-Target`, JSON both ways, errors carry `__type`.
//! * restJson1 (Savings Plans, OpenSearch): path routing, errors carry the `x-amzn-ErrorType`
//!   header, which `json_errors.rs` prefers over the body.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http::{HeaderValue, StatusCode};

use super::xml::XmlWriter;

/// The wire protocol of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// EC2's own query dialect.
    Ec2Query,
    /// awsQuery with the XML namespace of the service.
    AwsQuery(&'static str),
    /// awsJson1_1.
    AwsJson11,
    /// restJson1.
    RestJson1,
}

/// The AWS services fakecloud emulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AwsService {
    /// EC2 Reserved Instances.
    Ec2,
    /// Savings Plans.
    SavingsPlans,
    /// RDS reserved DB instances.
    Rds,
    /// ElastiCache reserved cache nodes.
    ElastiCache,
    /// MemoryDB reserved nodes.
    MemoryDb,
    /// OpenSearch reserved instances.
    OpenSearch,
    /// Redshift reserved nodes.
    Redshift,
    /// STS.
    Sts,
}

impl AwsService {
    /// Every service.
    pub const ALL: [AwsService; 8] = [
        Self::Ec2,
        Self::SavingsPlans,
        Self::Rds,
        Self::ElastiCache,
        Self::MemoryDb,
        Self::OpenSearch,
        Self::Redshift,
        Self::Sts,
    ];

    /// The SigV4 signing name (credential scope service).
    pub fn signing_name(self) -> &'static str {
        match self {
            Self::Ec2 => "ec2",
            Self::SavingsPlans => "savingsplans",
            Self::Rds => "rds",
            Self::ElastiCache => "elasticache",
            Self::MemoryDb => "memorydb",
            Self::OpenSearch => "es",
            Self::Redshift => "redshift",
            Self::Sts => "sts",
        }
    }

    /// The prefix of operation names in call counts and fault rules (`"ec2:…"`).
    pub fn op_prefix(self) -> &'static str {
        match self {
            Self::OpenSearch => "opensearch",
            other => other.signing_name(),
        }
    }

    /// The service name in the ledger, as the project's recommendations spell it.
    pub fn ledger_name(self) -> &'static str {
        match self {
            Self::SavingsPlans => "savings-plans",
            other => other.op_prefix(),
        }
    }

    /// The wire protocol.
    pub fn protocol(self) -> Protocol {
        match self {
            Self::Ec2 => Protocol::Ec2Query,
            Self::Rds => Protocol::AwsQuery("http://rds.amazonaws.com/doc/2014-10-31/"),
            Self::ElastiCache => {
                Protocol::AwsQuery("http://elasticache.amazonaws.com/doc/2015-02-02/")
            }
            Self::Redshift => Protocol::AwsQuery("http://redshift.amazonaws.com/doc/2012-12-01/"),
            Self::Sts => Protocol::AwsQuery("https://sts.amazonaws.com/doc/2011-06-15/"),
            Self::MemoryDb => Protocol::AwsJson11,
            Self::SavingsPlans | Self::OpenSearch => Protocol::RestJson1,
        }
    }

    /// The service whose SigV4 signing name this is.
    pub fn from_signing_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.signing_name() == name)
    }

    /// The query-protocol service with this API `Version`.
    pub fn from_query_version(version: &str) -> Option<Self> {
        match version {
            "2016-11-15" => Some(Self::Ec2),
            "2014-10-31" => Some(Self::Rds),
            "2015-02-02" => Some(Self::ElastiCache),
            "2012-12-01" => Some(Self::Redshift),
            "2011-06-15" => Some(Self::Sts),
            _ => None,
        }
    }
}

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
    body: &serde_json::Value,
    request_id: &str,
) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
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

/// The decoded parameters of a query-protocol request (form body or URL query).
#[derive(Debug, Clone, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Decodes `application/x-www-form-urlencoded` bytes.
    pub fn parse(bytes: &[u8]) -> Self {
        Self {
            pairs: form_urlencoded::parse(bytes).into_owned().collect(),
        }
    }

    /// The first value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key` or a `MissingParameter`-style error built by `missing`.
    pub fn require(
        &self,
        key: &str,
        missing: impl FnOnce(&str) -> ApiError,
    ) -> Result<&str, ApiError> {
        match self.get(key) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(missing(key)),
        }
    }

    /// Members of a list serialized as `{prefix}.1`, `{prefix}.2`, … in index order.
    pub fn list(&self, prefix: &str) -> Vec<String> {
        let mut items: BTreeMap<u32, String> = BTreeMap::new();
        for (k, v) in &self.pairs {
            if let Some(rest) = k.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) {
                if let Ok(index) = rest.parse::<u32>() {
                    items.insert(index, v.clone());
                }
            }
        }
        items.into_values().collect()
    }

    /// Structures of a list serialized as `{prefix}.N.{member}`: one `Params` per index, with the
    /// `{prefix}.N.` part stripped from the keys.
    pub fn structs(&self, prefix: &str) -> Vec<Params> {
        let mut items: BTreeMap<u32, Params> = BTreeMap::new();
        for (k, v) in &self.pairs {
            let Some(rest) = k.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) else {
                continue;
            };
            let Some((index, member)) = rest.split_once('.') else {
                continue;
            };
            if let Ok(index) = index.parse::<u32>() {
                items
                    .entry(index)
                    .or_default()
                    .pairs
                    .push((member.to_string(), v.clone()));
            }
        }
        items.into_values().collect()
    }

    /// Parses an optional integer, reporting a bad value through `invalid`.
    pub fn int(
        &self,
        key: &str,
        invalid: impl FnOnce(String) -> ApiError,
    ) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.trim().parse::<i64>().map(Some).map_err(|_| {
                invalid(format!(
                    "Invalid value '{v}' for {key}: an integer is required"
                ))
            }),
        }
    }

    /// Parses an optional boolean (`true`/`false`, case-insensitive).
    pub fn bool(
        &self,
        key: &str,
        invalid: impl FnOnce(String) -> ApiError,
    ) -> Result<Option<bool>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(invalid(format!(
                "Invalid value '{v}' for {key}: a boolean is required"
            ))),
        }
    }
}

/// The top-level object of a JSON request body, with typed accessors that report a wrong type
/// as the service's validation error instead of panicking.
#[derive(Debug, Clone)]
pub struct JsonInput {
    map: serde_json::Map<String, serde_json::Value>,
    invalid: fn(String) -> ApiError,
}

impl JsonInput {
    /// Parses `body` (empty = `{}`); a non-object or malformed body is `SerializationException`.
    pub fn parse(body: &[u8], invalid: fn(String) -> ApiError) -> Result<Self, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self {
                map: serde_json::Map::new(),
                invalid,
            });
        }
        match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Object(map)) => Ok(Self { map, invalid }),
            _ => Err(ApiError::bad_request(
                "SerializationException",
                "Start of structure or map found where not expected.",
            )),
        }
    }

    /// The raw value.
    pub fn value(&self, key: &str) -> Option<&serde_json::Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// An optional string member.
    pub fn string(&self, key: &str) -> Result<Option<&str>, ApiError> {
        match self.value(key) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err((self.invalid)(format!("{key} must be a string"))),
        }
    }

    /// An optional integer member.
    pub fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.value(key) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| (self.invalid)(format!("{key} must be an integer"))),
        }
    }

    /// An optional list of strings.
    pub fn strings(&self, key: &str) -> Result<Vec<String>, ApiError> {
        match self.value(key) {
            None => Ok(Vec::new()),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| (self.invalid)(format!("{key} must hold strings")))
                })
                .collect(),
            Some(_) => Err((self.invalid)(format!("{key} must be a list"))),
        }
    }

    /// Reports `message` as this service's validation error.
    pub fn invalid(&self, message: impl Into<String>) -> ApiError {
        (self.invalid)(message.into())
    }
}

/// An opaque pagination token: the offset of the next item, base64-encoded so that clients do not
/// start building tokens themselves.
pub fn encode_token(offset: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("fakecloud:{offset}"))
}

/// Decodes a token made by [`encode_token`].
pub fn decode_token(token: &str) -> Option<usize> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    String::from_utf8(bytes)
        .ok()?
        .strip_prefix("fakecloud:")?
        .parse()
        .ok()
}

/// A pagination token that this emulator did not issue (or that points past the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadPageToken;

/// One page of `items` starting at `token`, and the token of the next page.
pub fn paginate<T>(
    items: Vec<T>,
    token: Option<&str>,
    page_size: usize,
) -> Result<(Vec<T>, Option<String>), BadPageToken> {
    let start = match token {
        None | Some("") => 0,
        Some(t) => decode_token(t).ok_or(BadPageToken)?,
    };
    if start > items.len() {
        return Err(BadPageToken);
    }
    let end = start.saturating_add(page_size).min(items.len());
    let next = (end < items.len()).then(|| encode_token(end));
    let page = items.into_iter().skip(start).take(end - start).collect();
    Ok((page, next))
}

/// Matches `value` against an EC2-style filter pattern, where `*` matches any run of characters
/// and `?` exactly one.
pub fn wildcard_match(pattern: &str, value: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    let (mut pi, mut vi) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == v[vi]) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = vi;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            vi = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
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

/// Parses a reservation `Duration` filter. The documented valid values are `1 | 3 | 31536000 |
/// 94608000` (years or seconds); anything else is the caller's validation error.
pub fn duration_param(value: &str) -> Option<i64> {
    use super::catalog::{ONE_YEAR, THREE_YEARS};
    match value.trim() {
        "1" => Some(ONE_YEAR),
        "3" => Some(THREE_YEARS),
        v => v
            .parse::<i64>()
            .ok()
            .filter(|s| *s == ONE_YEAR || *s == THREE_YEARS),
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

/// awsQuery `MaxRecords`: default 100, allowed 20–100 (RDS, ElastiCache, Redshift).
pub fn max_records(params: &Params) -> Result<usize, ApiError> {
    let n = params.int("MaxRecords", invalid_parameter)?.unwrap_or(100);
    if !(20..=100).contains(&n) {
        return Err(invalid_parameter(format!(
            "Invalid value {n} for MaxRecords. Must be between 20 and 100"
        )));
    }
    Ok(n as usize)
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
    fn lists_and_structs_follow_the_index_not_the_order() {
        let p = Params::parse(
            b"Filter.2.Name=state&Filter.1.Name=tag%3Ak&Filter.1.Value.1=v&Id.2=b&Id.1=a",
        );
        assert_eq!(p.list("Id"), vec!["a", "b"]);
        let filters = p.structs("Filter");
        assert_eq!(filters[0].get("Name"), Some("tag:k"));
        assert_eq!(filters[0].list("Value"), vec!["v"]);
        assert_eq!(filters[1].get("Name"), Some("state"));
    }

    #[test]
    fn pagination_round_trips() {
        let (page, next) = paginate((0..5).collect(), None, 2).unwrap();
        assert_eq!(page, vec![0, 1]);
        let (page, next) = paginate((0..5).collect(), next.as_deref(), 2).unwrap();
        assert_eq!(page, vec![2, 3]);
        let (page, next) = paginate((0..5).collect(), next.as_deref(), 2).unwrap();
        assert_eq!((page, next), (vec![4], None));
        assert!(paginate::<u8>(vec![], Some("garbage"), 2).is_err());
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("m5.*", "m5.large"));
        assert!(wildcard_match("?5.large", "m5.large"));
        assert!(!wildcard_match("m5", "m5.large"));
        assert!(wildcard_match("*", ""));
    }

    #[test]
    fn prices() {
        assert_eq!(fmt_price(1.0), "1.0");
        assert_eq!(fmt_price(0.0123), "0.0123");
        assert_eq!(fmt_price(512.5), "512.5");
    }
}
