//! The reaper's Prometheus metrics (`buyonce_reaper_*`), served on its `/metrics`.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::sweep::SweepReport;
use crate::http::MetricsSource;

/// The reaper's metrics.
pub struct ReaperMetrics {
    registry: Registry,
    pub sweeps: Counter,
    pub skipped: Counter,
    pub found: Counter,
    pub reaped: Counter,
    pub race_lost: Counter,
    pub errored: Counter,
    pub republished: Counter,
    pub retagged: Counter,
    pub last_sweep_ms: Gauge,
}

impl ReaperMetrics {
    pub(super) fn new() -> Self {
        let mut registry = Registry::with_prefix("buyonce_reaper");
        let m = Self {
            sweeps: Counter::default(),
            skipped: Counter::default(),
            found: Counter::default(),
            reaped: Counter::default(),
            race_lost: Counter::default(),
            errored: Counter::default(),
            republished: Counter::default(),
            retagged: Counter::default(),
            last_sweep_ms: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("sweeps", "Sweeps run", m.sweeps.clone());
        registry.register(
            "skipped",
            "Sweeps skipped: another reaper held the lock",
            m.skipped.clone(),
        );
        registry.register("found", "Stale running items found", m.found.clone());
        registry.register("reaped", "Items moved running → failed", m.reaped.clone());
        registry.register(
            "race_lost",
            "CAS found the row moved on",
            m.race_lost.clone(),
        );
        registry.register(
            "errored",
            "Rows that hit a database error",
            m.errored.clone(),
        );
        registry.register(
            "republished",
            "Unpublished items republished",
            m.republished.clone(),
        );
        registry.register(
            "retagged",
            "Tags written for tag_pending items",
            m.retagged.clone(),
        );
        registry.register(
            "last_sweep_milliseconds",
            "Duration of the last sweep",
            m.last_sweep_ms.clone(),
        );
        Self { registry, ..m }
    }

    pub(super) fn add(&self, r: &SweepReport, took: Duration) {
        self.sweeps.inc();
        self.found.inc_by(r.found as u64);
        self.reaped.inc_by(r.reaped as u64);
        self.race_lost.inc_by(r.race_lost as u64);
        self.errored.inc_by(r.errored as u64);
        self.republished.inc_by(r.republished as u64);
        self.retagged.inc_by(r.retagged as u64);
        self.last_sweep_ms.set(took.as_millis() as i64);
    }
}

impl MetricsSource for ReaperMetrics {
    fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
