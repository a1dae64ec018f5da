//! The AWS request pipeline shared by every service: find the service and operation, count the
//! call, check SigV4, apply faults, run the service handler, and lose the response on purpose when
//! a commit-then-fail rule says so.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::response::Response;
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use http::request::Parts;
use http::StatusCode;

use super::catalog::Offer;
use super::elasticache::ElastiCache;
use super::faults::{CommitFailure, Decision, InjectedError, OpKind};
use super::identity::{AwsIdentity, CredentialError};
use super::ledger::{Commitment, Detail, Provider};
use super::memorydb::MemoryDb;
use super::opensearch::OpenSearch;
use super::protocol::{ApiError, AwsService, Params, Protocol};
use super::rds::Rds;
use super::redshift::Redshift;
use super::server::{DropConnection, Shared};
use super::sigv4::{Authorization, SigV4Error, SignedRequest};
use super::{ec2, reserved, savingsplans, sts};

/// Everything a service handler needs to answer one call.
pub struct Call<'a> {
    /// Emulator state.
    pub shared: &'a Shared,
    /// Operation name (`PurchaseReservedInstancesOffering`).
    pub operation: &'a str,
    /// Who is calling.
    pub identity: &'a AwsIdentity,
    /// Region of the SigV4 credential scope.
    pub region: &'a str,
    /// Form parameters (query protocols) or URL query parameters (restJson1).
    pub params: &'a Params,
    /// Raw body (JSON protocols).
    pub body: &'a [u8],
    /// Request ID to echo.
    pub request_id: &'a str,
    /// Fault decisions the handler must honour (empty lookups, dropped tags, failed provisioning).
    pub faults: &'a Decision,
    /// Request time.
    pub now: DateTime<Utc>,
    /// The realism knobs at the time of the call (read once: lookups consult them per item).
    pub realism: super::Realism,
}

impl Call<'_> {
    /// Account the call is attributed to.
    pub fn account(&self) -> &str {
        &self.identity.account
    }

    /// The page size to answer with: what the client asked for, at most the realism's
    /// [`super::Realism::max_page_size`].
    pub fn page_size(&self, requested: usize) -> usize {
        match self.realism.max_page_size {
            Some(max) => requested.min(max.max(1)),
            None => requested,
        }
    }

    /// Whether lookups show `commitment` yet (see [`super::Realism::visibility_delay`]).
    pub fn visible(&self, commitment: &Commitment) -> bool {
        self.now >= commitment.created_at + to_delta(self.realism.visibility_delay)
    }

    /// The final state of a purchase: `active`, unless a provisioning-failure fault says otherwise.
    pub fn final_state(&self) -> String {
        match &self.faults.provisioning_failure {
            None => "active".to_string(),
            Some(None) => "payment-failed".to_string(),
            Some(Some(state)) => state.clone(),
        }
    }

    /// When a purchase made now leaves its pending state.
    pub fn activation_time(&self) -> DateTime<Utc> {
        self.now + to_delta(self.shared.config.ri_activation_delay)
    }

    /// A new reservation of `count` units of `offer`, pending until the activation delay passes.
    pub fn new_reservation(
        &self,
        service: AwsService,
        offer: &Offer<'_>,
        id: String,
        count: u32,
        handle: Option<String>,
        tags: BTreeMap<String, String>,
    ) -> Commitment {
        let o = offer.offering;
        Commitment {
            provider: Provider::Aws,
            service: service.ledger_name().to_string(),
            account: self.account().to_string(),
            region: self.region.to_string(),
            id,
            handle,
            offering_id: offer.id.clone(),
            resource_type: o.resource_type.clone(),
            product: o.product_description.clone(),
            offering_class: o.offering_class.clone(),
            multi_az: o.multi_az,
            zone: offer.zone.clone(),
            count,
            duration_seconds: o.duration_seconds,
            payment: o.payment_option.as_str().to_string(),
            unit_fixed: o.fixed_price,
            unit_usage: o.usage_price,
            unit_recurring: o.recurring_hourly,
            currency: o.currency.clone(),
            // A tag-write fault on a purchase that carries tags: bought, but untagged.
            tags: if self.faults.drop_tags {
                BTreeMap::new()
            } else {
                tags
            },
            created_at: self.now,
            ready_at: self.activation_time(),
            pending_state: if service == AwsService::Redshift {
                "pending-payment"
            } else {
                "payment-pending"
            }
            .to_string(),
            final_state: self.final_state(),
            state_override: None,
            detail: Detail::Plain,
        }
    }
}

