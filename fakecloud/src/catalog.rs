//! Offering catalogs: a small deterministic built-in one, or one loaded from a JSON file.
//!
//! The same catalog is offered in every region (unless an entry lists `regions`); offering IDs are
//! derived from the region and the offering's attributes, so they are stable across runs and
//! differ between regions, like the real ones. Prices are per unit: a purchase of `count` units
//! costs `fixed_price × count` upfront plus `recurring_hourly × count` per hour.
//!
//! The built-in catalog, in every region, each for 1 and 3 years × All / Partial / No Upfront:
//!
//! | Service | Types | Products |
//! |---|---|---|
//! | EC2 | t3.medium, m5.large, m5.xlarge, c5.large, r5.large | Linux/UNIX, Windows × standard, convertible |
//! | RDS | db.t4g.medium, db.m6g.large, db.r6g.large, db.r6g.xlarge | postgresql, mysql × Multi-AZ or not |
//! | ElastiCache | cache.t4g.medium, cache.m6g.large, cache.r6g.large | redis, valkey, memcached |
//! | MemoryDB | db.t4g.small, db.r6g.large, db.r6g.xlarge | — |
//! | OpenSearch | m6g.large.search, r6g.large.search, c6g.large.search | — |
//! | Redshift | dc2.large, ra3.xlplus, ra3.4xlarge | — |
//! | Savings Plans | Compute; EC2Instance m5/c5/r5 in us-east-1, us-west-2, eu-west-1; SageMaker | USD |
//! | Azure (P1Y, P3Y) | VirtualMachines Standard_B2s/D2s_v5/D4s_v5/E2s_v5, SqlDatabases SQLDB_GP/BC_Compute_Gen5, RedisCache Premium_P1/P2, CosmosDb Cosmos_DB_100_RU_S | any location |
//!
//! A reservation costs the on-demand rate × a discount (1 y: 60/62/66 %, 3 y: 40/42/46 % for
//! All/Partial/No Upfront; convertible +15 %) × the term's hours, split into upfront and hourly
//! parts by the payment option. `GET /_fakecloud/catalog` dumps the active catalog as JSON.

use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::protocol::AwsService;

/// Seconds in a one-year term.
pub const ONE_YEAR: i64 = 31_536_000;
/// Seconds in a three-year term.
pub const THREE_YEARS: i64 = 94_608_000;

/// Every offering fakecloud sells.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// EC2 Reserved Instances.
    #[serde(default)]
    pub ec2: Vec<ReservationOffering>,
    /// RDS reserved DB instances.
    #[serde(default)]
    pub rds: Vec<ReservationOffering>,
    /// ElastiCache reserved cache nodes.
    #[serde(default)]
    pub elasticache: Vec<ReservationOffering>,
    /// MemoryDB reserved nodes.
    #[serde(default)]
    pub memorydb: Vec<ReservationOffering>,
    /// OpenSearch reserved instances.
    #[serde(default)]
    pub opensearch: Vec<ReservationOffering>,
    /// Redshift reserved nodes.
    #[serde(default)]
    pub redshift: Vec<ReservationOffering>,
    /// Savings Plans offerings (global; EC2 Instance plans name their region).
    #[serde(default)]
    pub savings_plans: Vec<SavingsPlanOffering>,
    /// Azure reservation SKUs.
    #[serde(default)]
    pub azure: Vec<AzureSku>,
}

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
    /// Term in seconds ([`ONE_YEAR`] or [`THREE_YEARS`]).
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

/// An Azure reservation SKU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureSku {
    /// Microsoft.Capacity `reservedResourceType` (`VirtualMachines`, …).
    pub reserved_resource_type: String,
    /// `sku.name` (`Standard_D2s_v5`).
    pub sku: String,
    /// `P1Y` or `P3Y`.
    pub term: String,
    /// Price of one unit for the whole term (the same total for `Upfront` and `Monthly`).
    pub price: f64,
    /// Currency code.
    #[serde(default = "usd")]
    pub currency: String,
    /// Locations where it is sold (default: every location).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locations: Option<Vec<String>>,
}

