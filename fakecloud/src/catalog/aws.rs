//! AWS catalog entries: reservation offerings (EC2, RDS, ElastiCache, MemoryDB, OpenSearch,
//! Redshift) and Savings Plans offerings, and the offers they make in a region under stable,
//! derived IDs.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use serde::{Deserialize, Serialize};

use super::{derived_id, usd, Catalog};
use crate::protocol::AwsService;

/// An AWS reservation offering (EC2, RDS, ElastiCache, MemoryDB, OpenSearch, Redshift).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReservationOffering {
    /// Instance type / DB instance class / node type (`m5.large`, `db.r6g.large`, …).
    pub resource_type: String,
    /// EC2 platform (`Linux/UNIX`), RDS engine (`postgresql`), ElastiCache engine (`redis`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_description: Option<String>,
    /// EC2 only: `standard` or `convertible`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offering_class: Option<String>,
    /// RDS only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_az: Option<bool>,
    /// Payment option.
    pub payment_option: PaymentOption,
    /// Term in seconds ([`ONE_YEAR`](super::ONE_YEAR) or [`THREE_YEARS`](super::THREE_YEARS)).
    pub duration_seconds: i64,
    /// Upfront price per unit.
    pub fixed_price: f64,
    /// Hourly usage price per unit (0 for current-generation offerings).
    #[serde(default)]
    pub usage_price: f64,
    /// Hourly recurring charge per unit.
    #[serde(default)]
    pub recurring_hourly: f64,
    /// Currency code.
    #[serde(default = "usd")]
    pub currency: String,
    /// Fixed offering ID (default: derived from region and attributes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Regions where it is offered (default: every region).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regions: Option<Vec<String>>,
}

/// A Savings Plans offering. The price is the commitment the buyer chooses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavingsPlanOffering {
    /// `Compute`, `EC2Instance` or `SageMaker`.
    pub plan_type: String,
    /// Payment option.
    pub payment_option: PaymentOption,
    /// Term in seconds.
    pub duration_seconds: i64,
    /// Currency code.
    #[serde(default = "usd")]
    pub currency: String,
    /// EC2 Instance plans: instance family (`m5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_family: Option<String>,
    /// EC2 Instance plans: region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Product types covered (`EC2`, `Fargate`, `Lambda`, `SageMaker`).
    #[serde(default)]
    pub product_types: Vec<String>,
    /// Fixed offering ID (default: derived from the attributes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// AWS payment options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PaymentOption {
    /// Everything upfront.
    #[serde(rename = "All Upfront")]
    AllUpfront,
    /// Half upfront, the rest hourly.
    #[serde(rename = "Partial Upfront")]
    PartialUpfront,
    /// Everything hourly.
    #[serde(rename = "No Upfront")]
    NoUpfront,
}

impl PaymentOption {
    /// All options.
    pub const ALL: [PaymentOption; 3] = [Self::AllUpfront, Self::PartialUpfront, Self::NoUpfront];

    /// `All Upfront` etc.: EC2, RDS, ElastiCache, MemoryDB, Redshift and Savings Plans.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllUpfront => "All Upfront",
            Self::PartialUpfront => "Partial Upfront",
            Self::NoUpfront => "No Upfront",
        }
    }

    /// `ALL_UPFRONT` etc.: OpenSearch.
    pub fn as_opensearch(self) -> &'static str {
        match self {
            Self::AllUpfront => "ALL_UPFRONT",
            Self::PartialUpfront => "PARTIAL_UPFRONT",
            Self::NoUpfront => "NO_UPFRONT",
        }
    }

    /// Parses the `All Upfront` spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// An offering as sold in one region, with its ID.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer<'a> {
    /// Offering ID in this region.
    pub id: String,
    /// Region.
    pub region: String,
    /// The catalog entry.
    pub offering: &'a ReservationOffering,
    /// EC2: the Availability Zone of a zonal offering (`None`: regional).
    pub zone: Option<String>,
}

/// The Availability Zones fakecloud sells zonal EC2 offerings in: `<region>a`, `b`, `c`.
pub const ZONE_SUFFIXES: [&str; 3] = ["a", "b", "c"];