/// AWS queues a purchase at most three years ahead; later times are refused (which also keeps
/// the emulator's date arithmetic far from chrono's limits).
pub fn valid_purchase_time(now: DateTime<Utc>, at: DateTime<Utc>) -> bool {
    at <= now + TimeDelta::days(3 * 365)
}

/// A `std` duration as a chrono one, capped at a century so that adding it to "now" cannot
/// overflow: a silly config must not panic the server.
pub fn to_delta(duration: Duration) -> TimeDelta {
    let century = TimeDelta::days(36_500);
    TimeDelta::from_std(duration).map_or(century, |d| d.min(century))
}

/// Classifies an operation for the fault rules.
pub fn op_kind(operation: &str) -> OpKind {
    if operation.starts_with("Describe")
        || operation.starts_with("Get")
        || operation.starts_with("List")
    {
        OpKind::Lookup
    } else if operation == "CreateTags" || operation == "TagResource" {
        OpKind::TagWrite
    } else if operation.starts_with("Purchase") || operation == "CreateSavingsPlan" {
        OpKind::Purchase
    } else {
        OpKind::Other
    }
}

/// Where a request goes.
struct Target {
    service: AwsService,
    operation: String,
    params: Params,
}

/// Handles one AWS request.
pub async fn handle(shared: &Shared, parts: &Parts, body: Bytes) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let auth = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(Authorization::parse);
    let (scope_service, region) = match &auth {
        Some(Ok(a)) => (AwsService::from_signing_name(&a.service), a.region.clone()),
        _ => (None, String::new()),
    };
    let target = match route(parts, &body, scope_service) {
        Ok(target) => target,
        Err((protocol, error)) => return error.render(protocol, &request_id),
    };
    let protocol = target.service.protocol();
    let op_name = format!("{}:{}", target.service.op_prefix(), target.operation);
    shared.store().count_call(&op_name);
    tracing::debug!(operation = %op_name, request.id = %request_id, "aws call");

    let now = Utc::now();
    let identity = match authenticate(shared, parts, &body, auth, target.service, now) {
        Ok(identity) => identity,
        Err(error) => {
            tracing::info!(operation = %op_name, code = %error.code, "aws call rejected by authentication");
            return error.render(protocol, &request_id);
        }
    };

    let decision = shared.decide(&op_name, op_kind(&target.operation));
    sleep(shared.config.latency + decision.latency).await;
    if let Some(error) = &decision.reject {
        tracing::info!(operation = %op_name, ?error, "injected error");
        return injected(target.service, error).render(protocol, &request_id);
    }

    let call = Call {
        shared,
        operation: &target.operation,
        identity: &identity,
        region: &region,
        params: &target.params,
        body: &body,
        request_id: &request_id,
        faults: &decision,
        now,
        realism: shared.realism(),
    };
    let result = match target.service {
        AwsService::Ec2 => ec2::handle(&call),
        AwsService::SavingsPlans => savingsplans::handle(&call),
        AwsService::Rds => reserved::handle::<Rds>(&call),
        AwsService::ElastiCache => reserved::handle::<ElastiCache>(&call),
        AwsService::MemoryDb => reserved::handle::<MemoryDb>(&call),
        AwsService::OpenSearch => reserved::handle::<OpenSearch>(&call),
        AwsService::Redshift => reserved::handle::<Redshift>(&call),
        AwsService::Sts => sts::handle(&call),
    };
    let response = match result {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(operation = %op_name, code = %error.code, "aws call failed");
            return error.render(protocol, &request_id);
        }
    };
    // The handler has committed its effects; from here on the client may never learn of them.
    match decision.commit_then_fail {
        None => response,
        Some(CommitFailure::ServerError) => {
            tracing::info!(operation = %op_name, "commit-then-fail: answering 500");
            injected(target.service, &InjectedError::InternalFailure).render(protocol, &request_id)
        }
        Some(CommitFailure::DropConnection) => {
            tracing::info!(operation = %op_name, "commit-then-fail: dropping the connection");
            DropConnection::response()
        }
    }
}