fn usd() -> String {
    "USD".to_string()
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
    /// Loads a catalog from a JSON file (missing sections are empty).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading catalog {}", path.display()))?;
        let mut de = serde_json::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(&mut de)
            .with_context(|| format!("parsing catalog {}", path.display()))
    }

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

    /// The offerings of `service` sold in `region`, in catalog order. For EC2, each regional
    /// offering is followed by one zonal offering per Availability Zone at the same price, as
    /// `DescribeReservedInstancesOfferings` lists them when no zone is asked for (the model's
    /// `scope` is `Region | Availability Zone`).
    pub fn offers(&self, service: AwsService, region: &str) -> Vec<Offer<'_>> {
        let mut offers = Vec::new();
        for o in self.reservations(service).iter().filter(|o| {
            o.regions
                .as_ref()
                .is_none_or(|r| r.iter().any(|x| x == region))
        }) {
            let id = offering_id(service, region, o);
            offers.push(Offer {
                id: id.clone(),
                region: region.to_string(),
                offering: o,
                zone: None,
            });
            if service == AwsService::Ec2 {
                for suffix in ZONE_SUFFIXES {
                    let zone = format!("{region}{suffix}");
                    offers.push(Offer {
                        id: derived_id(&[&id, &zone]),
                        region: region.to_string(),
                        offering: o,
                        zone: Some(zone),
                    });
                }
            }
        }
        offers
    }

    /// The offering with this ID in `region`.
    pub fn offer(&self, service: AwsService, region: &str, id: &str) -> Option<Offer<'_>> {
        self.offers(service, region)
            .into_iter()
            .find(|o| o.id == id)
    }

    /// Savings Plans offerings with their IDs.
    pub fn savings_plans(&self) -> Vec<(String, &SavingsPlanOffering)> {
        self.savings_plans
            .iter()
            .map(|o| (o.id.clone().unwrap_or_else(|| savings_plan_id(o)), o))
            .collect()
    }

    /// The Azure SKU for a purchase request, matched case-insensitively like ARM does.
    pub fn azure_sku(
        &self,
        resource_type: &str,
        sku: &str,
        term: &str,
        location: &str,
    ) -> Option<&AzureSku> {
        self.azure.iter().find(|s| {
            s.reserved_resource_type.eq_ignore_ascii_case(resource_type)
                && s.sku.eq_ignore_ascii_case(sku)
                && s.term.eq_ignore_ascii_case(term)
                && s.locations
                    .as_ref()
                    .is_none_or(|l| l.iter().any(|x| x.eq_ignore_ascii_case(location)))
        })
    }

    /// The built-in catalog (see the module documentation of `fakecloud` for a summary).
    pub fn builtin() -> Self {
        Self {
            ec2: ec2_offerings(),
            rds: rds_offerings(),
            elasticache: simple_offerings(
                &[
                    ("cache.t4g.medium", 0.065),
                    ("cache.m6g.large", 0.149),
                    ("cache.r6g.large", 0.206),
                ],
                &[("redis", 1.0), ("valkey", 0.8), ("memcached", 1.0)],
            ),
            memorydb: simple_offerings(
                &[
                    ("db.t4g.small", 0.046),
                    ("db.r6g.large", 0.309),
                    ("db.r6g.xlarge", 0.618),
                ],
                &[],
            ),
            opensearch: simple_offerings(
                &[
                    ("m6g.large.search", 0.128),
                    ("r6g.large.search", 0.167),
                    ("c6g.large.search", 0.113),
                ],
                &[],
            ),
            redshift: simple_offerings(
                &[
                    ("dc2.large", 0.25),
                    ("ra3.xlplus", 1.086),
                    ("ra3.4xlarge", 3.26),
                ],
                &[],
            ),
            savings_plans: savings_plan_offerings(),
            azure: azure_skus(),
        }
    }
}

