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
//!
//! This module names the services and their protocols; requests are read by `query.rs` (form
//! parameters) and `json.rs` (JSON bodies), paginated by `paging.rs`, answered by `response.rs`
//! and failed by `error.rs`.

mod error;
mod json;
mod paging;
mod query;
mod response;

pub use error::{invalid_parameter, missing_parameter, unknown_query_operation, ApiError};
pub use json::JsonInput;
pub use paging::{decode_token, encode_token, paginate};
pub use query::{duration_param, max_records, wildcard_match, Params};
pub use response::{
    fmt_price, iso_time, json_recurring_charges, json_response, query_recurring_charges,
    query_success, xml_response,
};

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
