//! Topics, locks and PN counters (queries-search-messaging.md §3–5).

use crate::numbers::{opt_u64_flex, u64_flex};
use rmpv::Value;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// TOPIC_SUB / TOPIC_UNSUB payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicPayload {
    /// Topic name.
    pub topic: String,
}

/// TOPIC_PUB payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicPubPayload {
    /// Topic name.
    pub topic: String,
    /// Any value, nil included.
    #[serde(default = "crate::numbers::nil")]
    pub data: Value,
}

/// TOPIC_MESSAGE payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicMessagePayload {
    /// Topic name.
    pub topic: String,
    /// The published value.
    #[serde(default = "crate::numbers::nil")]
    pub data: Value,
    /// Publisher's user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher_id: Option<String>,
    /// Fan-out wall-clock time.
    #[serde(deserialize_with = "u64_flex")]
    pub timestamp: u64,
}

/// Valid topic / lock name: 1–256 of `[A-Za-z0-9_.:/-]`.
pub fn is_valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:/".contains(&b))
}

/// LOCK_REQUEST payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LockRequestPayload {
    /// Correlation id.
    pub request_id: String,
    /// Lock name.
    pub name: String,
    /// Lease length in ms.
    #[serde(
        default,
        deserialize_with = "opt_u64_flex",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl: Option<u64>,
}

/// LOCK_GRANTED payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LockGrantedPayload {
    /// Echo.
    pub request_id: String,
    /// Lock name.
    pub name: String,
    /// Fencing token.
    #[serde(deserialize_with = "u64_flex")]
    pub fencing_token: u64,
}

/// LOCK_RELEASE payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LockReleasePayload {
    /// Correlation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Lock name.
    pub name: String,
    /// Token from LOCK_GRANTED.
    #[serde(deserialize_with = "u64_flex")]
    pub fencing_token: u64,
}

/// LOCK_RELEASED payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LockReleasedPayload {
    /// Echo ("" when none).
    pub request_id: String,
    /// Lock name.
    pub name: String,
    /// Whether this request released the lock.
    pub success: bool,
}

/// COUNTER_REQUEST payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CounterRequestPayload {
    /// Counter name.
    pub name: String,
}

/// PN-counter state; accepts `positive`/`negative` (TS client) and `p`/`n` (schema).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CounterState {
    /// Increments per node (TS client spelling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positive: Option<BTreeMap<String, f64>>,
    /// Decrements per node (TS client spelling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative: Option<BTreeMap<String, f64>>,
    /// Increments per node (schema spelling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<BTreeMap<String, f64>>,
    /// Decrements per node (schema spelling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<BTreeMap<String, f64>>,
}

/// COUNTER_SYNC / COUNTER_RESPONSE / COUNTER_UPDATE payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CounterStatePayload {
    /// Counter name.
    pub name: String,
    /// Full state.
    pub state: CounterState,
}
