//! The awsQuery side of the reservation services (RDS, ElastiCache, Redshift): how the protocol
//! carries their requests ([`Query`]), the requests RDS and ElastiCache share under other
//! parameter names ([`QueryById`]), and their answers' page shape.

use std::collections::BTreeMap;

use axum::response::Response;

use super::{count, offer, Criteria, Key, Lookup, Purchase, ReservedService, Wire};
use crate::aws::Call;
use crate::ledger::Store;
use crate::protocol::{
    duration_param, invalid_parameter, max_records, missing_parameter, query_success,
    unknown_query_operation, ApiError, AwsService, Params,
};
use crate::xml::XmlWriter;

/// awsQuery (RDS, ElastiCache, Redshift): form parameters, pages by `Marker`.
pub struct Query;

impl Wire for Query {
    type Input<'a> = &'a Params;

    fn input<'a>(call: &'a Call<'_>) -> Result<&'a Params, ApiError> {
        Ok(call.params)
    }

    fn page_token<'i>(input: &'i &Params) -> Result<Option<&'i str>, ApiError> {
        Ok(input.get("Marker"))
    }

    fn bad_page_token() -> ApiError {
        invalid_parameter("Invalid marker")
    }

    fn unknown_operation(operation: &str) -> ApiError {
        unknown_query_operation(operation)
    }
}

/// The awsQuery requests of a service whose caller may choose the reservation ID (RDS,
/// ElastiCache): the same requests under other parameter names.
pub struct QueryById {
    /// The offering ID (`ReservedDBInstancesOfferingId`).
    pub offering_id: &'static str,
    /// The caller's reservation ID (`ReservedDBInstanceId`).
    pub reservation_id: &'static str,
    /// Units to buy (`DBInstanceCount`).
    pub count: &'static str,
    /// The instance class or node type filter (`DBInstanceClass`).
    pub resource_type: &'static str,
    /// Whether `MultiAZ` is a filter.
    pub multi_az: bool,
}

impl QueryById {
    /// Reads a request for offerings.
    pub fn offerings_lookup(&self, p: &Params) -> Result<Lookup, ApiError> {
        Ok(Lookup {
            criteria: self.criteria(p)?,
            page_size: max_records(p)?,
            id: p.get(self.offering_id).map(str::to_string),
        })
    }

    /// Reads a purchase request; reusing a reservation ID will be `taken(id)`.
    pub fn purchase<'c, S: ReservedService>(
        &self,
        call: &'c Call<'_>,
        p: &Params,
        taken: fn(&str) -> ApiError,
    ) -> Result<Purchase<'c>, ApiError> {
        let offering_id = p.require(self.offering_id, missing_parameter)?;
        let count = count(p.int(self.count, invalid_parameter)?, || {
            invalid_parameter(format!("{} must be at least 1", self.count))
        })?;
        let tags = query_tags(p)?;
        Ok(Purchase {
            offer: offer::<S>(call, offering_id)?,
            count,
            key: Key::Id {
                chosen: self.reservation_id(p),
                taken,
            },
            tags,
        })
    }

    /// Reads a request for reservations.
    pub fn reservations_lookup(&self, p: &Params) -> Result<Lookup, ApiError> {
        let criteria = self.criteria(p)?;
        Ok(Lookup {
            page_size: max_records(p)?,
            id: self.reservation_id(p),
            criteria: Criteria {
                offering_id: p.get(self.offering_id).map(str::to_string),
                ..criteria
            },
        })
    }

    fn reservation_id(&self, p: &Params) -> Option<String> {
        p.get(self.reservation_id)
            .filter(|id| !id.is_empty())
            .map(str::to_string)
    }

    /// The filters both Describe calls take: the resource type, `Duration`,
    /// `ProductDescription`, `OfferingType` and (RDS) `MultiAZ`.
    fn criteria(&self, p: &Params) -> Result<Criteria, ApiError> {
        let duration = match p.get("Duration") {
            None => None,
            Some(d) => Some(
                duration_param(d)
                    .ok_or_else(|| invalid_parameter(format!("Invalid duration: {d}")))?,
            ),
        };
        Ok(Criteria {
            resource_type: p.get(self.resource_type).map(str::to_string),
            duration,
            product: p.get("ProductDescription").map(str::to_string),
            offering_type: p.get("OfferingType").map(str::to_string),
            multi_az: if self.multi_az {
                p.bool("MultiAZ", invalid_parameter)?
            } else {
                None
            },
            ..Criteria::default()
        })
    }
}

/// The awsQuery tag list `Tags.Tag.N.Key` / `.Value` (RDS, ElastiCache).
fn query_tags(p: &Params) -> Result<BTreeMap<String, String>, ApiError> {
    let mut tags = BTreeMap::new();
    for tag in p.structs("Tags.Tag") {
        let key = tag
            .get("Key")
            .filter(|k| !k.is_empty())
            .ok_or_else(|| invalid_parameter("Tag keys must not be empty"))?;
        tags.insert(
            key.to_string(),
            tag.get("Value").unwrap_or_default().to_string(),
        );
    }
    Ok(tags)
}

/// The reservation IDs RDS and ElastiCache mint: `ri-<UTC time>-<six digits>`.
pub fn dated_id(call: &Call<'_>, store: &mut Store) -> String {
    format!(
        "ri-{}-{:06}",
        call.now.format("%Y-%m-%d-%H-%M-%S"),
        store.number(1_000_000)
    )
}

/// An awsQuery page: the `Marker` of the next page, then the list `list` with `item` written
/// for each entry.
pub fn query_page<T>(
    call: &Call<'_>,
    service: AwsService,
    list: &str,
    next: Option<String>,
    entries: &[T],
    item: impl Fn(&mut XmlWriter, &T),
) -> Response {
    query_success(service, call.operation, call.request_id, |w| {
        w.opt_leaf("Marker", next.as_deref());
        w.elem(list, |w| {
            for entry in entries {
                item(w, entry);
            }
        });
    })
}
