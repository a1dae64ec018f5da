//! The worker's Prometheus metrics (`buyonce_*`), served on its `/metrics` (the reaper has its
//! own, in `reaper::metrics`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Every metric the worker exports.
pub struct Metrics {
    pub registry: Registry,
    /// Deliveries by outcome (`done`, `retry`, `dead`, `requeue`) and note.
    pub deliveries: Family<Labels, Counter>,
    /// Purchases by provider, service and outcome (`purchased`, `recovered`, `guard`,
    /// `transient`, `permanent`, `over-budget`, `dry-run`).
    pub purchases: Family<Labels, Counter>,
    /// Time in the executor, by service.
    pub purchase_seconds: Family<Labels, Histogram>,
    pub in_flight: Gauge,
    pub retries: Family<Labels, Counter>,
    pub dead_letters: Family<Labels, Counter>,
    /// 1 while the fleet is paused (as last seen by this worker).
    pub paused: Gauge,
    pub reconnects: Counter,
    /// 1 while this worker's Postgres probe gets answers.
    pub database_up: Gauge,
    /// 1 while this worker consumes on a live broker connection.
    pub broker_up: Gauge,
    /// Times the worker stopped consuming because Postgres was unreachable (handing its
    /// prefetched messages back).
    pub consume_stops: Counter,
    pub archived_dead_letters: Counter,
    /// Handler panics caught (the message went back to the queue).
    pub handler_panics: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("buyonce");
        let deliveries = Family::<Labels, Counter>::default();
        let purchases = Family::<Labels, Counter>::default();
        let purchase_seconds = Family::<Labels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.005, 2.0, 14))) as fn() -> Histogram,
        );
        let in_flight = Gauge::default();
        let retries = Family::<Labels, Counter>::default();
        let dead_letters = Family::<Labels, Counter>::default();
        let paused = Gauge::default();
        let reconnects = Counter::default();
        let database_up = Gauge::default();
        let broker_up = Gauge::default();
        let consume_stops = Counter::default();
        let archived_dead_letters = Counter::default();
        let handler_panics = Counter::default();
        registry.register(
            "deliveries",
            "Messages handled, by outcome",
            deliveries.clone(),
        );
        registry.register(
            "purchases",
            "Purchase attempts, by provider, service and outcome",
            purchases.clone(),
        );
        registry.register(
            "purchase_duration_seconds",
            "Time spent in the provider executor",
            purchase_seconds.clone(),
        );
        registry.register("in_flight", "Messages being handled now", in_flight.clone());
        registry.register(
            "retries",
            "Messages parked in a retry wait queue, by reason",
            retries.clone(),
        );
        registry.register(
            "dead_letters",
            "Messages dead-lettered, by reason",
            dead_letters.clone(),
        );
        registry.register("paused", "1 while the fleet is paused", paused.clone());
        registry.register(
            "broker_reconnects",
            "Reconnections to RabbitMQ",
            reconnects.clone(),
        );
        registry.register(
            "database_up",
            "1 while Postgres answers this worker's probe (every 2s)",
            database_up.clone(),
        );
        registry.register(
            "broker_up",
            "1 while this worker consumes on a live RabbitMQ connection",
            broker_up.clone(),
        );
        registry.register(
            "consume_stops",
            "Times this worker stopped consuming because Postgres was unreachable, handing its prefetched messages back",
            consume_stops.clone(),
        );
        registry.register(
            "archived_dead_letters",
            "Dead letters moved from the queue into Postgres",
            archived_dead_letters.clone(),
        );
        registry.register(
            "handler_panics",
            "Panics caught while handling a message (the message was returned to the queue)",
            handler_panics.clone(),
        );
        Self {
            registry,
            deliveries,
            purchases,
            purchase_seconds,
            in_flight,
            retries,
            dead_letters,
            paused,
            reconnects,
            database_up,
            broker_up,
            consume_stops,
            archived_dead_letters,
            handler_panics,
        }
    }

    /// Exports the store's group-commit counters (`buyonce_database_statements_total`,
    /// `buyonce_database_transactions_total`, `buyonce_database_group_fallbacks_total`): their
    /// ratio says how many items one commit carries.
    pub fn watch_store(&mut self, store: buyonce_shared::store::Store) {
        self.registry
            .register_collector(Box::new(GroupCommitCollector(store)));
    }

    /// Text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl crate::http::MetricsSource for Metrics {
    fn encode(&self) -> String {
        Metrics::encode(self)
    }
    fn set_paused(&self, paused: bool) {
        self.paused.set(i64::from(paused));
    }
}

/// Reads [`buyonce_shared::store::Store::group_stats`] at each scrape.
struct GroupCommitCollector(buyonce_shared::store::Store);

impl std::fmt::Debug for GroupCommitCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupCommitCollector")
    }
}

impl prometheus_client::collector::Collector for GroupCommitCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        let stats = self.0.group_stats();
        for (name, help, value) in [
            (
                "database_statements",
                "Hot-path compare-and-sets written (claim, pre-buy check, record)",
                stats.statements,
            ),
            (
                "database_transactions",
                "Transactions those statements were committed in (group commit: fewer than statements under load)",
                stats.transactions,
            ),
            (
                "database_group_fallbacks",
                "Group transactions that failed as a whole and were written again statement by statement",
                stats.fallbacks,
            ),
        ] {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}