async fn sleep(duration: Duration) {
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
}

/// Finds the service and operation, as each protocol allows.
fn route(
    parts: &Parts,
    body: &[u8],
    scope: Option<AwsService>,
) -> Result<Target, (Protocol, ApiError)> {
    let path = parts.uri.path();
    let url_params = Params::parse(parts.uri.query().unwrap_or_default().as_bytes());
    if let Some(target) = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
    {
        return match target.strip_prefix("AmazonMemoryDB.") {
            Some(op) if !op.is_empty() => Ok(Target {
                service: AwsService::MemoryDb,
                operation: op.to_string(),
                params: url_params,
            }),
            _ => Err((
                Protocol::AwsJson11,
                ApiError::bad_request(
                    "UnknownOperationException",
                    format!("Unknown operation {target}"),
                ),
            )),
        };
    }
    if let Some(rest) = path.strip_prefix("/2021-01-01/opensearch/") {
        let operation = match (parts.method.as_str(), rest) {
            ("GET", "reservedInstanceOfferings") => "DescribeReservedInstanceOfferings",
            ("GET", "reservedInstances") => "DescribeReservedInstances",
            ("POST", "purchaseReservedInstanceOffering") => "PurchaseReservedInstanceOffering",
            _ => {
                return Err((
                    Protocol::RestJson1,
                    ApiError::new(
                        StatusCode::NOT_FOUND,
                        "UnknownOperationException",
                        format!("No route for {path}"),
                    ),
                ))
            }
        };
        return Ok(Target {
            service: AwsService::OpenSearch,
            operation: operation.into(),
            params: url_params,
        });
    }
    let is_json = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if scope == Some(AwsService::SavingsPlans)
        || (parts.method == http::Method::POST && path != "/" && is_json)
    {
        let operation = path.trim_start_matches('/').to_string();
        return Ok(Target {
            service: AwsService::SavingsPlans,
            operation,
            params: url_params,
        });
    }

    // Query protocols: parameters from the form body, then from the URL.
    let mut raw = body.to_vec();
    if let Some(q) = parts.uri.query() {
        if !raw.is_empty() {
            raw.push(b'&');
        }
        raw.extend_from_slice(q.as_bytes());
    }
    let params = Params::parse(&raw);
    let by_version = params
        .get("Version")
        .and_then(AwsService::from_query_version);
    let service = match scope {
        Some(s) if matches!(s.protocol(), Protocol::Ec2Query | Protocol::AwsQuery(_)) => s,
        _ => by_version.ok_or_else(|| {
            (
                Protocol::AwsQuery(""),
                ApiError::bad_request("InvalidAction", "Could not determine the service to call"),
            )
        })?,
    };
    match params.get("Action") {
        Some(action) if !action.is_empty() => Ok(Target {
            service,
            operation: action.to_string(),
            params,
        }),
        _ => Err((
            service.protocol(),
            ApiError::bad_request("MissingAction", "Missing Action"),
        )),
    }
}

/// The per-protocol spelling of authentication failures.
fn auth_error(service: AwsService, kind: AuthFailure, message: String) -> ApiError {
    use AuthFailure::*;
    let (status, code) = match (service.protocol(), kind) {
        // EC2 reports every credential problem as AuthFailure (401).
        (Protocol::Ec2Query, Skew) => (StatusCode::BAD_REQUEST, "RequestExpired"),
        (Protocol::Ec2Query, _) => (StatusCode::UNAUTHORIZED, "AuthFailure"),
        (Protocol::AwsQuery(_), Missing) => (StatusCode::FORBIDDEN, "MissingAuthenticationToken"),
        (Protocol::AwsQuery(_), Malformed) => (StatusCode::BAD_REQUEST, "IncompleteSignature"),
        (Protocol::AwsQuery(_), UnknownKey) => (StatusCode::FORBIDDEN, "InvalidClientTokenId"),
        (Protocol::AwsQuery(_), BadSignature | Skew) => {
            (StatusCode::FORBIDDEN, "SignatureDoesNotMatch")
        }
        (Protocol::AwsQuery(_), ExpiredToken) => (StatusCode::FORBIDDEN, "ExpiredToken"),
        // awsJson1_1 services answer 400 for these; restJson1 (API Gateway-fronted) answer 403.
        (p, kind) => {
            let status = if p == Protocol::AwsJson11 {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::FORBIDDEN
            };
            let code = match kind {
                Missing => "MissingAuthenticationTokenException",
                Malformed => "IncompleteSignatureException",
                UnknownKey => "UnrecognizedClientException",
                BadSignature | Skew => "InvalidSignatureException",
                ExpiredToken => "ExpiredTokenException",
            };
            (status, code)
        }
    };
    ApiError::new(status, code, message)
}