impl Catalog {
    /// The catalog entries of an AWS reservation service.
    pub fn reservations(&self, service: AwsService) -> &[ReservationOffering] {
        match service {
            AwsService::Ec2 => &self.ec2,
            AwsService::Rds => &self.rds,
            AwsService::ElastiCache => &self.elasticache,
            AwsService::MemoryDb => &self.memorydb,
            AwsService::OpenSearch => &self.opensearch,
            AwsService::Redshift => &self.redshift,
            AwsService::SavingsPlans | AwsService::Sts => &[],
        }
    }

    /// The offers of `service` in `region`, in catalog order. For EC2, each regional offering
    /// is followed by one zonal offering per Availability Zone at the same price, as
    /// `DescribeReservedInstancesOfferings` lists them when no zone is asked for (the model's
    /// `scope` is `Region | Availability Zone`).
    fn derive_offers(&self, service: AwsService, region: &str) -> Regional {
        let mut offers = Vec::new();
        for (entry, o) in self
            .reservations(service)
            .iter()
            .enumerate()
            .filter(|(_, o)| {
                o.regions
                    .as_ref()
                    .is_none_or(|r| r.iter().any(|x| x == region))
            })
        {
            let id = offering_id(service, region, o);
            if service == AwsService::Ec2 {
                offers.push(OfferKey {
                    entry,
                    id: id.clone(),
                    zone: None,
                });
                for suffix in ZONE_SUFFIXES {
                    let zone = format!("{region}{suffix}");
                    offers.push(OfferKey {
                        entry,
                        id: derived_id(&[&id, &zone]),
                        zone: Some(zone),
                    });
                }
            } else {
                offers.push(OfferKey {
                    entry,
                    id,
                    zone: None,
                });
            }
        }
        let mut by_id = HashMap::new();
        for (at, key) in offers.iter().enumerate() {
            // The first offer under an ID wins, as a search in catalog order finds it.
            by_id.entry(key.id.clone()).or_insert(at);
        }
        Regional { offers, by_id }
    }
}

/// The catalog with its offering IDs derived once. An ID is a SHA-256 of an offering's
/// attributes (and region); deriving a whole section's IDs on every purchase and every describe
/// made the catalog a visible share of fakecloud's cost in a bench run.
#[derive(Debug)]
pub struct Offerings {
    catalog: Catalog,
    /// Savings Plans offering IDs, one per `catalog.savings_plans` entry, in order.
    savings_plan_ids: Vec<String>,
    /// Reservation offers per service and region, derived on the region's first lookup (any
    /// region name is accepted, so they cannot all be derived up front).
    regional: RwLock<HashMap<(AwsService, String), Arc<Regional>>>,
}

/// The offers of one service in one region.
#[derive(Debug)]
struct Regional {
    offers: Vec<OfferKey>,
    /// Position in `offers` by offer ID.
    by_id: HashMap<String, usize>,
}

/// An offer without its borrowed catalog entry.
#[derive(Debug)]
struct OfferKey {
    /// Position of the entry in its catalog section.
    entry: usize,
    id: String,
    zone: Option<String>,
}

impl Offerings {
    /// Derives the Savings Plans offering IDs of `catalog`.
    pub fn new(catalog: Catalog) -> Self {
        let savings_plan_ids = catalog
            .savings_plans
            .iter()
            .map(|o| o.id.clone().unwrap_or_else(|| savings_plan_id(o)))
            .collect();
        Self {
            catalog,
            savings_plan_ids,
            regional: RwLock::new(HashMap::new()),
        }
    }

