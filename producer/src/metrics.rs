//! Prometheus metrics of `serve` (text exposition at `/metrics`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// How a submission ended, as a label value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

/// Counters of the producer. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `created`, `identical`, `conflict`, `invalid`, `unpublished` (recorded, publish
    /// pending), `error`.
    pub submitted: Family<OutcomeLabel, Counter>,
    pub published: Counter,
    pub publish_failures: Counter,
    pub relay_republished: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("buyonce_producer");
        let submitted = Family::<OutcomeLabel, Counter>::default();
        let published = Counter::default();
        let publish_failures = Counter::default();
        let relay_republished = Counter::default();
        registry.register(
            "executions_submitted",
            "Execution submissions by outcome",
            submitted.clone(),
        );
        registry.register(
            "messages_published",
            "Purchase messages confirmed by the broker (submit, re-drive and relay)",
            published.clone(),
        );
        registry.register(
            "publish_failures",
            "Purchase messages the broker did not confirm (left for the relay)",
            publish_failures.clone(),
        );
        registry.register(
            "relay_republished",
            "Purchase messages published by the outbox relay",
            relay_republished.clone(),
        );
        Self {
            registry,
            submitted,
            published,
            publish_failures,
            relay_republished,
        }
    }

    pub fn submission(&self, outcome: &'static str) {
        self.submitted
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    pub fn publishes(&self, published: usize, failed: usize) {
        self.published.inc_by(published as u64);
        self.publish_failures.inc_by(failed as u64);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
