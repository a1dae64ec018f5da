//! The execution document: the producer's input contract (DESIGN §8).
//!
//! Decoding is strict and two-staged. Serde rejects unknown fields, wrong types and unknown
//! enum values (the path of the offending field comes from `serde_path_to_error`); then
//! [`ExecutionDocument::validate`] checks what the type system cannot (which fields each service
//! needs, `count >= 1`, payment options per provider). Every error names its field path and what
//! was expected, so the submitting system's operator can act on it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{ExecutionId, LineageKey, RecIndex};

/// Largest execution document accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;
/// Most recommendations in one execution.
pub const MAX_RECOMMENDATIONS: usize = RecIndex::MAX as usize + 1;

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Aws,
    Azure,
}

/// Every service buyonce buys commitments for: 7 AWS, 5 Azure.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Service {
    Ec2,
    SavingsPlans,
    Rds,
    Elasticache,
    Memorydb,
    Opensearch,
    Redshift,
    Vm,
    SqlDatabase,
    RedisCache,
    CosmosDb,
    Search,
}

impl Service {
    pub const ALL: [Service; 12] = [
        Service::Ec2,
        Service::SavingsPlans,
        Service::Rds,
        Service::Elasticache,
        Service::Memorydb,
        Service::Opensearch,
        Service::Redshift,
        Service::Vm,
        Service::SqlDatabase,
        Service::RedisCache,
        Service::CosmosDb,
        Service::Search,
    ];

    pub fn provider(self) -> Provider {
        match self {
            Service::Ec2
            | Service::SavingsPlans
            | Service::Rds
            | Service::Elasticache
            | Service::Memorydb
            | Service::Opensearch
            | Service::Redshift => Provider::Aws,
            Service::Vm
            | Service::SqlDatabase
            | Service::RedisCache
            | Service::CosmosDb
            | Service::Search => Provider::Azure,
        }
    }

