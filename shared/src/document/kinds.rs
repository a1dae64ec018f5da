//! The closed vocabularies a recommendation is written in: provider, service, term, payment
//! option, EC2 offering class and Savings Plan type, with their wire spellings and the facts
//! other code asks of them (which provider a service belongs to, whether it buys units).

use std::fmt;

use serde::{Deserialize, Serialize};

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

    pub(super) fn valid_for(self, provider: Provider) -> bool {
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
