//! The checks serde cannot make: a document's own fields and, per recommendation, which fields
//! each provider and service needs, allows or forbids and what shape their values take. Every
//! problem found is collected, each with its field path.

use super::{
    DocumentError, ExecutionDocument, FieldError, PlanType, Provider, Recommendation, Service,
    MAX_RECOMMENDATIONS,
};

impl ExecutionDocument {
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
}

fn plan_type_name(plan: Option<PlanType>) -> &'static str {
    match plan {
        Some(PlanType::Compute) | None => "compute",
        Some(PlanType::Ec2Instance) => "ec2-instance",
        Some(PlanType::Sagemaker) => "sagemaker",
        Some(PlanType::Database) => "database",
    }
}