    /// The name used in documents, logs, metrics labels and SQL.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Ec2 => "ec2",
            Service::SavingsPlans => "savings-plans",
            Service::Rds => "rds",
            Service::Elasticache => "elasticache",
            Service::Memorydb => "memorydb",
            Service::Opensearch => "opensearch",
            Service::Redshift => "redshift",
            Service::Vm => "vm",
            Service::SqlDatabase => "sql-database",
            Service::RedisCache => "redis-cache",
            Service::CosmosDb => "cosmos-db",
            Service::Search => "search",
        }
    }

    pub fn parse(s: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|svc| svc.as_str() == s)
    }

    /// Whether the service buys a number of units (and so needs `count`).
    pub fn buys_units(self) -> bool {
        self != Service::SavingsPlans
    }

    /// Whether buyonce buys it. `search` is known (so its refusal can say why) but not bought:
    /// Microsoft.Capacity documents no reservedResourceType for Azure AI Search.
    pub fn purchasable(self) -> bool {
        self != Service::Search
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Aws => "aws",
            Provider::Azure => "azure",
        }
    }

    pub fn parse(s: &str) -> Option<Provider> {
        [Provider::Aws, Provider::Azure]
            .into_iter()
            .find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Term {
    #[serde(rename = "1y")]
    OneYear,
    #[serde(rename = "3y")]
    ThreeYears,
}

impl Term {
    pub fn years(self) -> u32 {
        match self {
            Term::OneYear => 1,
            Term::ThreeYears => 3,
        }
    }

    /// The term in seconds as AWS spells durations (365-day years).
    pub fn seconds(self) -> i64 {
        i64::from(self.years()) * 31_536_000
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Term::OneYear => "1y",
            Term::ThreeYears => "3y",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[serde(rename_all = "kebab-case")]
pub enum Payment {
    AllUpfront,
    PartialUpfront,
    NoUpfront,
    Upfront,
    Monthly,
}

impl Payment {
    pub fn as_str(self) -> &'static str {
        match self {
            Payment::AllUpfront => "all-upfront",
            Payment::PartialUpfront => "partial-upfront",
            Payment::NoUpfront => "no-upfront",
            Payment::Upfront => "upfront",
            Payment::Monthly => "monthly",
        }
    }

    fn valid_for(self, provider: Provider) -> bool {
        match provider {
            Provider::Aws => matches!(
                self,
                Payment::AllUpfront | Payment::PartialUpfront | Payment::NoUpfront
            ),
            Provider::Azure => matches!(self, Payment::Upfront | Payment::Monthly),
        }
    }

    /// The AWS offering-type spelling (`All Upfront`, ...), for AWS only.
    pub fn aws_offering_type(self) -> &'static str {
        match self {
            Payment::AllUpfront | Payment::Upfront => "All Upfront",
            Payment::PartialUpfront => "Partial Upfront",
            Payment::NoUpfront | Payment::Monthly => "No Upfront",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[serde(rename_all = "kebab-case")]
pub enum OfferingClass {
    Standard,
    Convertible,
}

impl OfferingClass {
    pub fn as_str(self) -> &'static str {
        match self {
            OfferingClass::Standard => "standard",
            OfferingClass::Convertible => "convertible",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[serde(rename_all = "kebab-case")]
pub enum PlanType {
    Compute,
    Ec2Instance,
    Sagemaker,
    /// Database Savings Plans (`SavingsPlanType` `Database` in the current model).
    Database,
}

/// One approved recommendation: what to buy, where, for how long.
///
/// The wire form is one flat object for every service (so documents stay easy to write by hand);
/// which fields a service needs or forbids is checked by [`Recommendation::validate`].
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
#[serde(deny_unknown_fields)]
pub struct Recommendation {
    pub provider: Provider,
    pub service: Service,
    /// AWS account ID (12 digits) or Azure subscription ID (GUID).
    pub account: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Instance / node / SKU type (`m5.large`, `db.r6g.large`, `Standard_D2s_v5`, ...); for
    /// `ec2-instance` Savings Plans the instance family (`m5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    pub term: Term,
    pub payment: Payment,
    /// EC2 product description, default `Linux/UNIX`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// EC2 offering class, default `standard`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offering_class: Option<OfferingClass>,
    /// RDS engine (required) or ElastiCache engine (default `redis`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// RDS only, default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_az: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_type: Option<PlanType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commitment_usd_per_hour: Option<f64>,
    /// Buy exactly this offering instead of looking one up by attributes (AWS only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offering_id: Option<String>,
    /// Spend cap: the worker refuses to buy if the upfront cost is above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_upfront_usd: Option<f64>,
}

/// The approved execution as other systems submit it.
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
#[serde(deny_unknown_fields)]
pub struct ExecutionDocument {
    pub execution_id: ExecutionId,
    /// Defaults to `execution_id`; keep it stable across retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<LineageKey>,
    pub approved_by: String,
    pub source: String,
    pub recommendations: Vec<Recommendation>,
}

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON path of the field, e.g. `recommendations[2].count` (`.` for the document itself).
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a document (or a message envelope) was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DocumentError {
    #[error("document is {size} bytes, the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("not valid UTF-8 at byte {0}")]
    NotUtf8(usize),
    #[error("not valid JSON (line {line}, column {column}): {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// Wrong type, unknown field, missing field or unknown enum value.
    #[error("{0}")]
    Field(FieldError),
    /// Well-formed but semantically wrong; every problem found is listed.
    #[error("{}", join_errors(.0))]
    Invalid(Vec<FieldError>),
}

fn join_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl DocumentError {
    /// All field errors, for API responses (`[]` for syntax/size errors).
    pub fn field_errors(&self) -> Vec<FieldError> {
        match self {
            DocumentError::Field(e) => vec![e.clone()],
            DocumentError::Invalid(errors) => errors.clone(),
            _ => Vec::new(),
        }
    }
}

/// Strictly decodes JSON bytes into `T`, reporting the failing field's path.
pub(crate) fn decode_strict<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    limit: usize,
) -> Result<T, DocumentError> {
    if bytes.len() > limit {
        return Err(DocumentError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(DocumentError::NotUtf8(e.valid_up_to()));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            DocumentError::Syntax {
                line: inner.line(),
                column: inner.column(),
                message: strip_position(&inner.to_string()),
            }
        } else {
            DocumentError::Field(FieldError {
                path,
                message: strip_position(&inner.to_string()),
            })
        }
    })?;
    // Trailing garbage after the value is a syntax error, not something to ignore.
    de.end().map_err(|e| DocumentError::Syntax {
        line: e.line(),
        column: e.column(),
        message: strip_position(&e.to_string()),
    })?;
    Ok(value)
}

/// serde_json appends " at line X column Y" to messages; the path already says where.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

impl ExecutionDocument {
    /// Decodes and validates a submitted document.
    pub fn from_json(bytes: &[u8]) -> Result<Self, DocumentError> {
        let doc: ExecutionDocument = decode_strict(bytes, MAX_DOCUMENT_BYTES)?;
        doc.validate()?;
        Ok(doc)
    }

    /// The lineage key: `idempotency_key`, or the execution ID when absent.
    pub fn lineage_key(&self) -> LineageKey {
        self.idempotency_key
            .clone()
            .unwrap_or_else(|| self.execution_id.clone().into())
    }

    /// The document with defaults made explicit: what is stored and compared when the same
    /// execution is submitted again (an omitted `idempotency_key` equals the execution ID).
    pub fn canonical(&self) -> ExecutionDocument {
        let mut doc = self.clone();
        doc.idempotency_key = Some(self.lineage_key());
        doc
    }

    /// Checks everything serde cannot; returns every problem found.
    pub fn validate(&self) -> Result<(), DocumentError> {
        let mut errors = Vec::new();
        if self.approved_by.trim().is_empty() {
            errors.push(err("approved_by", "must name who approved the execution"));
        }
        if self.source.trim().is_empty() {
            errors.push(err("source", "must name the submitting system"));
        }
        check_text(&mut errors, "approved_by", &self.approved_by, 256);
        check_text(&mut errors, "source", &self.source, 256);
        if self.recommendations.is_empty() {
            errors.push(err(
                "recommendations",
                "must contain at least one recommendation",
            ));
        }
        if self.recommendations.len() > MAX_RECOMMENDATIONS {
            errors.push(err(
                "recommendations",
                &format!(
                    "at most {MAX_RECOMMENDATIONS} recommendations per execution, got {}",
                    self.recommendations.len()
                ),
            ));
        }
        for (i, rec) in self.recommendations.iter().enumerate() {
            rec.collect_errors(&format!("recommendations[{i}]"), &mut errors);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(DocumentError::Invalid(errors))
        }
    }
}

fn err(path: &str, message: &str) -> FieldError {
    FieldError {
        path: path.to_owned(),
        message: message.to_owned(),
    }
}

fn check_text(errors: &mut Vec<FieldError>, path: &str, value: &str, max: usize) {
    if let Some(problem) = crate::text::text_problem(value, max) {
        errors.push(err(path, &problem));
    }
}

fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

impl Recommendation {
    /// Validates this recommendation alone (the envelope decoder uses it too).
    pub fn validate(&self, path: &str) -> Result<(), DocumentError> {
        let mut errors = Vec::new();
        self.collect_errors(path, &mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(DocumentError::Invalid(errors))
        }
    }

    fn collect_errors(&self, path: &str, errors: &mut Vec<FieldError>) {
        let at = |field: &str| format!("{path}.{field}");
        let svc = self.service;
        let kind = format!("{}/{}", self.provider, svc);

        if svc.provider() != self.provider {
            errors.push(err(
                &at("service"),
                &format!(
                    "`{svc}` is a {} service but provider is `{}`; {} services are: {}",
                    svc.provider(),
                    self.provider,
                    self.provider,
                    Service::ALL
                        .iter()
                        .filter(|s| s.provider() == self.provider)
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
            // The remaining checks depend on a consistent provider/service pair.
            return;
        }

        match self.provider {
            Provider::Aws => {
                if !(self.account.len() == 12 && self.account.chars().all(|c| c.is_ascii_digit())) {
                    errors.push(err(
                        &at("account"),
                        "must be a 12-digit AWS account ID, e.g. \"123456789012\"",
                    ));
                }
            }
            Provider::Azure => {
                if !is_guid(&self.account) {
                    errors.push(err(
                        &at("account"),
                        "must be an Azure subscription ID (GUID, 8-4-4-4-12 hex)",
                    ));
                }
            }
        }

        if !svc.purchasable() {
            errors.push(err(
                &at("service"),
                "azure/search is not supported: Microsoft.Capacity's ReservedResourceType \
                 (api-version 2022-11-01) has no value for Azure AI Search and no Microsoft source \
                 names one, so buyonce will not send a guessed value (docs/provider-semantics.md); \
                 buy search reservations in the Azure portal",
            ));
        }

        if !self.payment.valid_for(self.provider) {
            let expected = match self.provider {
                Provider::Aws => "all-upfront, partial-upfront or no-upfront",
                Provider::Azure => "upfront or monthly",
            };
            errors.push(err(
                &at("payment"),
                &format!(
                    "`{}` is not a payment option for {}; expected {expected}",
                    self.payment.as_str(),
                    self.provider
                ),
            ));
        }

        // Which optional fields this service needs (N), allows (A) or forbids (-).
        let is_sp = svc == Service::SavingsPlans;
        let sp_needs_region = is_sp && self.plan_type == Some(PlanType::Ec2Instance);
        let needs_region = !is_sp || sp_needs_region;
        let needs_resource_type = !is_sp || sp_needs_region;

        match &self.region {
            None if needs_region => errors.push(err(
                &at("region"),
                &format!("required for {kind}, e.g. \"us-east-1\" or \"westeurope\""),
            )),
            Some(_) if !needs_region => errors.push(err(
                &at("region"),
                &format!(
                    "not used by {kind} {} plans; remove it",
                    plan_type_name(self.plan_type)
                ),
            )),
            Some(r)
                if r.is_empty()
                    || r.len() > 32
                    || !r
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') =>
            {
                errors.push(err(
                    &at("region"),
                    "must be a region name of lowercase letters, digits and '-', e.g. \"eu-west-1\"",
                ))
            }
            _ => {}
        }

        match &self.resource_type {
            None if needs_resource_type => errors.push(err(
                &at("resource_type"),
                &format!(
                    "required for {kind}, e.g. \"m5.large\", \"db.r6g.large\", \"Standard_D2s_v5\""
                ),
            )),
            Some(_) if !needs_resource_type => errors.push(err(
                &at("resource_type"),
                &format!(
                    "not used by {kind} {} plans; remove it",
                    plan_type_name(self.plan_type)
                ),
            )),
            Some(t)
                if t.is_empty()
                    || t.len() > 64
                    || !t
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-/ ".contains(c)) =>
            {
                errors.push(err(
                    &at("resource_type"),
                    "must be 1-64 characters of letters, digits and . _ - / space",
                ))
            }
            _ => {}
        }

        match self.count {
            None if svc.buys_units() => errors.push(err(
                &at("count"),
                &format!("required for {kind}: how many units to reserve (>= 1)"),
            )),
            Some(_) if !svc.buys_units() => errors.push(err(
                &at("count"),
                "not used by savings-plans (the commitment is commitment_usd_per_hour); remove it",
            )),
            Some(0) => errors.push(err(&at("count"), "must be at least 1")),
            Some(n) if n > 10_000 => errors.push(err(&at("count"), "must be at most 10000")),
            _ => {}
        }

        let forbid = |errors: &mut Vec<FieldError>, field: &str, present: bool, only: &str| {
            if present {
                errors.push(err(
                    &at(field),
                    &format!("only used by {only}; not by {kind}"),
                ));
            }
        };
        forbid(
            errors,
            "platform",
            self.platform.is_some() && svc != Service::Ec2,
            "aws/ec2",
        );
        forbid(
            errors,
            "offering_class",
            self.offering_class.is_some() && svc != Service::Ec2,
            "aws/ec2",
        );
        forbid(
            errors,
            "multi_az",
            self.multi_az.is_some() && svc != Service::Rds,
            "aws/rds",
        );
        forbid(
            errors,
            "engine",
            self.engine.is_some() && !matches!(svc, Service::Rds | Service::Elasticache),
            "aws/rds and aws/elasticache",
        );
        forbid(
            errors,
            "plan_type",
            self.plan_type.is_some() && !is_sp,
            "aws/savings-plans",
        );
        forbid(
            errors,
            "commitment_usd_per_hour",
            self.commitment_usd_per_hour.is_some() && !is_sp,
            "aws/savings-plans",
        );
        forbid(
            errors,
            "offering_id",
            self.offering_id.is_some() && self.provider != Provider::Aws,
            "aws services",
        );

        if svc == Service::Rds && self.engine.is_none() {
            errors.push(err(
                &at("engine"),
                "required for aws/rds, e.g. \"postgresql\" or \"mysql\"",
            ));
        }
        if let Some(engine) = &self.engine {
            if engine.is_empty()
                || engine.len() > 64
                || !engine
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_. ()".contains(c))
            {
                errors.push(err(
                    &at("engine"),
                    "must be 1-64 characters of letters, digits and - _ . ( ) space",
                ));
            }
        }
        if let Some(platform) = &self.platform {
            if platform.is_empty() || platform.len() > 64 || platform.chars().any(char::is_control)
            {
                errors.push(err(
                    &at("platform"),
                    "must be 1-64 printable characters, e.g. \"Linux/UNIX\"",
                ));
            }
        }
        if is_sp {
            if self.plan_type.is_none() {
                errors.push(err(
                    &at("plan_type"),
                    "required for aws/savings-plans: compute, ec2-instance, sagemaker or database",
                ));
            }
            match self.commitment_usd_per_hour {
                None => errors.push(err(
                    &at("commitment_usd_per_hour"),
                    "required for aws/savings-plans: the hourly commitment in USD, e.g. 1.25",
                )),
                Some(c) if !(c > 0.0 && c <= 1_000_000.0) => errors.push(err(
                    &at("commitment_usd_per_hour"),
                    "must be greater than 0 and at most 1000000",
                )),
                _ => {}
            }
        }
        if let (Some(id), Service::Opensearch) = (&self.offering_id, svc) {
            // The OpenSearch model's `GUID` shape: 36 characters, 8-4-4-4-12 hex digits.
            if !is_guid(id) {
                errors.push(err(
                    &at("offering_id"),
                    "must be an OpenSearch reserved instance offering ID: a GUID (8-4-4-4-12 hex digits)",
                ));
            }
        }
        if let Some(id) = &self.offering_id {
            if id.is_empty()
                || id.len() > 128
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_:.".contains(c))
            {
                errors.push(err(
                    &at("offering_id"),
                    "must be 1-128 characters of letters, digits and - _ : .",
                ));
            }
        }
        if let Some(cap) = self.max_upfront_usd {
            if !(cap >= 0.0 && cap.is_finite()) {
                errors.push(err(
                    &at("max_upfront_usd"),
                    "must be a non-negative amount in USD",
                ));
            }
        }
    }

    /// `ec2 m5.large x2 us-east-1 1y all-upfront` — for logs and tables.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("{}/{}", self.provider, self.service)];
        if let Some(t) = &self.resource_type {
            parts.push(t.clone());
        }
        if let Some(c) = self.count {
            parts.push(format!("x{c}"));
        }
        if let Some(c) = self.commitment_usd_per_hour {
            parts.push(format!("${c}/h"));
        }
        if let Some(r) = &self.region {
            parts.push(r.clone());
        }
        parts.push(self.term.as_str().to_owned());
        parts.push(self.payment.as_str().to_owned());
        parts.join(" ")
    }

    /// Units to buy (1 for services without a count).
    pub fn units(&self) -> u32 {
        self.count.unwrap_or(1)
    }
}

fn plan_type_name(plan: Option<PlanType>) -> &'static str {
    match plan {
        Some(PlanType::Compute) | None => "compute",
        Some(PlanType::Ec2Instance) => "ec2-instance",
        Some(PlanType::Sagemaker) => "sagemaker",
        Some(PlanType::Database) => "database",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{
      "execution_id": "exec-2026-11-28-0001",
      "approved_by": "finops@example.com",
      "source": "cost-optimizer",
      "recommendations": [
        {"provider": "aws", "service": "ec2", "account": "123456789012", "region": "us-east-1",
         "resource_type": "m5.large", "count": 2, "term": "1y", "payment": "all-upfront",
         "platform": "Linux/UNIX", "offering_class": "standard", "max_upfront_usd": 1500.0},
        {"provider": "aws", "service": "savings-plans", "account": "123456789012",
         "plan_type": "compute", "term": "3y", "payment": "no-upfront",
         "commitment_usd_per_hour": 1.25},
        {"provider": "aws", "service": "rds", "account": "123456789012", "region": "eu-west-1",
         "resource_type": "db.r6g.large", "engine": "postgresql", "multi_az": true,
         "count": 1, "term": "1y", "payment": "partial-upfront"},
        {"provider": "azure", "service": "vm", "account": "00000000-0000-0000-0000-000000000001",
         "region": "westeurope", "resource_type": "Standard_D2s_v5", "count": 3, "term": "1y",
         "payment": "upfront"}
      ]
    }"#;

    fn with(patch: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_str(EXAMPLE).unwrap();
        patch(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    fn field_error(bytes: &[u8]) -> FieldError {
        match ExecutionDocument::from_json(bytes) {
            Err(DocumentError::Field(e)) => e,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    fn invalid(bytes: &[u8]) -> Vec<FieldError> {
        match ExecutionDocument::from_json(bytes) {
            Err(DocumentError::Invalid(e)) => e,
            other => panic!("expected validation errors, got {other:?}"),
        }
    }

    #[test]
    fn the_design_example_decodes() {
        let doc = ExecutionDocument::from_json(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(doc.recommendations.len(), 4);
        assert_eq!(doc.lineage_key().as_str(), "exec-2026-11-28-0001");
        assert_eq!(doc.recommendations[0].service, Service::Ec2);
        assert_eq!(doc.recommendations[1].units(), 1);
    }

    #[test]
    fn unknown_field_names_its_path() {
        let e = field_error(&with(|v| v["recommendations"][1]["colour"] = "red".into()));
        assert_eq!(e.path, "recommendations[1].colour");
        assert!(e.message.contains("unknown field `colour`"), "{e}");
    }

    #[test]
    fn wrong_type_names_its_path() {
        let e = field_error(&with(|v| v["recommendations"][0]["count"] = "two".into()));
        assert_eq!(e.path, "recommendations[0].count");
        assert!(e.message.contains("invalid type"), "{e}");
    }

    #[test]
    fn unknown_service_term_and_payment_list_the_expected_values() {
        let e = field_error(&with(|v| {
            v["recommendations"][0]["service"] = "lambda".into()
        }));
        assert_eq!(e.path, "recommendations[0].service");
        assert!(e.message.contains("savings-plans"), "{e}");
        let e = field_error(&with(|v| v["recommendations"][2]["term"] = "2y".into()));
        assert_eq!(e.path, "recommendations[2].term");
        assert!(e.message.contains("1y"), "{e}");
        let e = field_error(&with(|v| {
            v["recommendations"][2]["payment"] = "later".into()
        }));
        assert_eq!(e.path, "recommendations[2].payment");
    }

    #[test]
    fn missing_required_field_is_reported() {
        let e = field_error(&with(|v| {
            v.as_object_mut().unwrap().remove("approved_by");
        }));
        assert!(e.message.contains("missing field `approved_by`"), "{e}");
    }

    #[test]
    fn count_below_one_and_bad_payment_for_provider_are_both_reported() {
        let errors = invalid(&with(|v| {
            v["recommendations"][0]["count"] = 0.into();
            v["recommendations"][3]["payment"] = "all-upfront".into();
        }));
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["recommendations[0].count", "recommendations[3].payment"]
        );
        assert!(errors[1].message.contains("upfront or monthly"));
    }

    #[test]
    fn empty_recommendation_list_is_rejected() {
        let errors = invalid(&with(|v| v["recommendations"] = serde_json::json!([])));
        assert_eq!(errors[0].path, "recommendations");
    }

    #[test]
    fn service_must_belong_to_provider() {
        let errors = invalid(&with(|v| v["recommendations"][3]["service"] = "rds".into()));
        assert_eq!(errors[0].path, "recommendations[3].service");
        assert!(errors[0].message.contains("aws service"), "{}", errors[0]);
    }

    #[test]
    fn azure_search_is_refused_with_the_reason() {
        let errors = invalid(&with(|v| {
            v["recommendations"][3]["service"] = "search".into();
            v["recommendations"][3]["resource_type"] = "Standard_S1".into();
        }));
        assert_eq!(errors[0].path, "recommendations[3].service");
        assert!(
            errors[0].message.contains("no value for Azure AI Search"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn an_opensearch_offering_id_must_be_a_guid() {
        let opensearch = |id: &str| {
            let id = id.to_owned();
            with(move |v| {
                v["recommendations"][0] = serde_json::json!({
                    "provider": "aws", "service": "opensearch", "account": "123456789012",
                    "region": "us-east-1", "resource_type": "r6g.large.search", "count": 1,
                    "term": "1y", "payment": "all-upfront", "offering_id": id});
            })
        };
        let errors = invalid(&opensearch("offering-1"));
        assert_eq!(errors[0].path, "recommendations[0].offering_id");
        assert!(errors[0].message.contains("GUID"), "{}", errors[0]);
        ExecutionDocument::from_json(&opensearch("1f14354c-dc12-4c8d-8090-6f295a3a34aa"))
            .expect("a GUID is accepted");
    }

    #[test]
    fn database_savings_plans_are_a_plan_type() {
        let doc = ExecutionDocument::from_json(&with(|v| {
            v["recommendations"][1]["plan_type"] = "database".into();
        }))
        .unwrap();
        assert_eq!(doc.recommendations[1].plan_type, Some(PlanType::Database));
    }

    #[test]
    fn service_specific_requirements() {
        let errors = invalid(&with(|v| {
            v["recommendations"][2]
                .as_object_mut()
                .unwrap()
                .remove("engine");
            v["recommendations"][1]["region"] = "us-east-1".into();
            v["recommendations"][0]["multi_az"] = true.into();
        }));
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"recommendations[2].engine"), "{paths:?}");
        assert!(paths.contains(&"recommendations[1].region"), "{paths:?}");
        assert!(paths.contains(&"recommendations[0].multi_az"), "{paths:?}");
    }

    #[test]
    fn negative_count_is_a_type_error() {
        let e = field_error(&with(|v| v["recommendations"][0]["count"] = (-1).into()));
        assert_eq!(e.path, "recommendations[0].count");
    }

    #[test]
    fn syntax_errors_and_size_limit() {
        assert!(matches!(
            ExecutionDocument::from_json(b"{\"execution_id\": "),
            Err(DocumentError::Syntax { .. })
        ));
        assert!(matches!(
            ExecutionDocument::from_json(b"\xff\xfe"),
            Err(DocumentError::NotUtf8(0))
        ));
        let big = vec![b' '; MAX_DOCUMENT_BYTES + 1];
        assert!(matches!(
            ExecutionDocument::from_json(&big),
            Err(DocumentError::TooLarge { .. })
        ));
    }

    #[test]
    fn canonical_form_makes_the_default_lineage_explicit() {
        let doc = ExecutionDocument::from_json(EXAMPLE.as_bytes()).unwrap();
        let canonical = doc.canonical();
        assert_eq!(
            canonical.idempotency_key.as_ref().map(|k| k.as_str()),
            Some("exec-2026-11-28-0001")
        );
        assert_eq!(canonical.canonical(), canonical);
    }

    /// Arbitrary JSON values, for structure-aware fuzzing of the decoder.
    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(|f| serde_json::json!(f)),
            ".{0,20}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-z_]{1,12}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let _ = ExecutionDocument::from_json(&bytes);
        }

        #[test]
        fn decoding_a_mutated_valid_document_never_panics(
            field in proptest::sample::select(vec![
                "execution_id", "idempotency_key", "approved_by", "source", "recommendations",
                "provider", "service", "account", "region", "resource_type", "count", "term",
                "payment", "platform", "offering_class", "engine", "multi_az", "plan_type",
                "commitment_usd_per_hour", "offering_id", "max_upfront_usd", "extra",
            ]),
            index in 0usize..4,
            value in json_value(),
        ) {
            let bytes = with(|v| {
                if ["execution_id", "idempotency_key", "approved_by", "source", "recommendations", "extra"].contains(&field) {
                    v[field] = value.clone();
                } else {
                    v["recommendations"][index][field] = value.clone();
                }
            });
            match ExecutionDocument::from_json(&bytes) {
                // Whatever is accepted must be internally valid and re-serialise losslessly.
                Ok(doc) => {
                    proptest::prop_assert!(doc.validate().is_ok());
                    let again = ExecutionDocument::from_json(&serde_json::to_vec(&doc).unwrap()).unwrap();
                    proptest::prop_assert_eq!(again, doc);
                }
                // Whatever is refused says where, unless it is not JSON at all.
                Err(e) => {
                    let located = !e.field_errors().is_empty() || matches!(e, DocumentError::Syntax { .. });
                    proptest::prop_assert!(located, "error without a location: {}", e);
                }
            }
        }
    }
}
