//! Emulator state: every commitment ever created (the ledger), price sessions, call counts.
//!
//! All of it sits behind one mutex held only for short, non-async sections. Every purchase does
//! its duplicate check and its insert under one lock acquisition, so N concurrent purchases with
//! the same client token / reservation ID / name create exactly one commitment.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use super::catalog::THREE_YEARS;

/// One commitment, as `GET /_fakecloud/ledger` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// `aws` or `azure`.
    pub provider: String,
    /// `ec2`, `savings-plans`, `rds`, `elasticache`, `memorydb`, `opensearch`, `redshift`, or the
    /// Azure service (`vm`, `sql-database`, `redis-cache`, `cosmos-db`, `search`).
    pub service: String,
    /// AWS account ID or Azure subscription ID.
    pub account: String,
    /// Region or Azure location.
    pub region: String,
    /// The provider's ID of the commitment (RI ID, plan ID, reservation order ID, …).
    pub commitment_id: String,
    /// What a client can find it by: the Savings Plans client token, the RDS / ElastiCache /
    /// MemoryDB reservation ID, the OpenSearch reservation name, the EC2 idempotency tag value,
    /// the Azure display name; `None` for Redshift (nothing to find it by).
    pub idempotency_handle: Option<String>,
    /// Offering ID (the Azure SKU name for Azure).
    pub offering_id: String,
    /// Instance type, node type or SKU.
    pub resource_type: String,
    /// Units bought.
    pub count: u32,
    /// `1y` or `3y`.
    pub term: String,
    /// `All Upfront` / `Partial Upfront` / `No Upfront`, or Azure `Upfront` / `Monthly`.
    pub payment_option: String,
    /// Tags as stored by the provider.
    pub tags: BTreeMap<String, String>,
    /// Provider state now (`payment-pending`, `active`, `Creating`, `Succeeded`, …).
    pub state: String,
    /// What it costs, for all units.
    pub price: LedgerPrice,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// The cost of a commitment, all units together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerPrice {
    /// Currency code.
    pub currency: String,
    /// Paid at purchase.
    pub upfront: f64,
    /// Paid per hour over the term.
    pub recurring_hourly: f64,
    /// `upfront + recurring_hourly × hours of the term`.
    pub total: f64,
}

/// `aws` or `azure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Amazon Web Services.
    Aws,
    /// Microsoft Azure.
    Azure,
}

/// Service-specific fields of a commitment.
#[derive(Debug, Clone, PartialEq)]
pub enum Detail {
    /// Nothing beyond the common fields.
    Plain,
    /// A Savings Plan.
    SavingsPlan {
        /// `Compute`, `EC2Instance`, `SageMaker`.
        plan_type: String,
        /// Hourly commitment as the client sent it.
        commitment: String,
        /// Upfront amount (string, as AWS returns it).
        upfront: String,
        /// Recurring hourly amount.
        recurring: String,
        /// Covered product types.
        product_types: Vec<String>,
        /// EC2 Instance plans: family.
        instance_family: Option<String>,
        /// The region of the offering (EC2 Instance plans).
        offering_region: Option<String>,
        /// Canonical form of the create parameters, to tell a retry from a conflicting reuse of
        /// the client token.
        fingerprint: String,
    },
    /// An OpenSearch reserved instance.
    OpenSearch {
        /// Billing subscription ID.
        billing_subscription_id: i64,
    },
    /// An RDS reserved DB instance.
    Rds {
        /// Lease ID.
        lease_id: String,
    },
    /// An Azure reservation order.
    Azure(AzureOrder),
}

/// The Azure-specific part of a reservation order.
#[derive(Debug, Clone, PartialEq)]
pub struct AzureOrder {
    /// Tenant whose token created it (orders are listed tenant-wide).
    pub tenant: String,
    /// `displayName`.
    pub display_name: String,
    /// `reservedResourceType`.
    pub reserved_resource_type: String,
    /// `P1Y` / `P3Y`.
    pub term: String,
    /// `Upfront` / `Monthly`.
    pub billing_plan: String,
    /// `appliedScopeType`.
    pub applied_scope_type: String,
    /// `billingScopeId`.
    pub billing_scope_id: String,
    /// ID of the single reservation inside the order.
    pub reservation_id: String,
    /// ARM etag, bumped on changes.
    pub etag: i64,
    /// Total price of the order in pricing currency.
    pub total: f64,
}

