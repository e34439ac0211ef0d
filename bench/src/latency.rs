//! Latency recording with HDR histograms (microsecond resolution, 3 significant digits).

use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::Duration;

/// Highest recordable latency: one hour, far above any response timeout.
const MAX_MICROS: u64 = 3_600_000_000;

/// One latency distribution.
#[derive(Debug, Clone)]
pub struct LatencyRecorder {
    hist: Histogram<u64>,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        // Bounds and precision are constants that hdrhistogram accepts; a failure here would
        // be a programming error caught by the unit tests.
        let hist = Histogram::new_with_bounds(1, MAX_MICROS, 3)
            .unwrap_or_else(|e| panic!("histogram bounds: {e}"));
        LatencyRecorder { hist }
    }

    /// Records one latency; values beyond an hour are clamped rather than lost.
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.hist.saturating_record(micros.min(MAX_MICROS));
    }

    /// Adds another recorder's samples.
    pub fn merge(&mut self, other: &LatencyRecorder) {
        // Same bounds on both sides, so adding cannot fail; saturating_record keeps values in range.
        for v in other.hist.iter_recorded() {
            self.hist
                .saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The summary a report shows, named `name`.
    pub fn summary(&self, name: &str) -> LatencySummary {
        let ms = |micros: u64| micros as f64 / 1000.0;
        let empty = self.hist.is_empty();
        let at = |q: f64| {
            if empty {
                0.0
            } else {
                ms(self.hist.value_at_quantile(q))
            }
        };
        LatencySummary {
            name: name.to_string(),
            count: self.hist.len(),
            mean_ms: if empty {
                0.0
            } else {
                self.hist.mean() / 1000.0
            },
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            max_ms: if empty { 0.0 } else { ms(self.hist.max()) },
        }
    }
}

/// Percentiles of one distribution, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencySummary {
    /// What was measured.
    pub name: String,
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut r = LatencyRecorder::new();
        for ms in 1..=100 {
            r.record(Duration::from_millis(ms));
        }
        let s = r.summary("ack");
        assert_eq!(s.count, 100);
        // 3 significant digits: values are exact to within 0.1 %.
        assert!((s.p50_ms - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p95_ms - 95.0).abs() < 0.1, "{s:?}");
        assert!((s.p99_ms - 99.0).abs() < 0.1, "{s:?}");
        assert!((s.max_ms - 100.0).abs() < 0.1, "{s:?}");
        assert!((s.mean_ms - 50.5).abs() < 0.1, "{s:?}");
    }

    #[test]
    fn merging_adds_samples_and_extremes_are_kept_in_range() {
        let mut a = LatencyRecorder::new();
        let mut b = LatencyRecorder::new();
        a.record(Duration::from_micros(0));
        b.record(Duration::from_secs(7200));
        b.record(Duration::from_millis(2));
        a.merge(&b);
        let s = a.summary("x");
        assert_eq!(s.count, 3);
        assert!(s.max_ms >= 3_599_000.0 && s.max_ms <= 3_601_000.0, "{s:?}");
    }

    #[test]
    fn an_empty_recorder_reports_zeroes() {
        let s = LatencyRecorder::new().summary("none");
        assert_eq!((s.count, s.p50_ms, s.max_ms), (0, 0.0, 0.0));
    }
}
