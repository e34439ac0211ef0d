//! The result of one scenario run: JSON for machines, a Markdown section for people.

use crate::error::BenchError;
use crate::failures::{FailureSummary, FailureTally};
use crate::latency::LatencySummary;
use crate::rss::RssSample;
use serde::Serialize;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

/// One named number.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metric {
    /// What it is.
    pub name: String,
    /// Its value.
    pub value: f64,
    /// Its unit (`ops/s`, `bytes`, `ratio`, …).
    pub unit: String,
}

/// Everything a scenario found out.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Name of this run in headings (e.g. `write-ack-persisted`); the scenario name if unset.
    pub label: String,
    /// Server URL.
    pub url: String,
    /// Start time, Unix seconds.
    pub started_at_unix: u64,
    /// Wall time of the measured part, seconds.
    pub duration_secs: f64,
    /// The options the scenario ran with.
    pub parameters: serde_json::Map<String, serde_json::Value>,
    /// Counters and rates.
    pub metrics: Vec<Metric>,
    /// Latency distributions.
    pub latencies: Vec<LatencySummary>,
    /// Failures by kind.
    pub failures: Vec<FailureSummary>,
    /// Sum of all failures.
    pub failure_count: u64,
    /// Memory of the processes given with `--pids`.
    pub rss: Vec<RssSample>,
    /// Remarks (e.g. a PID that could not be read).
    pub notes: Vec<String>,
    /// No failure at all.
    pub passed: bool,
}

impl Report {
    /// An empty report for `scenario` against `url`.
    pub fn new(scenario: &str, url: &str) -> Self {
        Report {
            scenario: scenario.to_string(),
            label: scenario.to_string(),
            url: url.to_string(),
            started_at_unix: crate::clock::wall_millis() / 1000,
            duration_secs: 0.0,
            parameters: serde_json::Map::new(),
            metrics: Vec::new(),
            latencies: Vec::new(),
            failures: Vec::new(),
            failure_count: 0,
            rss: Vec::new(),
            notes: Vec::new(),
            passed: true,
        }
    }

    /// Records an option value.
    pub fn param(&mut self, name: &str, value: impl Into<serde_json::Value>) -> &mut Self {
        self.parameters.insert(name.to_string(), value.into());
        self
    }

    /// Adds a metric.
    pub fn metric(&mut self, name: &str, value: f64, unit: &str) -> &mut Self {
        self.metrics.push(Metric {
            name: name.to_string(),
            value,
            unit: unit.to_string(),
        });
        self
    }

    /// The value of a metric, if present.
    pub fn metric_value(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }

