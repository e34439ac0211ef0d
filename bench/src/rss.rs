//! Resident memory of server processes, read from `/proc/<pid>/status`.

use crate::error::BenchError;
use serde::Serialize;

/// Memory of one process at the end of a scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RssSample {
    /// Process id.
    pub pid: u32,
    /// `Name:` from the status file.
    pub name: String,
    /// `VmRSS`: resident set now, in KiB.
    pub rss_kib: u64,
    /// `VmHWM`: peak resident set, in KiB (absent for kernel threads).
    pub peak_rss_kib: Option<u64>,
}

fn kib(line: &str) -> Option<u64> {
    // "VmRSS:\t   12345 kB"
    let mut parts = line.split_whitespace();
    let n = parts.nth(1)?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(n),
        _ => None,
    }
}

/// Parses the text of a `/proc/<pid>/status` file.
pub fn parse_status(pid: u32, text: &str) -> Result<RssSample, BenchError> {
    let mut name = String::new();
    let mut rss = None;
    let mut peak = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Name:") {
            name = rest.trim().to_string();
        } else if line.starts_with("VmRSS:") {
            rss = kib(line);
        } else if line.starts_with("VmHWM:") {
            peak = kib(line);
        }
    }
    let rss_kib =
        rss.ok_or_else(|| BenchError::Protocol(format!("/proc/{pid}/status has no VmRSS line")))?;
    Ok(RssSample {
        pid,
        name,
        rss_kib,
        peak_rss_kib: peak,
    })
}

/// Reads the memory of process `pid`.
pub fn sample(pid: u32) -> Result<RssSample, BenchError> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|source| BenchError::Io { path, source })?;
    parse_status(pid, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\ttest-server\nUmask:\t0022\nState:\tS (sleeping)\nPid:\t4242\n\
VmPeak:\t  812345 kB\nVmSize:\t  800000 kB\nVmHWM:\t   65432 kB\nVmRSS:\t   54321 kB\nThreads:\t9\n";

    #[test]
    fn parses_rss_and_peak() {
        let s = parse_status(4242, STATUS).expect("parses");
        assert_eq!(
            s,
            RssSample {
                pid: 4242,
                name: "test-server".into(),
                rss_kib: 54321,
                peak_rss_kib: Some(65432)
            }
        );
    }

    #[test]
    fn a_status_without_rss_is_an_error() {
        assert!(parse_status(2, "Name:\tkthreadd\nState:\tS\n").is_err());
    }

    #[test]
    fn reads_this_process() {
        let s = sample(std::process::id()).expect("own status is readable");
        assert!(s.rss_kib > 0);
        assert!(s.peak_rss_kib.unwrap_or(0) >= s.rss_kib);
    }

    #[test]
    fn a_missing_process_is_an_io_error() {
        assert!(matches!(sample(u32::MAX), Err(BenchError::Io { .. })));
    }
}