/// A commitment as the emulator stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct Commitment {
    /// Provider.
    pub provider: Provider,
    /// Ledger service name.
    pub service: String,
    /// Account / subscription.
    pub account: String,
    /// Region / location.
    pub region: String,
    /// Provider ID.
    pub id: String,
    /// The client's handle (client token, reservation ID, name, display name); EC2's comes from
    /// its tags instead.
    pub handle: Option<String>,
    /// Offering ID.
    pub offering_id: String,
    /// Instance type / node type / SKU.
    pub resource_type: String,
    /// Product description / engine.
    pub product: Option<String>,
    /// EC2 offering class.
    pub offering_class: Option<String>,
    /// RDS Multi-AZ.
    pub multi_az: Option<bool>,
    /// EC2: the Availability Zone of a zonal RI (`None`: regional).
    pub zone: Option<String>,
    /// Units.
    pub count: u32,
    /// Term in seconds.
    pub duration_seconds: i64,
    /// Payment option as the provider spells it.
    pub payment: String,
    /// Upfront price per unit.
    pub unit_fixed: f64,
    /// Hourly usage price per unit.
    pub unit_usage: f64,
    /// Hourly recurring charge per unit.
    pub unit_recurring: f64,
    /// Currency.
    pub currency: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// When `pending_state` turns into `final_state`.
    pub ready_at: DateTime<Utc>,
    /// State before `ready_at` (`payment-pending`, `pending-payment`, `Creating`).
    pub pending_state: String,
    /// State from `ready_at` on (`active`, `payment-failed`, `Succeeded`, `Failed`, …).
    pub final_state: String,
    /// State set through the admin API; wins over the timeline.
    pub state_override: Option<String>,
    /// Service-specific fields.
    pub detail: Detail,
}

impl Commitment {
    /// The state at `now`: the override, else pending until `ready_at`, then final.
    pub fn state_at(&self, now: DateTime<Utc>) -> String {
        match &self.state_override {
            Some(state) => state.clone(),
            None if now < self.ready_at => self.pending_state.clone(),
            None => self.final_state.clone(),
        }
    }

    /// Whether it is a commitment of `service` in this account and region.
    pub fn is_in(&self, service: &str, account: &str, region: &str) -> bool {
        self.service == service && self.account == account && self.region == region
    }

    /// When the term ends.
    pub fn end(&self) -> DateTime<Utc> {
        self.created_at + TimeDelta::seconds(self.duration_seconds)
    }

    /// The ledger view; `tag_key` is the EC2 idempotency tag key.
    pub fn to_entry(&self, now: DateTime<Utc>, tag_key: &str) -> LedgerEntry {
        let count = f64::from(self.count);
        let hours = (self.duration_seconds / 3600) as f64;
        let (upfront, recurring_hourly, total) = match &self.detail {
            Detail::Azure(order) => {
                let upfront = if order.billing_plan.eq_ignore_ascii_case("Upfront") {
                    order.total
                } else {
                    0.0
                };
                (upfront, (order.total - upfront) / hours, order.total)
            }
            _ => {
                let upfront = self.unit_fixed * count;
                let hourly = (self.unit_recurring + self.unit_usage) * count;
                (upfront, hourly, upfront + hourly * hours)
            }
        };
        let handle = match (&self.handle, self.service.as_str()) {
            (None, "ec2") => self.tags.get(tag_key).cloned(),
            (handle, _) => handle.clone(),
        };
        LedgerEntry {
            provider: match self.provider {
                Provider::Aws => "aws".into(),
                Provider::Azure => "azure".into(),
            },
            service: self.service.clone(),
            account: self.account.clone(),
            region: self.region.clone(),
            commitment_id: self.id.clone(),
            idempotency_handle: handle,
            offering_id: self.offering_id.clone(),
            resource_type: self.resource_type.clone(),
            count: self.count,
            term: if self.duration_seconds == THREE_YEARS {
                "3y".into()
            } else {
                "1y".into()
            },
            payment_option: self.payment.clone(),
            tags: self.tags.clone(),
            state: self.state_at(now),
            price: LedgerPrice {
                currency: self.currency.clone(),
                upfront,
                recurring_hourly,
                total,
            },
            created_at: self.created_at,
        }
    }
}

/// A `calculatePrice` quote whose `reservationOrderId` may be purchased until `expires_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceSession {
    /// Canonical form of the priced request (SKU, location, type, scope, term, plan, quantity).
    pub fingerprint: String,
    /// Total price.
    pub total: f64,
    /// Currency.
    pub currency: String,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
}

/// All mutable emulator state.
#[derive(Debug)]
pub struct Store {
    /// Every commitment, in creation order. Only [`Store::insert`] adds one, so the indexes
    /// below stay in step.
    commitments: Vec<Commitment>,
    /// Positions in `commitments` by (service, account), ascending (creation order). Every
    /// purchase and describe looks up its account's commitments: a scan of the whole ledger
    /// made a 20,000-purchase bench run quadratic inside fakecloud.
    by_account: HashMap<(String, String), Vec<usize>>,
    /// Positions by lowercase provider ID, ascending.
    by_id: HashMap<String, Vec<usize>>,
    /// Positions by (service, account, client handle), ascending: the duplicate checks of
    /// Savings Plans client tokens and OpenSearch names.
    by_handle: HashMap<(String, String, String), Vec<usize>>,
    /// Positions of Azure orders by the tenant whose token created them, ascending.
    by_tenant: HashMap<String, Vec<usize>>,
    /// Calls per `"<service>:<Operation>"`.
    pub calls: BTreeMap<String, u64>,
    /// Azure price sessions by lowercase order ID.
    pub price_sessions: HashMap<String, PriceSession>,
    rng: StdRng,
}