    /// Sets the failures; the report passes only without any.
    pub fn set_failures(&mut self, tally: &FailureTally) {
        self.failures = tally.summary();
        self.failure_count = tally.total();
        self.passed = tally.is_empty();
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// A Markdown section: heading, parameters, one table.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "### {} — {}\n",
            self.label,
            if self.passed { "PASS" } else { "FAIL" }
        );
        let params: Vec<String> = self
            .parameters
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(text) => format!("{k}={text}"),
                other => format!("{k}={other}"),
            })
            .collect();
        let _ = writeln!(
            md,
            "`{}` against `{}`, {:.1} s measured\n",
            params.join(" "),
            self.url,
            self.duration_secs
        );
        md.push_str("| measure | value |\n|---|---|\n");
        for m in &self.metrics {
            let _ = writeln!(md, "| {} | {} {} |", m.name, format_number(m.value), m.unit);
        }
        for l in &self.latencies {
            let _ = writeln!(
                md,
                "| {} latency p50 / p95 / p99 / max | {:.2} / {:.2} / {:.2} / {:.2} ms (n={}) |",
                l.name, l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms, l.count
            );
        }
        let _ = writeln!(md, "| failures | {} |", self.failure_count);
        for f in &self.failures {
            let _ = writeln!(
                md,
                "| failure: {} | {} × (e.g. {}) |",
                f.kind,
                f.count,
                f.example.replace('|', "\\|")
            );
        }
        for r in &self.rss {
            let peak = r
                .peak_rss_kib
                .map(|p| format!(", peak {:.1} MiB", p as f64 / 1024.0))
                .unwrap_or_default();
            let _ = writeln!(
                md,
                "| RSS pid {} ({}) | {:.1} MiB{} |",
                r.pid,
                r.name,
                r.rss_kib as f64 / 1024.0,
                peak
            );
        }
        for n in &self.notes {
            let _ = writeln!(md, "\nNote: {n}");
        }
        md.push('\n');
        md
    }

    /// Writes the JSON to `path`.
    pub fn write_json(&self, path: &Path) -> Result<(), BenchError> {
        std::fs::write(path, self.to_json() + "\n").map_err(|source| BenchError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Appends the Markdown section to `path`.
    pub fn append_markdown(&self, path: &Path) -> Result<(), BenchError> {
        let io = |source| BenchError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        file.write_all(self.to_markdown().as_bytes()).map_err(io)
    }
}

/// Integers without decimals, small fractions with three significant decimals.
fn format_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failures::{Failure, FailureKind};
    use crate::latency::LatencyRecorder;
    use std::time::Duration;

    fn sample() -> Report {
        let mut r = Report::new("write-ack", "ws://127.0.0.1:1/ws");
        r.param("connections", 20).param("interval_ms", 50);
        r.metric("acked ops/s", 1234.5678, "ops/s")
            .metric("ops acked", 1000.0, "ops");
        let mut lat = LatencyRecorder::new();
        lat.record(Duration::from_millis(3));
        r.latencies.push(lat.summary("OP_BATCH → OP_ACK"));
        r
    }

    #[test]
    fn a_report_without_failures_passes() {
        let mut r = sample();
        r.set_failures(&FailureTally::default());
        assert!(r.passed);
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).expect("valid JSON");
        assert_eq!(json["scenario"], "write-ack");
        assert_eq!(json["parameters"]["connections"], 20);
        assert_eq!(json["metrics"][0]["unit"], "ops/s");
        assert_eq!(json["latencies"][0]["count"], 1);
        assert_eq!(json["passed"], true);
        let md = r.to_markdown();
        assert!(md.starts_with("### write-ack — PASS"), "{md}");
        assert!(md.contains("| acked ops/s | 1234.6 ops/s |"), "{md}");
        assert!(md.contains("| ops acked | 1000 ops |"), "{md}");
        assert!(md.contains("| failures | 0 |"), "{md}");
    }

    #[test]
    fn a_report_with_failures_fails_and_lists_them() {
        let mut r = sample();
        let mut t = FailureTally::default();
        t.add(&Failure::new(
            FailureKind::OpRejected { code: Some(403) },
            "op 3: write access denied | map x",
        ));
        r.set_failures(&t);
        assert!(!r.passed);
        assert_eq!(r.failure_count, 1);
        let md = r.to_markdown();
        assert!(md.starts_with("### write-ack — FAIL"), "{md}");
        assert!(
            md.contains(
                "| failure: OP_REJECTED (403) | 1 × (e.g. op 3: write access denied \\| map x) |"
            ),
            "{md}"
        );
    }

    #[test]
    fn a_label_names_the_section() {
        let mut r = sample();
        r.label = "write-ack-persisted".into();
        assert!(r
            .to_markdown()
            .starts_with("### write-ack-persisted — PASS"));
        assert!(r.to_json().contains("\"scenario\": \"write-ack\""));
    }

    #[test]
    fn markdown_appends_and_json_writes() {
        let dir = std::env::temp_dir().join(format!("topgun-bench-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let md = dir.join("README.md");
        let _ = std::fs::remove_file(&md);
        let r = sample();
        r.append_markdown(&md).expect("append");
        r.append_markdown(&md).expect("append again");
        let text = std::fs::read_to_string(&md).expect("read back");
        assert_eq!(text.matches("### write-ack").count(), 2);
        let json = dir.join("r.json");
        r.write_json(&json).expect("write");
        assert!(std::fs::read_to_string(&json)
            .expect("read back")
            .contains("\"scenario\": \"write-ack\""));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
