//! Probes of the machine beside a scenario, so a latency tail can be told apart from the
//! server's own cost: how late a sleeping OS thread wakes up (a stall that hits every process
//! on the machine, client and server alike) and how much CPU time the hypervisor stole.

use crate::latency::LatencyRecorder;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the probe thread asks to sleep each round.
const PROBE_SLEEP: Duration = Duration::from_millis(1);

/// What the wake-up probe saw.
#[derive(Debug, Clone)]
pub struct WakeLag {
    /// Lateness of every wake-up beyond the requested sleep.
    pub lag: LatencyRecorder,
    /// The worst lateness per timeline window (index = window since the probe started).
    pub worst_per_window: Vec<Duration>,
}

/// A thread that sleeps 1 ms at a time and records how late it wakes up.
#[derive(Debug)]
pub struct WakeLagProbe {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<WakeLag>>,
}

impl WakeLagProbe {
    /// Starts probing; `window` is the width of the per-window maxima, counted from now.
    pub fn start(window: Duration) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let started = Instant::now();
        let thread = std::thread::Builder::new()
            .name("wake-lag-probe".into())
            .spawn(move || probe(&stopped, started, window))?;
        Ok(WakeLagProbe {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the probe and returns what it saw (nothing if its thread panicked).
    pub fn finish(mut self) -> Option<WakeLag> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take()?.join().ok()
    }
}

impl Drop for WakeLagProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn probe(stop: &AtomicBool, started: Instant, window: Duration) -> WakeLag {
    let mut seen = WakeLag {
        lag: LatencyRecorder::new(),
        worst_per_window: Vec::new(),
    };
    let window_nanos = window.as_nanos().max(1);
    while !stop.load(Ordering::Relaxed) {
        let before = Instant::now();
        std::thread::sleep(PROBE_SLEEP);
        let woke = Instant::now();
        let late = woke.duration_since(before).saturating_sub(PROBE_SLEEP);
        seen.lag.record(late);
        let index = (woke.duration_since(started).as_nanos() / window_nanos) as usize;
        if seen.worst_per_window.len() <= index {
            seen.worst_per_window.resize(index + 1, Duration::ZERO);
        }
        seen.worst_per_window[index] = seen.worst_per_window[index].max(late);
    }
    seen
}

/// The machine-wide CPU counters of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    /// Ticks doing anything but idling, waiting for I/O or being stolen.
    pub busy: u64,
    /// Ticks idle or waiting for I/O.
    pub idle: u64,
    /// Ticks the hypervisor ran something else while this machine wanted to run.
    pub steal: u64,
}

/// Share of the machine's CPU time between two readings, in percent of all CPUs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuShare {
    /// Busy share.
    pub busy_pct: f64,
    /// Stolen share.
    pub steal_pct: f64,
}

impl CpuTimes {
    /// Reads `/proc/stat` now; `None` where there is no such file (not Linux).
    pub fn read() -> Option<CpuTimes> {
        CpuTimes::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// Parses the aggregate `cpu` line of a `/proc/stat` text.
    pub fn parse(stat: &str) -> Option<CpuTimes> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        // user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
        let at = |i: usize| fields.get(i).copied().unwrap_or(0);
        if fields.len() < 4 {
            return None;
        }
        Some(CpuTimes {
            busy: at(0) + at(1) + at(2) + at(5) + at(6),
            idle: at(3) + at(4),
            steal: at(7),
        })
    }

    /// The shares of busy and stolen time from `self` to the later reading `later`.
    pub fn share_until(&self, later: &CpuTimes) -> CpuShare {
        let busy = later.busy.saturating_sub(self.busy) as f64;
        let idle = later.idle.saturating_sub(self.idle) as f64;
        let steal = later.steal.saturating_sub(self.steal) as f64;
        let total = (busy + idle + steal).max(1.0);
        CpuShare {
            busy_pct: 100.0 * busy / total,
            steal_pct: 100.0 * steal / total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  100 5 20 800 10 1 2 30 0 0\ncpu0 50 2 10 400 5 0 1 15 0 0\n";

    #[test]
    fn the_aggregate_cpu_line_is_split_into_busy_idle_and_steal() {
        let t = CpuTimes::parse(STAT).expect("a cpu line");
        assert_eq!(
            t,
            CpuTimes {
                busy: 100 + 5 + 20 + 1 + 2,
                idle: 800 + 10,
                steal: 30
            }
        );
    }

    #[test]
    fn a_stat_text_without_a_cpu_line_or_with_garbage_is_not_read() {
        assert_eq!(CpuTimes::parse("intr 1 2 3\n"), None);
        assert_eq!(CpuTimes::parse("cpu  1 2 x 4\n"), None);
        assert_eq!(CpuTimes::parse("cpu  1 2\n"), None);
    }

    #[test]
    fn shares_are_percent_of_the_interval_between_readings() {
        let a = CpuTimes {
            busy: 100,
            idle: 100,
            steal: 0,
        };
        let b = CpuTimes {
            busy: 250,
            idle: 140,
            steal: 10,
        };
        let s = a.share_until(&b);
        assert!((s.busy_pct - 75.0).abs() < 1e-9, "{s:?}");
        assert!((s.steal_pct - 5.0).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn the_probe_records_one_lag_per_wake_up_and_windows_from_its_start() {
        let probe = WakeLagProbe::start(Duration::from_millis(10)).expect("probe thread");
        std::thread::sleep(Duration::from_millis(50));
        let seen = probe.finish().expect("probe result");
        // 50 ms of 1 ms sleeps: far more than a handful of samples, in about five windows.
        assert!(seen.lag.count() >= 5, "{}", seen.lag.count());
        assert!(
            (3..=60).contains(&seen.worst_per_window.len()),
            "{}",
            seen.worst_per_window.len()
        );
    }
}
