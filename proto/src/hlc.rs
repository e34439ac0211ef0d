//! Hybrid logical clock (core.md §4.1–4.3): the timestamp type, its total order,
//! its string form, and the clock that issues and absorbs timestamps.

use crate::numbers::u64_flex;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Default bound on how far a remote timestamp may run ahead of the wall clock.
pub const DEFAULT_MAX_DRIFT_MS: u64 = 60_000;

/// An HLC timestamp: `{millis, counter, nodeId}` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Timestamp {
    /// Physical component, epoch milliseconds.
    #[serde(deserialize_with = "u64_flex")]
    pub millis: u64,
    /// Logical component.
    #[serde(deserialize_with = "u64_flex")]
    pub counter: u64,
    /// Id of the clock that issued it.
    pub node_id: String,
}

impl Timestamp {
    /// A timestamp from its parts.
    pub fn new(millis: u64, counter: u64, node_id: impl Into<String>) -> Self {
        Timestamp {
            millis,
            counter,
            node_id: node_id.into(),
        }
    }

    /// Parses the `<millis>:<counter>:<nodeId>` form (exactly three parts).
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split(':');
        let millis = parts.next()?.parse().ok()?;
        let counter = parts.next()?.parse().ok()?;
        let node_id = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Timestamp::new(millis, counter, node_id))
    }
}

impl fmt::Display for Timestamp {
    /// The string form used for OR-Map tags and Merkle hashing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.millis, self.counter, self.node_id)
    }
}

impl Ord for Timestamp {
    /// millis, then counter, then node id by UTF-16 code units (core.md §4.2).
    fn cmp(&self, other: &Self) -> Ordering {
        self.millis
            .cmp(&other.millis)
            .then(self.counter.cmp(&other.counter))
            .then_with(|| cmp_utf16(&self.node_id, &other.node_id))
    }
}

impl PartialOrd for Timestamp {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Compares strings by UTF-16 code units, as JavaScript's default string order does.
pub fn cmp_utf16(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        return a.as_bytes().cmp(b.as_bytes());
    }
    a.encode_utf16().cmp(b.encode_utf16())
}

/// Current wall-clock time in epoch milliseconds.
pub fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Error from a strict-mode clock that refused a timestamp too far in the future.
#[derive(Debug, thiserror::Error)]
#[error("clock drift detected: remote {remote_millis} is {drift_ms} ms ahead of local time")]
pub struct ClockDriftError {
    /// The remote physical time.
    pub remote_millis: u64,
    /// How far ahead it was.
    pub drift_ms: u64,
}

/// A hybrid logical clock; one per shard.
#[derive(Debug)]
pub struct Hlc {
    node_id: String,
    last_millis: u64,
    last_counter: u64,
    max_drift_ms: u64,
    strict: bool,
    clock: fn() -> u64,
}

impl Hlc {
    /// A non-strict clock reading the system wall clock.
    pub fn new(node_id: impl Into<String>) -> Self {
        Self::with_clock(node_id, wall_clock_ms)
    }

    /// A clock reading time from `clock` (tests pin it).
    pub fn with_clock(node_id: impl Into<String>, clock: fn() -> u64) -> Self {
        Hlc {
            node_id: node_id.into(),
            last_millis: 0,
            last_counter: 0,
            max_drift_ms: DEFAULT_MAX_DRIFT_MS,
            strict: false,
            clock,
        }
    }

    /// Rejects remote timestamps beyond the drift bound instead of fast-forwarding.
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// The id stamped on timestamps from this clock.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Issues a timestamp greater than every one issued or absorbed before.
    pub fn now(&mut self) -> Timestamp {
        let t = (self.clock)();
        if t > self.last_millis {
            self.last_millis = t;
            self.last_counter = 0;
        } else {
            self.last_counter += 1;
        }
        Timestamp::new(self.last_millis, self.last_counter, self.node_id.clone())
    }

