//! Record shapes of the data model (core.md §4.4–4.5).

use crate::hlc::Timestamp;
use crate::numbers::opt_u64_flex;
use rmpv::Value;
use serde::{Deserialize, Serialize};

/// An LWW-Map record; a nil `value` is a tombstone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LwwRecord {
    /// The value (nil = tombstone).
    #[serde(default = "crate::numbers::nil")]
    pub value: Value,
    /// Write time.
    pub timestamp: Timestamp,
    /// Time to live in ms; absent = no expiry.
    #[serde(
        default,
        deserialize_with = "opt_u64_flex",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl_ms: Option<u64>,
}

impl LwwRecord {
    /// True for a deletion marker.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_nil()
    }

    /// Expired: `ttlMs` present, non-zero, and `millis + ttl < now` (alive at equality).
    pub fn is_expired(&self, now_ms: u64) -> bool {
        is_expired(&self.timestamp, self.ttl_ms, now_ms)
    }
}

/// One add of an OR-Map (observed-remove multimap).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrMapRecord {
    /// One value stored under the key.
    #[serde(default = "crate::numbers::nil")]
    pub value: Value,
    /// Time of the add.
    pub timestamp: Timestamp,
    /// Opaque, globally unique id of this add.
    pub tag: String,
    /// Time to live in ms; omitted (never nil) when absent.
    #[serde(
        default,
        deserialize_with = "opt_u64_flex",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl_ms: Option<u64>,
}

impl OrMapRecord {
    /// Same expiry rule as LWW records.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        is_expired(&self.timestamp, self.ttl_ms, now_ms)
    }
}

fn is_expired(ts: &Timestamp, ttl_ms: Option<u64>, now_ms: u64) -> bool {
    match ttl_ms {
        Some(ttl) if ttl > 0 => ts.millis.saturating_add(ttl) < now_ms,
        _ => false,
    }
}

/// Everything about one OR-Map key sent in leaves, diffs and pushes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrMapEntry {
    /// The key.
    pub key: String,
    /// Live records of the key.
    #[serde(default)]
    pub records: Vec<OrMapRecord>,
    /// Tombstoned tags.
    #[serde(default)]
    pub tombstones: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_strict_and_ignores_zero_ttl() {
        let rec = LwwRecord {
            value: Value::from(1),
            timestamp: Timestamp::new(1_000, 0, "n"),
            ttl_ms: Some(500),
        };
        assert!(!rec.is_expired(1_500), "alive at equality");
        assert!(rec.is_expired(1_501));
        let forever = LwwRecord {
            ttl_ms: Some(0),
            ..rec.clone()
        };
        assert!(!forever.is_expired(u64::MAX));
    }
}
