//! The built-in catalog: a small deterministic set of offerings in every region, priced as the
//! on-demand rate × a term and payment discount (the table in the [`catalog`](super) docs).

use super::{usd, AzureSku, Catalog, PaymentOption, ReservationOffering, SavingsPlanOffering};
use super::{ONE_YEAR, THREE_YEARS};

impl Catalog {
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
    fn prices_split_the_same_total() {
        let all = priced("x", 0.1, PaymentOption::AllUpfront, ONE_YEAR);
        let none = priced("x", 0.1, PaymentOption::NoUpfront, ONE_YEAR);
        assert_eq!(all.recurring_hourly, 0.0);
        assert_eq!(none.fixed_price, 0.0);
        assert!(all.fixed_price > 0.0 && none.recurring_hourly > 0.0);
    }
}
