//! The flow of every service whose reservations are bought under a handle derived from the
//! token: RDS (`ReservedDBInstanceId`), ElastiCache (`ReservedCacheNodeId`), MemoryDB
//! (`ReservationId`) and OpenSearch (`ReservationName`). A service implements
//! [`HandleService`]; this file owns the guard, the state checks, the settle gate and the
//! recovery of "already exists", so a fix lands once for all of them.
//!
//! ```text
//! find(handle) ─ live ──────────────────────────────▶ Guard
//!      │        └ ended (payment-failed, retired) ──▶ permanent: handle used up
//!      ▼ nothing
//! offering ─▶ authorize spend ─▶ settle gate ─▶ buy(handle)
//!                                                 ├ ok ─────────────────────▶ Purchased
//!                                                 ├ AlreadyExists ─▶ find ──▶ Recovered
//!                                                 └ error ─▶ transient | ambiguous | permanent
//! ```
//!
//! Whether the provider refuses a second reservation under the same handle is a per-service
//! fact ([`HandleService::UNIQUE_HANDLE`]): RDS, ElastiCache and MemoryDB model an
//! `…AlreadyExists` fault for it; OpenSearch's model says nothing about name uniqueness, so
//! its guard also matches offering attributes and count, and only the settle gate keeps a
//! retry from buying a second reservation under the same name.

use async_trait::async_trait;
use buyonce_shared::{IdempotencyToken, Recommendation};

use super::{
    aws_liveness, ended_commitment, exactly_one, offering_key, required, Executor, How, Liveness,
    OfferingCache, PurchaseContext, PurchaseError, PurchaseRequest, Purchased,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::clients::aws::errors::{classify_purchase, code};
use crate::clients::aws::{AwsClients, Clients, SdkClient};

/// A reservation as a describe call shows it, reduced to what the flow needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    pub id: String,
    /// The provider's state (`payment-pending`, `active`, `payment-failed`, …).
    pub state: Option<String>,
    pub count: Option<i32>,
    /// Upfront cost of all units, USD.
    pub cost_usd: Option<f64>,
    /// Whether its attributes (offering, term, payment, count) are the recommendation's; only
    /// consulted for services whose handle is not unique.
    pub matches_recommendation: bool,
}

/// An offering: its ID and upfront price per unit (USD).
#[derive(Debug, Clone, PartialEq)]
pub struct Offering {
    pub id: String,
    pub fixed_price: f64,
}

/// What the purchase call said.
pub enum Bought {
    /// Bought: the new reservation.
    New(Reservation),
    /// The provider refused the handle as already taken.
    AlreadyExists,
}

/// What a purchase call's `result` means for the flow: the new reservation (`reservation`
/// reads it from the answer; an answer without one is ambiguous — something may have been
/// bought), the handle already taken (`already_exists`, the service's documented fault code,
/// matched by type: OpenSearch answers 409 for other errors too), or the classified error.
pub fn purchase_answer<O, E>(
    op: &str,
    result: Result<O, SdkError<E, HttpResponse>>,
    already_exists: &str,
    reservation: impl FnOnce(&O) -> Option<Reservation>,
) -> Result<Bought, PurchaseError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(out) => reservation(&out).map(Bought::New).ok_or_else(|| {
            PurchaseError::ambiguous(format!("{op}: purchase answered without a reservation"))
        }),
        Err(e) if code(&e) == Some(already_exists) => Ok(Bought::AlreadyExists),
        Err(e) => Err(classify_purchase(op, &e)),
    }
}

/// One service bought under a token-derived handle.
#[async_trait]
pub trait HandleService: Send + Sync + 'static {
    /// `rds`, `elasticache`, … (messages).
    const NAME: &'static str;
    /// The provider refuses a second purchase under the same handle (documented fault).
    const UNIQUE_HANDLE: bool;
    /// What to tell the operator when the handle's reservation is not live.
    const ENDED_ADVICE: &'static str = "submit the recommendation again under a new \
        idempotency_key to buy it (after fixing the payment method if payment failed)";
    /// The service's SDK client.
    type Sdk: SdkClient;

    /// The handle for `token` (validated against the service's rules).
    fn handle(token: &IdempotencyToken) -> Result<String, PurchaseError>;
    /// Reservations carrying `handle` (a failed lookup refuses to buy).
    async fn find(
        client: &Clients<Self::Sdk>,
        handle: &str,
        rec: &Recommendation,
    ) -> Result<Vec<Reservation>, PurchaseError>;
    /// Offerings matching the recommendation (every page).
    async fn offerings(
        client: &Clients<Self::Sdk>,
        rec: &Recommendation,
    ) -> Result<Vec<Offering>, PurchaseError>;
    /// The purchase call, sent once (no SDK retries).
    async fn buy(
        client: &Clients<Self::Sdk>,
        offering: &Offering,
        handle: &str,
        count: i32,
        tag: (&str, &str),
    ) -> Result<Bought, PurchaseError>;
}

