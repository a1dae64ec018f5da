//! One recommendation's wire form and how logs and tables describe it; which fields each
//! service needs or forbids is checked in `validate.rs`.

use serde::{Deserialize, Serialize};

use super::{OfferingClass, Payment, PlanType, Provider, Service, Term};

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

impl Recommendation {
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