#[derive(Debug, Clone, Copy)]
enum AuthFailure {
    Missing,
    Malformed,
    UnknownKey,
    BadSignature,
    Skew,
    ExpiredToken,
}

fn authenticate(
    shared: &Shared,
    parts: &Parts,
    body: &[u8],
    auth: Option<Result<Authorization, SigV4Error>>,
    service: AwsService,
    now: DateTime<Utc>,
) -> Result<AwsIdentity, ApiError> {
    let auth = match auth {
        None => {
            return Err(auth_error(
                service,
                AuthFailure::Missing,
                SigV4Error::Missing.to_string(),
            ));
        }
        Some(Err(e)) => return Err(auth_error(service, AuthFailure::Malformed, e.to_string())),
        Some(Ok(auth)) => auth,
    };
    if auth.service != service.signing_name() {
        return Err(auth_error(
            service,
            AuthFailure::BadSignature,
            format!(
                "Credential should be scoped to correct service: '{}'.",
                service.signing_name()
            ),
        ));
    }
    let session_token = parts
        .headers
        .get("x-amz-security-token")
        .and_then(|v| v.to_str().ok());
    let identity = shared
        .identities
        .resolve_aws(&shared.config, &auth.access_key, session_token, now)
        .map_err(|e| match e {
            CredentialError::Unknown => auth_error(
                service,
                AuthFailure::UnknownKey,
                "The security token included in the request is invalid.".into(),
            ),
            CredentialError::Expired => auth_error(
                service,
                AuthFailure::ExpiredToken,
                "The security token included in the request is expired".into(),
            ),
        })?;
    let request = SignedRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
        body,
    };
    auth.verify(&identity.secret, &request, now).map_err(|e| {
        let kind = match e {
            SigV4Error::Missing => AuthFailure::Missing,
            SigV4Error::Malformed(_) => AuthFailure::Malformed,
            SigV4Error::Mismatch => AuthFailure::BadSignature,
            SigV4Error::Expired(_) => AuthFailure::Skew,
        };
        auth_error(service, kind, e.to_string())
    })?;
    Ok(identity)
}

/// The error a service really answers for an injected fault.
pub fn injected(service: AwsService, error: &InjectedError) -> ApiError {
    let protocol = service.protocol();
    match error {
        InjectedError::Throttling => match protocol {
            Protocol::Ec2Query => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "RequestLimitExceeded",
                "Request limit exceeded.",
            ),
            Protocol::AwsQuery(_) => ApiError::bad_request("Throttling", "Rate exceeded"),
            Protocol::AwsJson11 => ApiError::bad_request("ThrottlingException", "Rate exceeded"),
            Protocol::RestJson1 => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "ThrottlingException",
                "Rate exceeded",
            ),
        },
        InjectedError::InternalFailure => {
            let code = match service {
                AwsService::Ec2 => "InternalError",
                AwsService::SavingsPlans => "InternalServerException",
                AwsService::OpenSearch => "InternalException",
                _ => "InternalFailure",
            };
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                code,
                "The request processing has failed because of an unknown error, exception or failure.",
            )
        }
        InjectedError::ServiceUnavailable => {
            let code = if service == AwsService::Ec2 {
                "Unavailable"
            } else {
                "ServiceUnavailable"
            };
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                code,
                "The service is unavailable. Please try again later.",
            )
        }
        InjectedError::Custom {
            status,
            code,
            message,
        } => ApiError::injected(*status, code, message.as_deref()),
    }
}