/// The executor of a [`HandleService`].
pub struct ByHandle<S: HandleService> {
    aws: AwsClients,
    offerings: OfferingCache<Offering>,
    _service: std::marker::PhantomData<S>,
}

impl<S: HandleService> ByHandle<S> {
    pub fn new(aws: AwsClients) -> Self {
        Self {
            aws,
            offerings: OfferingCache::default(),
            _service: std::marker::PhantomData,
        }
    }
}

/// The reservation `found` stands for: the earliest live one that carries the handle (and, for
/// a non-unique handle, the recommendation's attributes); an ended one is a permanent error.
fn pick<S: HandleService>(
    found: Vec<Reservation>,
    how: How,
) -> Result<Option<Purchased>, PurchaseError> {
    let candidates: Vec<Reservation> = found
        .into_iter()
        .filter(|r| S::UNIQUE_HANDLE || r.matches_recommendation)
        .collect();
    let (live, ended): (Vec<_>, Vec<_>) = candidates
        .into_iter()
        .partition(|r| aws_liveness(r.state.as_deref()) == Liveness::Live);
    if live.len() > 1 {
        // Nothing left to prevent; make it impossible to miss.
        tracing::error!(
            service = S::NAME,
            reservations = ?live.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            "several live reservations carry this item's token: it was bought more than once"
        );
    }
    if let Some(r) = live.into_iter().next() {
        return Ok(Some(Purchased {
            commitment_id: r.id,
            cost_usd: r.cost_usd,
            how,
            tag_pending: false,
        }));
    }
    match ended.into_iter().next() {
        Some(r) => Err(ended_commitment(
            &format!("{} reservation", S::NAME),
            &r.id,
            r.state.as_deref().unwrap_or("ended"),
            S::ENDED_ADVICE,
        )),
        None => Ok(None),
    }
}

#[async_trait]
impl<S: HandleService> Executor for ByHandle<S> {
    async fn purchase(
        &self,
        req: &PurchaseRequest<'_>,
        ctx: &dyn PurchaseContext,
    ) -> Result<Purchased, PurchaseError> {
        let rec = req.rec;
        let handle = S::handle(req.token)?;
        let client = self
            .aws
            .clients::<S::Sdk>(&rec.account, required(&rec.region, "region")?)
            .await?;
        let count = rec.units() as i32;

        if let Some(found) = pick::<S>(S::find(&client, &handle, rec).await?, How::Guard)? {
            return Ok(found);
        }

        let offering = self
            .offerings
            .get_or_try(offering_key(rec), || async {
                exactly_one(S::offerings(&client, rec).await?, &rec.describe())
            })
            .await?;
        let upfront = offering.fixed_price * f64::from(count);
        ctx.authorize_spend(
            upfront,
            &format!("{} offering {} x{count}", S::NAME, offering.id),
        )
        .await?;
        ctx.settle_gate()?;

        match S::buy(
            &client,
            &offering,
            &handle,
            count,
            (ctx.tag_key(), req.token.as_str()),
        )
        .await?
        {
            Bought::New(r) if r.id.is_empty() => Err(PurchaseError::ambiguous(format!(
                "{}: the purchase answered without a reservation ID",
                S::NAME
            ))),
            // Refused after the fact (e.g. payment failed at once): nothing usable was bought.
            Bought::New(r) if aws_liveness(r.state.as_deref()) == Liveness::Ended => {
                Err(ended_commitment(
                    &format!("{} reservation", S::NAME),
                    &r.id,
                    r.state.as_deref().unwrap_or("ended"),
                    S::ENDED_ADVICE,
                ))
            }
            Bought::New(r) => Ok(Purchased {
                commitment_id: r.id,
                cost_usd: r.cost_usd.or(Some(upfront)),
                how: How::Purchased,
                tag_pending: false,
            }),
            // The handle is ours: an earlier attempt bought it (its response was lost).
            Bought::AlreadyExists => {
                match pick::<S>(S::find(&client, &handle, rec).await?, How::Recovered)? {
                    Some(found) => Ok(found),
                    None => Err(PurchaseError::transient(format!(
                        "{}: the handle already exists but its reservation is not visible yet",
                        S::NAME
                    ))),
                }
            }
        }
    }
}