    /// Absorbs a remote timestamp so later local timestamps order after it.
    pub fn update(&mut self, remote: &Timestamp) -> Result<(), ClockDriftError> {
        let t = (self.clock)();
        if remote.millis > t && remote.millis - t > self.max_drift_ms {
            let err = ClockDriftError {
                remote_millis: remote.millis,
                drift_ms: remote.millis - t,
            };
            if self.strict {
                return Err(err);
            }
            tracing_free_warn(&err);
        }
        let m = self.last_millis.max(t).max(remote.millis);
        self.last_counter = if m == self.last_millis && m == remote.millis {
            self.last_counter.max(remote.counter) + 1
        } else if m == self.last_millis {
            self.last_counter + 1
        } else if m == remote.millis {
            remote.counter + 1
        } else {
            0
        };
        self.last_millis = m;
        Ok(())
    }
}

// The proto crate stays free of a logging dependency; drift in non-strict mode is
// accepted by design (AP behaviour), so there is nothing for callers to act on.
fn tracing_free_warn(_err: &ClockDriftError) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

    static NOW: AtomicU64 = AtomicU64::new(1_000);
    fn pinned() -> u64 {
        NOW.load(AtomicOrdering::SeqCst)
    }
    static FIXED: AtomicU64 = AtomicU64::new(1_000);
    fn fixed() -> u64 {
        FIXED.load(AtomicOrdering::SeqCst)
    }

    #[test]
    fn orders_by_millis_then_counter_then_node_id() {
        let a = Timestamp::new(1, 5, "z");
        let b = Timestamp::new(2, 0, "a");
        assert!(a < b);
        assert!(Timestamp::new(2, 1, "a") > Timestamp::new(2, 0, "z"));
        assert!(Timestamp::new(2, 1, "b") > Timestamp::new(2, 1, "a"));
        assert_eq!(
            Timestamp::new(2, 1, "a").cmp(&Timestamp::new(2, 1, "a")),
            Ordering::Equal
        );
    }

    #[test]
    fn node_ids_compare_by_utf16_code_units() {
        // U+FF5E (one unit, 0xFF5E) sorts after U+1F600 (surrogates start 0xD83D) in UTF-16.
        assert_eq!(cmp_utf16("\u{FF5E}", "😀"), Ordering::Greater);
        assert_eq!("\u{FF5E}".cmp("😀"), Ordering::Less, "byte order differs");
    }

    #[test]
    fn string_form_round_trips() {
        let ts = Timestamp::new(1_700_000_000_000, 1, "node-1");
        assert_eq!(ts.to_string(), "1700000000000:1:node-1");
        assert_eq!(Timestamp::parse("1700000000000:1:node-1"), Some(ts));
        assert_eq!(Timestamp::parse("writer-1-1700000000000-0"), None);
        assert_eq!(Timestamp::parse("1:2:a:b"), None);
    }

    #[test]
    fn now_is_monotonic_and_update_follows_the_spec() {
        NOW.store(1_000, AtomicOrdering::SeqCst);
        let mut hlc = Hlc::with_clock("s", pinned);
        assert_eq!(hlc.now(), Timestamp::new(1_000, 0, "s"));
        assert_eq!(hlc.now(), Timestamp::new(1_000, 1, "s"));
        // Remote ahead in millis: adopt its millis, counter + 1.
        hlc.update(&Timestamp::new(1_500, 7, "r"))
            .expect("non-strict");
        assert_eq!(hlc.now(), Timestamp::new(1_500, 9, "s"));
        // Same millis on both sides: max counter + 1.
        hlc.update(&Timestamp::new(1_500, 20, "r"))
            .expect("non-strict");
        assert_eq!(hlc.now(), Timestamp::new(1_500, 22, "s"));
        // Wall clock moves past everything: counter resets.
        NOW.store(2_000, AtomicOrdering::SeqCst);
        hlc.update(&Timestamp::new(1_000, 0, "r"))
            .expect("non-strict");
        assert_eq!(hlc.now(), Timestamp::new(2_000, 1, "s"));
    }

    #[test]
    fn strict_clock_rejects_drift_and_lenient_clock_fast_forwards() {
        let far = Timestamp::new(1_000 + DEFAULT_MAX_DRIFT_MS + 1, 0, "r");
        let mut strict = Hlc::with_clock("s", fixed).strict(true);
        assert!(strict.update(&far).is_err());
        let mut lenient = Hlc::with_clock("s", fixed);
        lenient.update(&far).expect("lenient accepts");
        assert!(lenient.now() > far);
    }
}
