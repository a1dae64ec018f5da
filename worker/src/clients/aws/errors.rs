//! Classifying AWS SDK errors into transient (retry through the queue, guard first),
//! ambiguous (a purchase call that may have bought) and permanent (nothing was bought, nothing
//! will be without a change).
//!
//! The rule that matters for money: a purchase call that may have reached the provider without
//! a clear refusal (timeouts, dropped connections, unparseable responses, 5xx) is
//! [`PurchaseError::Ambiguous`], so the next attempt runs the guard and waits for the settle
//! window before it could buy again ([`classify_purchase`]).

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::error::{PermanentKind, PurchaseError};

const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
    "BandwidthLimitExceeded",
];

const SERVER: &[&str] = &[
    "InternalFailure",
    "InternalError",
    "InternalServerError",
    "InternalServerException",
    "InternalException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "Unavailable",
    "RequestTimeout",
    "RequestTimeoutException",
    "RequestExpired",
    "ExpiredToken",
    "ExpiredTokenException",
    "IDPCommunicationError",
    // Redshift: "Your request cannot be completed because a dependent internal service is
    // temporarily unavailable. Wait 30 to 60 seconds and try again." (HTTP 400).
    "DependentServiceUnavailableFault",
];

const AUTH: &[&str] = &[
    "AuthFailure",
    "UnauthorizedOperation",
    "AccessDenied",
    "AccessDeniedException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "MissingAuthenticationToken",
    "OptInRequired",
];

const FUNDS: &[&str] = &[
    "InsufficientFunds",
    "InsufficientReservedInstanceCapacity",
    "PendingVerification",
];

/// The error code of a service error (`None` for transport errors).
pub fn code<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Option<&str> {
    match err {
        SdkError::ServiceError(se) => se.err().code(),
        _ => None,
    }
}

/// Classifies an SDK error from operation `op`.
pub fn classify<E>(op: &str, err: &SdkError<E, HttpResponse>) -> PurchaseError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err {
        SdkError::ConstructionFailure(_) => PurchaseError::permanent(
            PermanentKind::Validation,
            format!(
                "{op}: request could not be built: {}",
                DisplayErrorContext(err)
            ),
        ),
        SdkError::TimeoutError(_) => PurchaseError::transient(format!("{op}: timed out")),
        SdkError::DispatchFailure(_) => {
            PurchaseError::transient(format!("{op}: network error: {}", DisplayErrorContext(err)))
        }
        SdkError::ResponseError(_) => PurchaseError::transient(format!(
            "{op}: unreadable response: {}",
            DisplayErrorContext(err)
        )),
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or("Unknown");
            let message = se.err().message().unwrap_or("");
            let text = format!("{op}: {code} (HTTP {status}): {message}");
            if THROTTLING.contains(&code)
                || SERVER.contains(&code)
                || status >= 500
                || status == 429
            {
                PurchaseError::transient(text)
            } else if AUTH.contains(&code) || status == 401 || status == 403 {
                PurchaseError::permanent(PermanentKind::Auth, text)
            } else if FUNDS.contains(&code) {
                PurchaseError::permanent(PermanentKind::Funds, text)
            } else {
                PurchaseError::permanent(PermanentKind::Validation, text)
            }
        }
        _ => PurchaseError::transient(format!("{op}: {}", DisplayErrorContext(err))),
    }
}

/// Classifies an error of a purchase call. Unlike [`classify`], an outcome that does not prove
/// the call was refused — a timeout, a transport failure, an unreadable response, a 5xx that is
/// not a throttle — is [`PurchaseError::Ambiguous`]: the provider may have bought.
pub fn classify_purchase<E>(op: &str, err: &SdkError<E, HttpResponse>) -> PurchaseError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let ambiguous = match err {
        SdkError::ConstructionFailure(_) => false,
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("Unknown");
            // A throttle is a refusal even when EC2 sends it as a 503.
            se.raw().status().as_u16() >= 500 && !THROTTLING.contains(&code)
        }
        // Timeouts, dispatch failures (the request may have been written before the connection
        // broke), unreadable responses, anything else.
        _ => true,
    };
    let classified = classify(op, err);
    if ambiguous {
        PurchaseError::ambiguous(classified.message())
    } else {
        classified
    }
}

/// Classifies a failed offering lookup. Offerings are catalog data, not a guard, so a refusal
/// of the request (a 4xx that is not a throttle or an expired credential) will not heal by
/// retrying: it is permanent. Everything else is transient.
pub fn offering_lookup_failed<E>(op: &str, err: &SdkError<E, HttpResponse>) -> PurchaseError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match classify(op, err) {
        p @ PurchaseError::Permanent { .. } => PurchaseError::permanent(
            match &p {
                PurchaseError::Permanent { kind, .. } => *kind,
                _ => PermanentKind::Validation,
            },
            format!(
                "the offering lookup was refused, check the recommendation: {}",
                p.message()
            ),
        ),
        other => PurchaseError::transient(format!("offering lookup failed: {}", other.message())),
    }
}

/// Classifies a failed guard lookup: a lookup that failed for any reason refuses the purchase.
/// Auth failures stay permanent (they will not heal); everything else is transient.
pub fn lookup_failed<E>(op: &str, err: &SdkError<E, HttpResponse>) -> PurchaseError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match classify(op, err) {
        p @ PurchaseError::Permanent {
            kind: PermanentKind::Auth,
            ..
        } => p,
        other => PurchaseError::transient(format!(
            "guard lookup failed, refusing to buy: {}",
            other.message()
        )),
    }
}
