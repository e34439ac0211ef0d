//! Metrics whose values live elsewhere (a queue length, an atomic counter, a ring's
//! head) and are read when Prometheus scrapes, instead of being pushed on every change.

use crate::error::OpsError;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::Registry;

/// A group of metrics refreshed by one function right before they are collected.
///
/// The refresh runs during `/metrics` rendering, which happens on a blocking thread, so
/// it may take short locks; it must not wait for I/O.
pub struct Sampled {
    collectors: Vec<Box<dyn Collector>>,
    refresh: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Sampled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampled")
            .field("collectors", &self.collectors.len())
            .finish_non_exhaustive()
    }
}

impl Sampled {
    /// Groups `collectors` (gauges, counters, vectors — not registered anywhere else)
    /// with the function that sets their values.
    pub fn new(
        collectors: Vec<Box<dyn Collector>>,
        refresh: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        Sampled {
            collectors,
            refresh: Box::new(refresh),
        }
    }
}

impl Collector for Sampled {
    fn desc(&self) -> Vec<&Desc> {
        self.collectors.iter().flat_map(|c| c.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        (self.refresh)();
        self.collectors.iter().flat_map(|c| c.collect()).collect()
    }
}

/// Registers a [`Sampled`] group in `registry`.
pub fn register_sampled(
    registry: &Registry,
    collectors: Vec<Box<dyn Collector>>,
    refresh: impl Fn() + Send + Sync + 'static,
) -> Result<(), OpsError> {
    registry.register(Box::new(Sampled::new(collectors, refresh)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{IntCounter, IntGaugeVec, Opts};
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    #[test]
    fn values_are_read_at_collection_time() {
        let registry = Registry::new();
        let source = Arc::new(AtomicI64::new(5));
        let lag = IntGaugeVec::new(Opts::new("t_lag", "lag"), &["shard"]).expect("valid");
        let total = IntCounter::new("t_total", "total").expect("valid");
        let (lag2, total2, source2) = (lag.clone(), total.clone(), Arc::clone(&source));
        register_sampled(&registry, vec![Box::new(lag), Box::new(total)], move || {
            let now = source2.load(Ordering::Relaxed);
            lag2.with_label_values(&["a"]).set(now);
            // A counter mirrors a monotonic source by adding what it gained.
            total2.inc_by(u64::try_from(now).unwrap_or(0).saturating_sub(total2.get()));
        })
        .expect("registers");
        source.store(9, Ordering::Relaxed);
        let families = registry.gather();
        let value = |name: &str| {
            families
                .iter()
                .find(|f| f.name() == name)
                .map(|f| &f.get_metric()[0])
                .cloned()
        };
        assert_eq!(value("t_lag").expect("lag").get_gauge().get_value(), 9.0);
        assert_eq!(
            value("t_total").expect("total").get_counter().get_value(),
            9.0
        );
        // A duplicate name is refused, not silently shadowed.
        let again = IntCounter::new("t_total", "total").expect("valid");
        assert!(register_sampled(&registry, vec![Box::new(again)], || {}).is_err());
    }
}
