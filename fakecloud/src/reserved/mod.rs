//! The flow the AWS reservation services share — RDS, ElastiCache, MemoryDB, OpenSearch and
//! Redshift: list the offerings (one by ID, or filtered and paged), buy one, list or describe
//! what was bought. Duplicate checks, lookup faults, the realism's delayed visibility and page
//! sizes happen here, the same way for all five; each service file says only what is its own
//! through [`ReservedService`] and [`Wire`]: operation, parameter and field names, filters,
//! error codes, and how a purchase is told apart from another ([`Key`]).

use std::collections::BTreeMap;

use axum::response::Response;

use super::aws::Call;
use super::catalog::Offer;
use super::ledger::{Commitment, Detail, Store};
use super::protocol::{paginate, ApiError, AwsService};

mod query;

pub use query::{dated_id, query_page, Query, QueryById};

/// How a protocol carries a reservation service's requests.
pub trait Wire {
    /// A request: form or URL parameters, or a JSON body.
    type Input<'a>;
    /// Reads the request of any operation (before it is dispatched).
    fn input<'a>(call: &'a Call<'_>) -> Result<Self::Input<'a>, ApiError>;
    /// The page token of a Describe request.
    fn page_token<'i>(input: &'i Self::Input<'_>) -> Result<Option<&'i str>, ApiError>;
    /// The answer to a page token fakecloud did not issue.
    fn bad_page_token() -> ApiError;
    /// The answer to an operation the service does not have.
    fn unknown_operation(operation: &str) -> ApiError;
}

/// The request of a service `S`.
pub type Input<'a, S> = <<S as ReservedService>::Wire as Wire>::Input<'a>;

/// What one reservation service does its own way.
pub trait ReservedService {
    /// Catalog section, ledger name, and the scope reservation IDs are unique in.
    const SERVICE: AwsService;
    /// The operation that lists offerings.
    const DESCRIBE_OFFERINGS: &'static str;
    /// The operation that buys one.
    const PURCHASE: &'static str;
    /// The operation that lists reservations.
    const DESCRIBE: &'static str;
    /// Whether reservation IDs compare ignoring ASCII case (RDS, ElastiCache).
    const IDS_IGNORE_CASE: bool = false;
    /// The log message of a purchase.
    const PURCHASED: &'static str;

    /// The wire protocol's way of carrying requests.
    type Wire: Wire;

    /// Answers an operation other than the three.
    fn other_operation(call: &Call<'_>) -> Result<Response, ApiError> {
        Err(Self::Wire::unknown_operation(call.operation))
    }

    /// Reads a request for offerings.
    fn offerings_lookup(input: &Input<'_, Self>) -> Result<Lookup, ApiError>;
    /// The answer to an offering ID that names no offering.
    fn offering_not_found(id: &str) -> ApiError;
    /// Answers with one page of offerings.
    fn offerings_page(call: &Call<'_>, page: &[Offer<'_>], next: Option<String>) -> Response;