/// A UUID-shaped ID derived from `parts`, stable across runs.
pub fn derived_id(parts: &[&str]) -> String {
    let digest = Sha256::digest(parts.join("|").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
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

/// Share of the on-demand cost a reservation costs, by term and payment option.
fn discount(duration: i64, payment: PaymentOption) -> f64 {
    match (duration == THREE_YEARS, payment) {
        (false, PaymentOption::NoUpfront) => 0.66,
        (false, PaymentOption::PartialUpfront) => 0.62,
        (false, PaymentOption::AllUpfront) => 0.60,
        (true, PaymentOption::NoUpfront) => 0.46,
        (true, PaymentOption::PartialUpfront) => 0.42,
        (true, PaymentOption::AllUpfront) => 0.40,
    }
}

fn round_to(value: f64, decimals: i32) -> f64 {
    let factor = 10f64.powi(decimals);
    (value * factor).round() / factor
}

/// Splits the term's total cost into upfront and hourly parts per the payment option.
fn priced(
    resource_type: &str,
    hourly_on_demand: f64,
    payment: PaymentOption,
    duration: i64,
) -> ReservationOffering {
    let hours = (duration / 3600) as f64;
    let total = round_to(hourly_on_demand * discount(duration, payment) * hours, 2);
    let (fixed, recurring) = match payment {
        PaymentOption::AllUpfront => (total, 0.0),
        PaymentOption::PartialUpfront => {
            let fixed = round_to(total / 2.0, 2);
            (fixed, round_to((total - fixed) / hours, 6))
        }
        PaymentOption::NoUpfront => (0.0, round_to(total / hours, 6)),
    };
    ReservationOffering {
        resource_type: resource_type.to_string(),
        product_description: None,
        offering_class: None,
        multi_az: None,
        payment_option: payment,
        duration_seconds: duration,
        fixed_price: fixed,
        usage_price: 0.0,
        recurring_hourly: recurring,
        currency: usd(),
        id: None,
        regions: None,
    }
}

fn ec2_offerings() -> Vec<ReservationOffering> {
    let types = [
        ("t3.medium", 0.0416),
        ("m5.large", 0.096),
        ("m5.xlarge", 0.192),
        ("c5.large", 0.085),
        ("r5.large", 0.126),
    ];
    let platforms = [("Linux/UNIX", 1.0), ("Windows", 1.5)];
    let mut out = Vec::new();
    for (ty, rate) in types {
        for (platform, platform_factor) in platforms {
            for (class, class_factor) in [("standard", 1.0), ("convertible", 1.15)] {
                for duration in [ONE_YEAR, THREE_YEARS] {
                    for payment in PaymentOption::ALL {
                        let mut o =
                            priced(ty, rate * platform_factor * class_factor, payment, duration);
                        o.product_description = Some(platform.to_string());
                        o.offering_class = Some(class.to_string());
                        out.push(o);
                    }
                }
            }
        }
    }
    out
}

fn rds_offerings() -> Vec<ReservationOffering> {
    let classes = [
        ("db.t4g.medium", 0.065),
        ("db.m6g.large", 0.152),
        ("db.r6g.large", 0.225),
        ("db.r6g.xlarge", 0.45),
    ];
    let engines = [("postgresql", 1.06), ("mysql", 1.0)];
    let mut out = Vec::new();
    for (class, rate) in classes {
        for (engine, engine_factor) in engines {
            for multi_az in [false, true] {
                for duration in [ONE_YEAR, THREE_YEARS] {
                    for payment in PaymentOption::ALL {
                        let az_factor = if multi_az { 2.0 } else { 1.0 };
                        let mut o =
                            priced(class, rate * engine_factor * az_factor, payment, duration);
                        o.product_description = Some(engine.to_string());
                        o.multi_az = Some(multi_az);
                        out.push(o);
                    }
                }
            }
        }
    }
    out
}

/// Types × products × terms × payment options; an empty `products` means no product description.
fn simple_offerings(types: &[(&str, f64)], products: &[(&str, f64)]) -> Vec<ReservationOffering> {
    let products: Vec<(Option<&str>, f64)> = if products.is_empty() {
        vec![(None, 1.0)]
    } else {
        products.iter().map(|(p, f)| (Some(*p), *f)).collect()
    };
    let mut out = Vec::new();
    for (ty, rate) in types {
        for (product, factor) in &products {
            for duration in [ONE_YEAR, THREE_YEARS] {
                for payment in PaymentOption::ALL {
                    let mut o = priced(ty, rate * factor, payment, duration);
                    o.product_description = product.map(str::to_string);
                    out.push(o);
                }
            }
        }
    }
    out
}

fn savings_plan_offerings() -> Vec<SavingsPlanOffering> {
    let mut out = Vec::new();
    let mut push = |plan_type: &str,
                    family: Option<&str>,
                    region: Option<&str>,
                    products: &[&str],
                    currency: &str| {
        for duration in [ONE_YEAR, THREE_YEARS] {
            for payment in PaymentOption::ALL {
                out.push(SavingsPlanOffering {
                    plan_type: plan_type.to_string(),
                    payment_option: payment,
                    duration_seconds: duration,
                    currency: currency.to_string(),
                    instance_family: family.map(str::to_string),
                    region: region.map(str::to_string),
                    product_types: products.iter().map(|p| p.to_string()).collect(),
                    id: None,
                });
            }
        }
    };
    // Every currency of the model's `CurrencyCode` (CNY, USD, EUR) is sold; buyonce asks for USD.
    for currency in ["USD", "EUR", "CNY"] {
        push(
            "Compute",
            None,
            None,
            &["EC2", "Fargate", "Lambda"],
            currency,
        );
    }
    for region in ["us-east-1", "us-west-2", "eu-west-1"] {
        for family in ["m5", "c5", "r5"] {
            push("EC2Instance", Some(family), Some(region), &["EC2"], "USD");
        }
    }
    push("SageMaker", None, None, &["SageMaker"], "USD");
    push(
        "Database",
        None,
        None,
        &["RDS", "DynamoDB", "ElastiCache", "DocDB", "Neptune"],
        "USD",
    );
    out
}

fn azure_skus() -> Vec<AzureSku> {
    let skus = [
        ("VirtualMachines", "Standard_B2s", 0.0416),
        ("VirtualMachines", "Standard_D2s_v5", 0.096),
        ("VirtualMachines", "Standard_D4s_v5", 0.192),
        ("VirtualMachines", "Standard_E2s_v5", 0.126),
        ("SqlDatabases", "SQLDB_GP_Compute_Gen5", 0.2525),
        ("SqlDatabases", "SQLDB_BC_Compute_Gen5", 0.6789),
        ("RedisCache", "Premium_P1", 0.555),
        ("RedisCache", "Premium_P2", 1.11),
        ("CosmosDb", "Cosmos_DB_100_RU_S", 0.008),
    ];
    let mut out = Vec::new();
    for (resource_type, sku, hourly) in skus {
        for (term, hours, share) in [("P1Y", 8760.0, 0.62), ("P3Y", 26280.0, 0.40)] {
            out.push(AzureSku {
                reserved_resource_type: resource_type.to_string(),
                sku: sku.to_string(),
                term: term.to_string(),
                price: round_to(hourly * hours * share, 2),
                currency: usd(),
                locations: None,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ec2_worker_query_matches_one_regional_and_one_offering_per_zone() {
        let catalog = Catalog::builtin();
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
        let catalog = Catalog::builtin();
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

    #[test]
    fn prices_split_the_same_total() {
        let all = priced("x", 0.1, PaymentOption::AllUpfront, ONE_YEAR);
        let none = priced("x", 0.1, PaymentOption::NoUpfront, ONE_YEAR);
        assert_eq!(all.recurring_hourly, 0.0);
        assert_eq!(none.fixed_price, 0.0);
        assert!(all.fixed_price > 0.0 && none.recurring_hourly > 0.0);
    }

    #[test]
    fn builtin_catalog_survives_json() {
        let catalog = Catalog::builtin();
        let json = serde_json::to_string(&catalog).unwrap();
        assert_eq!(serde_json::from_str::<Catalog>(&json).unwrap(), catalog);
    }
}
