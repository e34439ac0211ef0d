//! Bodies of the stateless HTTP sync endpoint, POST `/sync` (http-admin-ops.md §2).

use super::core::{ClientOp, OpResult};
use super::records::LwwRecord;
use crate::hlc::Timestamp;
use crate::numbers::opt_u64_flex;
use rmpv::Value;
use serde::{Deserialize, Serialize};

/// HttpSyncRequest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct HttpSyncRequest {
    /// Free text.
    #[serde(default)]
    pub client_id: String,
    /// Client clock.
    #[serde(default)]
    pub client_hlc: Timestamp,
    /// Writes to apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operations: Option<Vec<ClientOp>>,
    /// Maps to pull deltas for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_maps: Option<Vec<SyncMapEntry>>,
    /// One-shot queries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queries: Option<Vec<HttpQueryRequest>>,
    /// One-shot searches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub searches: Option<Vec<HttpSearchRequest>>,
}

/// A map to pull deltas for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncMapEntry {
    /// Map.
    pub map_name: String,
    /// Watermark.
    pub last_sync_timestamp: Timestamp,
}

/// One-shot query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpQueryRequest {
    /// Echoed id.
    pub query_id: String,
    /// Map.
    pub map_name: String,
    /// Equality where-clause (a map), anything else matches all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Value>,
    /// Page size.
    #[serde(
        default,
        deserialize_with = "opt_u64_flex",
        skip_serializing_if = "Option::is_none"
    )]
    pub limit: Option<u64>,
    /// Rows to skip (ignored with a cursor).
    #[serde(
        default,
        deserialize_with = "opt_u64_flex",
        skip_serializing_if = "Option::is_none"
    )]
    pub offset: Option<u64>,
    /// Opaque cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// One-shot search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpSearchRequest {
    /// Echoed id.
    pub search_id: String,
    /// Map.
    pub map_name: String,
    /// Query text.
    pub query: String,
    /// Options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Value>,
}

/// HttpSyncResponse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct HttpSyncResponse {
    /// Server clock before processing.
    pub server_hlc: Timestamp,
    /// Ack of the operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<HttpAck>,
    /// Deltas per map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deltas: Option<Vec<MapDelta>>,
    /// Query results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_results: Option<Vec<HttpQueryResult>>,
    /// Search results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_results: Option<Vec<HttpSearchResult>>,
    /// Errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<HttpSyncError>>,
}

/// Ack of an HTTP batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpAck {
    /// Id of the last op.
    pub last_id: String,
    /// Per-op results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<OpResult>>,
}

/// Changes of a map since the client's watermark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MapDelta {
    /// Map.
    pub map_name: String,
    /// Changed records.
    pub records: Vec<DeltaRecord>,
    /// New watermark.
    pub server_sync_timestamp: Timestamp,
}

/// One changed record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeltaRecord {
    /// Key.
    pub key: String,
    /// Stored record.
    pub record: LwwRecord,
    /// PUT or REMOVE.
    pub event_type: String,
}

/// Result of a one-shot query: values only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpQueryResult {
    /// Echo.
    pub query_id: String,
    /// Record values.
    pub results: Vec<Value>,
    /// More remain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_more: Option<bool>,
    /// Next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Result of a one-shot search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpSearchResult {
    /// Echo.
    pub search_id: String,
    /// Hits.
    pub results: Vec<Value>,
    /// Hit count.
    #[serde(
        default,
        deserialize_with = "opt_u64_flex",
        skip_serializing_if = "Option::is_none"
    )]
    pub total_count: Option<u64>,
}

/// One per-item failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpSyncError {
    /// Status-like code.
    #[serde(deserialize_with = "crate::numbers::u64_flex")]
    pub code: u64,
    /// Text.
    pub message: String,
    /// What it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}
