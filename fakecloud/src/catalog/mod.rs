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
//!
//! The entries are in `aws.rs` (reservation and Savings Plans offerings, their regional IDs) and
//! `azure.rs` (reservation SKUs); the built-in catalog is in `builtin.rs`.

mod aws;
mod azure;
mod builtin;

use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use aws::{
    Offer, Offerings, PaymentOption, ReservationOffering, SavingsPlanOffering, ZONE_SUFFIXES,
};
pub use azure::AzureSku;

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

fn usd() -> String {
    "USD".to_string()
}

impl Catalog {
    /// Loads a catalog from a JSON file (missing sections are empty).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading catalog {}", path.display()))?;
        let mut de = serde_json::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(&mut de)
            .with_context(|| format!("parsing catalog {}", path.display()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_survives_json() {
        let catalog = Catalog::builtin();
        let json = serde_json::to_string(&catalog).unwrap();
        assert_eq!(serde_json::from_str::<Catalog>(&json).unwrap(), catalog);
    }
}
