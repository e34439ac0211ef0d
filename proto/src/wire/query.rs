//! Live queries (queries-search-messaging.md §1).

use crate::numbers::{opt_u64_flex, u32_flex};
use rmpv::Value;
use serde::{Deserialize, Serialize};

/// A query: filter, sort, limit and cursor. Sort keys keep their wire order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Query {
    /// Equality filter (`field -> expected`).
    #[serde(rename = "where", default, skip_serializing_if = "Option::is_none")]
    pub where_: Option<Value>,
    /// Predicate tree (kept raw; evaluated by [`crate::predicate`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicate: Option<Value>,
    /// Sort spec `field -> "asc" | "desc"`, as a MsgPack map to keep key order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort: Option<Value>,
    /// Max results.
    #[serde(
        default,
        deserialize_with = "opt_u64_flex",
        skip_serializing_if = "Option::is_none"
    )]
    pub limit: Option<u64>,
    /// Opaque pagination cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Extra key the TS client copies in; ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
    /// Upstream-only extension; ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<Vec<String>>,
}

/// QUERY_SUB payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuerySubPayload {
    /// Client-chosen id.
    pub query_id: String,
    /// Map to query.
    pub map_name: String,
    /// Filter / sort / limit.
    #[serde(default)]
    pub query: Query,
    /// Projection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
}

/// QUERY_UNSUB payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryUnsubPayload {
    /// Subscription to drop.
    pub query_id: String,
}

/// One result row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryResultRow {
    /// Key.
    pub key: String,
    /// Value (projected).
    #[serde(default = "crate::numbers::nil")]
    pub value: Value,
}

/// QUERY_RESP payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryRespPayload {
    /// Echo.
    pub query_id: String,
    /// Snapshot rows in server order.
    pub results: Vec<QueryResultRow>,
    /// Cursor for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// More matching records exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_more: Option<bool>,
    /// `valid`, `expired`, `invalid`, `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor_status: Option<String>,
    /// Opaque per-query digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merkle_root_hash: Option<u32>,
}

/// ENTER / UPDATE / LEAVE of queries and searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChangeType {
    /// Started matching.
    Enter,
    /// Still matches, changed.
    Update,
    /// Stopped matching.
    Leave,
}

/// QUERY_UPDATE payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryUpdatePayload {
    /// Subscription id.
    pub query_id: String,
    /// Record key.
    pub key: String,
    /// New projected value; nil for LEAVE (key always present).
    #[serde(default = "crate::numbers::nil")]
    pub value: Value,
    /// Kind of change.
    pub change_type: ChangeType,
}

/// QUERY_SYNC_INIT payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuerySyncInitPayload {
    /// Subscription to resume.
    pub query_id: String,
    /// Stored digest.
    #[serde(default, deserialize_with = "u32_flex")]
    pub root_hash: u32,
}

/// HYBRID_QUERY_SUBSCRIBE payload (client-only; ignored by servers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HybridQuerySubscribePayload {
    /// Subscription id.
    pub subscription_id: String,
    /// Map.
    pub map_name: String,
    /// Predicate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicate: Option<Value>,
    /// Equality filter.
    #[serde(rename = "where", default, skip_serializing_if = "Option::is_none")]
    pub where_: Option<Value>,
    /// Sort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort: Option<Value>,
    /// Limit.
    #[serde(
        default,
        deserialize_with = "opt_u64_flex",
        skip_serializing_if = "Option::is_none"
    )]
    pub limit: Option<u64>,
    /// Cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// Payload holding only a subscription id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionIdPayload {
    /// Subscription id.
    pub subscription_id: String,
}