    /// The catalog itself.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The offerings of `service` sold in `region`, in catalog order; EC2's regional offerings
    /// are each followed by their zonal ones.
    pub fn offers(&self, service: AwsService, region: &str) -> Vec<Offer<'_>> {
        let regional = self.regional(service, region);
        regional
            .offers
            .iter()
            .map(|key| self.offer_of(service, region, key))
            .collect()
    }

    /// The offering with this ID in `region`.
    pub fn offer(&self, service: AwsService, region: &str, id: &str) -> Option<Offer<'_>> {
        let regional = self.regional(service, region);
        let key = &regional.offers[*regional.by_id.get(id)?];
        Some(self.offer_of(service, region, key))
    }

    /// Savings Plans offerings with their IDs, in catalog order.
    pub fn savings_plans(&self) -> impl Iterator<Item = (&str, &SavingsPlanOffering)> {
        self.savings_plan_ids
            .iter()
            .map(String::as_str)
            .zip(&self.catalog.savings_plans)
    }

    /// The Savings Plans offering with this ID.
    pub fn savings_plan(&self, id: &str) -> Option<&SavingsPlanOffering> {
        self.savings_plans()
            .find(|(offering_id, _)| *offering_id == id)
            .map(|(_, o)| o)
    }

    fn regional(&self, service: AwsService, region: &str) -> Arc<Regional> {
        let key = (service, region.to_string());
        if let Some(regional) = self
            .regional
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Arc::clone(regional);
        }
        // Derived outside the lock; two first lookups at once derive the same offers twice.
        let derived = Arc::new(self.catalog.derive_offers(service, region));
        let mut regional = self
            .regional
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(regional.entry(key).or_insert(derived))
    }

    fn offer_of(&self, service: AwsService, region: &str, key: &OfferKey) -> Offer<'_> {
        Offer {
            id: key.id.clone(),
            region: region.to_string(),
            offering: &self.catalog.reservations(service)[key.entry],
            zone: key.zone.clone(),
        }
    }
}

fn offering_id(service: AwsService, region: &str, o: &ReservationOffering) -> String {
    if let Some(id) = &o.id {
        return id.clone();
    }
    let multi_az = o.multi_az.map(|m| m.to_string()).unwrap_or_default();
    derived_id(&[
        service.op_prefix(),
        region,
        &o.resource_type,
        o.product_description.as_deref().unwrap_or_default(),
        o.offering_class.as_deref().unwrap_or_default(),
        &multi_az,
        o.payment_option.as_str(),
        &o.duration_seconds.to_string(),
        &o.currency,
    ])
}

fn savings_plan_id(o: &SavingsPlanOffering) -> String {
    derived_id(&[
        "savingsplans",
        &o.plan_type,
        o.instance_family.as_deref().unwrap_or_default(),
        o.region.as_deref().unwrap_or_default(),
        o.payment_option.as_str(),
        &o.duration_seconds.to_string(),
        &o.currency,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ec2_worker_query_matches_one_regional_and_one_offering_per_zone() {
        let catalog = Offerings::new(Catalog::builtin());
        let offers = catalog.offers(AwsService::Ec2, "us-east-1");
        for o in &offers {
            let same: Vec<&Offer<'_>> = offers
                .iter()
                .filter(|x| {
                    x.offering.resource_type == o.offering.resource_type
                        && x.offering.product_description == o.offering.product_description
                        && x.offering.offering_class == o.offering.offering_class
                        && x.offering.payment_option == o.offering.payment_option
                        && x.offering.duration_seconds == o.offering.duration_seconds
                })
                .collect();
            assert_eq!(same.len(), 1 + ZONE_SUFFIXES.len());
            assert_eq!(same.iter().filter(|x| x.zone.is_none()).count(), 1);
        }
    }

    #[test]
    fn ids_are_stable_and_differ_by_region() {
        let catalog = Offerings::new(Catalog::builtin());
        let east = catalog.offers(AwsService::Rds, "us-east-1");
        let west = catalog.offers(AwsService::Rds, "us-west-2");
        assert_eq!(
            east[0].id,
            catalog.offers(AwsService::Rds, "us-east-1")[0].id
        );
        assert_ne!(east[0].id, west[0].id);
        assert!(catalog
            .offer(AwsService::Rds, "us-west-2", &west[3].id)
            .is_some());
        assert!(catalog
            .offer(AwsService::Rds, "us-east-1", &west[3].id)
            .is_none());
    }
}
