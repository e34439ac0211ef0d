//! Latency over time: per fixed window, how many batches were answered and the slowest of
//! them, next to the machine's worst wake-up lag, so a tail can be placed in time and matched
//! against stalls of the whole machine.

use crate::error::BenchError;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// One window of the timeline.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Window {
    /// Batches answered in the window.
    pub answered: u64,
    /// The slowest of them.
    pub worst: Duration,
}

/// Answers bucketed by the window they arrived in.
#[derive(Debug, Clone)]
pub struct Timeline {
    started: Instant,
    width: Duration,
    windows: Vec<Window>,
}

impl Timeline {
    /// An empty timeline whose first window starts at `started`.
    pub fn new(started: Instant, width: Duration) -> Self {
        Timeline {
            started,
            width: width.max(Duration::from_millis(1)),
            windows: Vec::new(),
        }
    }

    /// Records an answer that arrived at `at` after `latency`.
    pub fn record(&mut self, at: Instant, latency: Duration) {
        let index = (at.saturating_duration_since(self.started).as_nanos() / self.width.as_nanos())
            as usize;
        if self.windows.len() <= index {
            self.windows.resize(index + 1, Window::default());
        }
        let w = &mut self.windows[index];
        w.answered += 1;
        w.worst = w.worst.max(latency);
    }

    /// Adds another timeline of the same start and width.
    pub fn merge(&mut self, other: &Timeline) {
        if self.windows.len() < other.windows.len() {
            self.windows.resize(other.windows.len(), Window::default());
        }
        for (mine, theirs) in self.windows.iter_mut().zip(&other.windows) {
            mine.answered += theirs.answered;
            mine.worst = mine.worst.max(theirs.worst);
        }
    }

    /// The windows so far.
    pub fn windows(&self) -> &[Window] {
        &self.windows
    }

    /// CSV text: window start, batches answered, worst latency and the machine's worst wake-up
    /// lag in that window (empty where the probe saw nothing), in ms.
    pub fn to_csv(&self, wake_lag: &[Duration]) -> String {
        let mut out = String::from("t_ms,answered,worst_latency_ms,worst_wake_lag_ms\n");
        let rows = self.windows.len().max(wake_lag.len());
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        for i in 0..rows {
            let w = self.windows.get(i).copied().unwrap_or_default();
            let lag = wake_lag
                .get(i)
                .map_or_else(String::new, |l| format!("{:.3}", ms(*l)));
            let _ = writeln!(
                out,
                "{},{},{:.3},{}",
                (self.width * i as u32).as_millis(),
                w.answered,
                ms(w.worst),
                lag
            );
        }
        out
    }

    /// Writes [`Timeline::to_csv`] to `path`.
    pub fn write_csv(&self, path: &Path, wake_lag: &[Duration]) -> Result<(), BenchError> {
        std::fs::write(path, self.to_csv(wake_lag))
            .map_err(|e| BenchError::Setup(format!("cannot write {}: {e}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_land_in_the_window_they_arrived_in_and_keep_the_worst() {
        let t0 = Instant::now();
        let mut t = Timeline::new(t0, Duration::from_millis(100));
        t.record(t0 + Duration::from_millis(10), Duration::from_millis(2));
        t.record(t0 + Duration::from_millis(90), Duration::from_millis(7));
        t.record(t0 + Duration::from_millis(250), Duration::from_millis(1));
        assert_eq!(
            t.windows(),
            &[
                Window {
                    answered: 2,
                    worst: Duration::from_millis(7)
                },
                Window::default(),
                Window {
                    answered: 1,
                    worst: Duration::from_millis(1)
                },
            ]
        );
    }

    #[test]
    fn merging_adds_counts_and_keeps_the_worse_latency() {
        let t0 = Instant::now();
        let mut a = Timeline::new(t0, Duration::from_millis(100));
        let mut b = Timeline::new(t0, Duration::from_millis(100));
        a.record(t0, Duration::from_millis(3));
        b.record(t0, Duration::from_millis(5));
        b.record(t0 + Duration::from_millis(150), Duration::from_millis(1));
        a.merge(&b);
        assert_eq!(a.windows()[0].answered, 2);
        assert_eq!(a.windows()[0].worst, Duration::from_millis(5));
        assert_eq!(a.windows()[1].answered, 1);
    }

    #[test]
    fn the_csv_has_one_row_per_window_with_the_wake_lag_beside_it() {
        let t0 = Instant::now();
        let mut t = Timeline::new(t0, Duration::from_millis(100));
        t.record(t0 + Duration::from_millis(120), Duration::from_micros(1500));
        let csv = t.to_csv(&[Duration::from_micros(200)]);
        assert_eq!(
            csv,
            "t_ms,answered,worst_latency_ms,worst_wake_lag_ms\n\
             0,0,0.000,0.200\n\
             100,1,1.500,\n"
        );
    }
}
