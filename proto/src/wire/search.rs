//! Full-text search and live search (queries-search-messaging.md §2).

use super::query::ChangeType;
use crate::numbers::opt_u64_flex;
use rmpv::Value;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// SearchOptions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SearchOptions {
    /// Max results (default 10).
    #[serde(
        default,
        deserialize_with = "opt_u64_flex",
        skip_serializing_if = "Option::is_none"
    )]
    pub limit: Option<u64>,
    /// Keep results with `score >= minScore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_score: Option<f64>,
    /// Per-field weights (accepted, ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boost: Option<BTreeMap<String, f64>>,
}

/// SEARCH payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchPayload {
    /// Correlation id.
    pub request_id: String,
    /// Map.
    pub map_name: String,
    /// Query text.
    pub query: String,
    /// Options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<SearchOptions>,
}

/// One search hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchResult {
    /// Key.
    pub key: String,
    /// Current value.
    #[serde(default = "crate::numbers::nil")]
    pub value: Value,
    /// BM25 score.
    pub score: f64,
    /// Query terms.
    #[serde(default)]
    pub matched_terms: Vec<String>,
}

/// SEARCH_RESP payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchRespPayload {
    /// Echo of requestId / subscriptionId.
    pub request_id: String,
    /// Hits by score descending.
    pub results: Vec<SearchResult>,
    /// Number of entries in `results`.
    #[serde(deserialize_with = "crate::numbers::u64_flex")]
    pub total_count: u64,
    /// Failure text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// SEARCH_SUB payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchSubPayload {
    /// Subscription id.
    pub subscription_id: String,
    /// Map.
    pub map_name: String,
    /// Query text.
    pub query: String,
    /// Options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<SearchOptions>,
}

/// SEARCH_UPDATE payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchUpdatePayload {
    /// Subscription id.
    pub subscription_id: String,
    /// Key.
    pub key: String,
    /// Current value (nil for LEAVE).
    #[serde(default = "crate::numbers::nil")]
    pub value: Value,
    /// Current score (0 for LEAVE).
    pub score: f64,
    /// Query terms ([] for LEAVE).
    #[serde(default)]
    pub matched_terms: Vec<String>,
    /// Kind of change.
    pub change_type: ChangeType,
}