impl Store {
    /// Empty state; IDs are drawn from a generator seeded with `seed`, so a replayed run mints
    /// the same IDs.
    pub fn new(seed: u64) -> Self {
        Self {
            commitments: Vec::new(),
            by_account: HashMap::new(),
            by_id: HashMap::new(),
            by_handle: HashMap::new(),
            by_tenant: HashMap::new(),
            calls: BTreeMap::new(),
            price_sessions: HashMap::new(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// A fresh random UUID (lowercase, hyphenated).
    pub fn uuid(&mut self) -> String {
        let mut bytes = [0u8; 16];
        self.rng.fill_bytes(&mut bytes);
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }

    /// A random number below `bound`.
    pub fn number(&mut self, bound: u64) -> u64 {
        self.rng.next_u64() % bound.max(1)
    }

    /// Counts one call.
    pub fn count_call(&mut self, operation: &str) {
        *self.calls.entry(operation.to_string()).or_default() += 1;
    }

    /// Adds a commitment (the ledger's only way in).
    pub fn insert(&mut self, commitment: Commitment) {
        let at = self.commitments.len();
        self.by_account
            .entry((commitment.service.clone(), commitment.account.clone()))
            .or_default()
            .push(at);
        self.by_id
            .entry(commitment.id.to_ascii_lowercase())
            .or_default()
            .push(at);
        if let Some(handle) = &commitment.handle {
            let key = (
                commitment.service.clone(),
                commitment.account.clone(),
                handle.clone(),
            );
            self.by_handle.entry(key).or_default().push(at);
        }
        if let Detail::Azure(order) = &commitment.detail {
            self.by_tenant
                .entry(order.tenant.clone())
                .or_default()
                .push(at);
        }
        self.commitments.push(commitment);
    }

    /// Every commitment, oldest first.
    pub fn commitments(&self) -> &[Commitment] {
        &self.commitments
    }

    /// Commitments of a service in one account (every region), in creation order.
    pub fn in_account<'a>(
        &'a self,
        service: &str,
        account: &str,
    ) -> impl Iterator<Item = &'a Commitment> + 'a {
        self.at(self
            .by_account
            .get(&(service.to_owned(), account.to_owned())))
    }

    /// Commitments of a service in one account and region, in creation order.
    pub fn scoped<'a>(
        &'a self,
        service: &str,
        account: &str,
        region: &'a str,
    ) -> impl Iterator<Item = &'a Commitment> + 'a {
        self.in_account(service, account)
            .filter(move |c| c.region == region)
    }

    /// Commitments of a service in one account under this client handle (compared exactly), in
    /// creation order.
    pub fn with_handle<'a>(
        &'a self,
        service: &str,
        account: &str,
        handle: &str,
    ) -> impl Iterator<Item = &'a Commitment> + 'a {
        let key = (service.to_owned(), account.to_owned(), handle.to_owned());
        self.at(self.by_handle.get(&key))
    }

    /// Azure orders created with a token of `tenant`, in creation order.
    pub fn of_tenant<'a>(&'a self, tenant: &str) -> impl Iterator<Item = &'a Commitment> + 'a {
        self.at(self.by_tenant.get(tenant))
    }

    /// Commitments whose provider ID equals `id` ignoring ASCII case, oldest first (callers
    /// that compare exactly filter further).
    pub fn with_id<'a>(&'a self, id: &str) -> impl Iterator<Item = &'a Commitment> + 'a {
        self.at(self.by_id.get(&id.to_ascii_lowercase()))
    }

    /// [`Store::with_id`], mutable, to change states, etags or tags: the fields the indexes are
    /// keyed on (service, account, ID, handle, Azure tenant) must stay as they are.
    pub fn with_id_mut<'a>(
        &'a mut self,
        id: &str,
    ) -> impl Iterator<Item = &'a mut Commitment> + 'a {
        let positions = self
            .by_id
            .get(&id.to_ascii_lowercase())
            .map_or(&[][..], Vec::as_slice);
        let mut rest = self.commitments.iter_mut();
        let mut next = 0;
        // Positions ascend: each match skips forward from the one before.
        positions.iter().filter_map(move |&at| {
            let commitment = rest.nth(at - next);
            next = at + 1;
            commitment
        })
    }

    /// The oldest commitment with this provider ID (ignoring ASCII case), if any; see
    /// [`Store::with_id_mut`] for what must not change.
    pub fn by_id_mut(&mut self, id: &str) -> Option<&mut Commitment> {
        self.with_id_mut(id).next()
    }

    /// The commitments at `positions`, in their order.
    fn at<'a>(
        &'a self,
        positions: Option<&'a Vec<usize>>,
    ) -> impl Iterator<Item = &'a Commitment> + 'a {
        positions
            .into_iter()
            .flatten()
            .map(|&at| &self.commitments[at])
    }
}