    /// Reads a purchase request (its offering found with [`offer`]).
    fn purchase_request<'c>(
        call: &'c Call<'_>,
        input: &Input<'_, Self>,
    ) -> Result<Purchase<'c>, ApiError>;
    /// A reservation ID minted by the service: a random UUID unless the service says otherwise.
    fn new_id(_call: &Call<'_>, store: &mut Store) -> String {
        store.uuid()
    }
    /// The service-specific fields of a new reservation.
    fn detail(_store: &mut Store) -> Detail {
        Detail::Plain
    }
    /// Answers a purchase.
    fn purchased(call: &Call<'_>, reservation: &Commitment) -> Response;

    /// Reads a request for reservations.
    fn reservations_lookup(input: &Input<'_, Self>) -> Result<Lookup, ApiError>;
    /// The answer to a reservation ID that names no reservation (or none visible yet).
    fn reservation_not_found(id: &str) -> ApiError;
    /// Answers with one page of reservations.
    fn reservations_page(call: &Call<'_>, page: &[Commitment], next: Option<String>) -> Response;
}

/// A Describe request, read.
#[derive(Debug, Default)]
pub struct Lookup {
    /// The one offering or reservation asked for; an ID that matches nothing is an error.
    pub id: Option<String>,
    /// The other filters.
    pub criteria: Criteria,
    /// The page size the client asked for.
    pub page_size: usize,
}

/// The filters a Describe call may take; a service leaves unset what it does not take.
#[derive(Debug, Default)]
pub struct Criteria {
    /// Instance class or node type.
    pub resource_type: Option<String>,
    /// Term in seconds.
    pub duration: Option<i64>,
    /// Product description (engine), matched ignoring ASCII case.
    pub product: Option<String>,
    /// Payment option (`OfferingType`).
    pub offering_type: Option<String>,
    /// RDS Multi-AZ.
    pub multi_az: Option<bool>,
    /// Reservations only: bought from this offering.
    pub offering_id: Option<String>,
    /// Reservations only: the RDS lease ID.
    pub lease_id: Option<String>,
}

impl Criteria {
    fn attributes_match(
        &self,
        resource_type: &str,
        duration: i64,
        product: Option<&str>,
        offering_type: &str,
        multi_az: Option<bool>,
    ) -> bool {
        self.resource_type
            .as_deref()
            .is_none_or(|t| t == resource_type)
            && self.duration.is_none_or(|d| d == duration)
            && self
                .product
                .as_deref()
                .is_none_or(|p| product.is_some_and(|x| x.eq_ignore_ascii_case(p)))
            && self
                .offering_type
                .as_deref()
                .is_none_or(|t| t == offering_type)
            && self.multi_az.is_none_or(|m| multi_az == Some(m))
    }

    fn offer_matches(&self, offer: &Offer<'_>) -> bool {
        let o = offer.offering;
        self.attributes_match(
            &o.resource_type,
            o.duration_seconds,
            o.product_description.as_deref(),
            o.payment_option.as_str(),
            o.multi_az,
        )
    }

    fn reservation_matches(&self, r: &Commitment) -> bool {
        self.offering_id
            .as_deref()
            .is_none_or(|o| o == r.offering_id)
            && self
                .lease_id
                .as_deref()
                .is_none_or(|l| matches!(&r.detail, Detail::Rds { lease_id } if lease_id == l))
            && self.attributes_match(
                &r.resource_type,
                r.duration_seconds,
                r.product.as_deref(),
                &r.payment,
                r.multi_az,
            )
    }
}

/// A purchase request, read.
pub struct Purchase<'c> {
    /// The offering bought.
    pub offer: Offer<'c>,
    /// Units bought.
    pub count: u32,
    /// How the purchase is told apart from another.
    pub key: Key,
    /// Tags of the new reservation.
    pub tags: BTreeMap<String, String>,
}

/// How a purchase is told apart from another: what makes a second one a conflict.
pub enum Key {
    /// A reservation ID the caller may choose (else the service mints one), unique per account
    /// and region: reusing it is `taken(id)` (RDS, ElastiCache, MemoryDB).
    Id {
        /// The caller's ID.
        chosen: Option<String>,
        /// The answer to an ID in use.
        taken: fn(&str) -> ApiError,
    },
    /// A name the caller chooses, while the service mints the ID; while `unique`, reusing the
    /// name is `taken(name)` (OpenSearch).
    Name {
        /// The caller's name.
        name: String,
        /// Whether a second reservation under the name is refused.
        unique: bool,
        /// The answer to a name in use.
        taken: fn(&str) -> ApiError,
    },
    /// Nothing: every purchase is a new reservation (Redshift).
    None,
}

/// The offering `id` of the service in the call's region.
pub fn offer<'c, S: ReservedService>(call: &'c Call<'_>, id: &str) -> Result<Offer<'c>, ApiError> {
    call.shared
        .catalog
        .offer(S::SERVICE, call.region, id)
        .ok_or_else(|| S::offering_not_found(id))
}

/// The units to buy: 1 unless `asked`, and at least 1 (else `too_few`).
pub fn count(asked: Option<i64>, too_few: impl FnOnce() -> ApiError) -> Result<u32, ApiError> {
    u32::try_from(asked.unwrap_or(1))
        .ok()
        .filter(|c| *c >= 1)
        .ok_or_else(too_few)
}

/// Answers one call of the reservation service `S`.
pub fn handle<S: ReservedService>(call: &Call<'_>) -> Result<Response, ApiError> {
    let input = S::Wire::input(call)?;
    match call.operation {
        op if op == S::DESCRIBE_OFFERINGS => describe_offerings::<S>(call, &input),
        op if op == S::PURCHASE => purchase::<S>(call, &input),
        op if op == S::DESCRIBE => describe::<S>(call, &input),
        _ => S::other_operation(call),
    }
}

fn describe_offerings<S: ReservedService>(
    call: &Call<'_>,
    input: &Input<'_, S>,
) -> Result<Response, ApiError> {
    let lookup = S::offerings_lookup(input)?;
    let offers: Vec<Offer<'_>> = call
        .shared
        .catalog
        .offers(S::SERVICE, call.region)
        .into_iter()
        .filter(|offer| {
            lookup.id.as_deref().is_none_or(|id| id == offer.id)
                && lookup.criteria.offer_matches(offer)
        })
        .collect();
    if let Some(id) = &lookup.id {
        if offers.is_empty() {
            return Err(S::offering_not_found(id));
        }
    }
    let (page, next) = page::<S, _>(call, input, offers, lookup.page_size)?;
    Ok(S::offerings_page(call, &page, next))
}

fn purchase<S: ReservedService>(
    call: &Call<'_>,
    input: &Input<'_, S>,
) -> Result<Response, ApiError> {
    let Purchase {
        offer,
        count,
        key,
        tags,
    } = S::purchase_request(call, input)?;

    // Check and insert under one lock: concurrent purchases under one key create one reservation.
    let mut store = call.shared.store();
    let (id, handle) = match key {
        Key::Id { chosen, taken } => {
            let id = chosen.unwrap_or_else(|| S::new_id(call, &mut store));
            if with_id::<S>(call, &store, &id).next().is_some() {
                return Err(taken(&id));
            }
            (id.clone(), Some(id))
        }
        Key::Name {
            name,
            unique,
            taken,
        } => {
            let service = S::SERVICE.ledger_name();
            if unique
                && store
                    .with_handle(service, call.account(), &name)
                    .any(|r| r.region == call.region)
            {
                return Err(taken(&name));
            }
            (S::new_id(call, &mut store), Some(name))
        }
        Key::None => (S::new_id(call, &mut store), None),
    };
    let detail = S::detail(&mut store);
    let mut reservation = call.new_reservation(S::SERVICE, &offer, id, count, handle, tags);
    reservation.detail = detail;
    store.insert(reservation.clone());
    drop(store);
    tracing::info!(
        reservation.id = %reservation.id,
        offering.id = %reservation.offering_id,
        count,
        account = %call.account(),
        region = %call.region,
        "{}",
        S::PURCHASED
    );
    Ok(S::purchased(call, &reservation))
}

fn describe<S: ReservedService>(
    call: &Call<'_>,
    input: &Input<'_, S>,
) -> Result<Response, ApiError> {
    let lookup = S::reservations_lookup(input)?;
    let mut found: Vec<Commitment> = {
        let store = call.shared.store();
        let matches = |r: &&Commitment| lookup.criteria.reservation_matches(r);
        match lookup.id.as_deref() {
            Some(id) => with_id::<S>(call, &store, id)
                .filter(matches)
                .cloned()
                .collect(),
            None => in_scope::<S>(call, &store)
                .filter(matches)
                .cloned()
                .collect(),
        }
    };
    if call.faults.lookup_empty {
        found.clear();
    }
    // Eventual consistency (realism): a fresh reservation is not listed yet.
    found.retain(|r| call.visible(r));
    if let Some(id) = &lookup.id {
        if found.is_empty() {
            return Err(S::reservation_not_found(id));
        }
    }
    let (page, next) = page::<S, _>(call, input, found, lookup.page_size)?;
    Ok(S::reservations_page(call, &page, next))
}

/// The reservations of `S` in the call's account and region, oldest first.
fn in_scope<'s, S: ReservedService>(
    call: &'s Call<'_>,
    store: &'s Store,
) -> impl Iterator<Item = &'s Commitment> + 's {
    store.scoped(S::SERVICE.ledger_name(), call.account(), call.region)
}

/// The reservations of `S` in the call's account and region under reservation ID `id`, oldest
/// first.
fn with_id<'s, S: ReservedService>(
    call: &'s Call<'_>,
    store: &'s Store,
    id: &'s str,
) -> impl Iterator<Item = &'s Commitment> + 's {
    store.with_id(id).filter(move |r| {
        r.is_in(S::SERVICE.ledger_name(), call.account(), call.region) && same_id::<S>(&r.id, id)
    })
}

fn same_id<S: ReservedService>(a: &str, b: &str) -> bool {
    if S::IDS_IGNORE_CASE {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// The page the request's token points at, at most the asked size (and the realism's).
fn page<S: ReservedService, T>(
    call: &Call<'_>,
    input: &Input<'_, S>,
    items: Vec<T>,
    page_size: usize,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    paginate(
        items,
        S::Wire::page_token(input)?,
        call.page_size(page_size),
    )
    .map_err(|_| S::Wire::bad_page_token())
}
