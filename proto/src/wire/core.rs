//! Core message bodies: authentication, heartbeat, writes and acks, Merkle sync,
//! partitions and errors (core.md).

use super::records::{LwwRecord, OrMapEntry, OrMapRecord};
use crate::hlc::Timestamp;
use crate::numbers::{hash_map_flex, nullable, opt_u64_flex, u32_flex, u64_flex};
use rmpv::Value;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// AUTH (flat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Auth {
    /// Compact JWT.
    pub token: String,
    /// Never sent by the client; ignored.
    #[serde(
        default,
        deserialize_with = "opt_u64_flex",
        skip_serializing_if = "Option::is_none"
    )]
    pub protocol_version: Option<u64>,
}

/// AUTH_REQUIRED (flat, no fields).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AuthRequired {}

/// AUTH_ACK (flat).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthAck {
    /// Always 1 when sent.
    #[serde(
        default,
        deserialize_with = "opt_u64_flex",
        skip_serializing_if = "Option::is_none"
    )]
    pub protocol_version: Option<u64>,
    /// Principal id (`sub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// AUTH_FAIL (flat).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AuthFail {
    /// Human-readable reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// 401.
    #[serde(
        default,
        deserialize_with = "opt_u64_flex",
        skip_serializing_if = "Option::is_none"
    )]
    pub code: Option<u64>,
}

/// PING (flat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ping {
    /// Client wall clock, echoed in PONG.
    pub timestamp: Value,
}

/// PONG (flat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pong {
    /// The PING's timestamp, unchanged.
    pub timestamp: Value,
    /// Server wall clock.
    #[serde(deserialize_with = "u64_flex")]
    pub server_time: u64,
}

/// Acknowledgement levels, in increasing order (core.md §5.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WriteConcern {
    /// Nothing awaited.
    FireAndForget,
    /// Received and validated.
    Memory,
    /// Merged into in-memory state.
    Applied,
    /// Confirmed by backups.
    Replicated,
    /// Written to durable storage.
    Persisted,
}

/// One client operation (core.md §5.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClientOp {
    /// Op id, echoed in OP_ACK / OP_REJECTED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Target map.
    pub map_name: String,
    /// Target key.
    pub key: String,
    /// `PUT`, `REMOVE`, `OR_ADD`, `OR_REMOVE` (other strings tolerated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_type: Option<String>,
    /// LWW record; `Some(None)` = explicit nil.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub record: Option<Option<LwwRecord>>,
    /// OR add record; `Some(None)` = explicit nil.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub or_record: Option<Option<OrMapRecord>>,
    /// OR remove tag; `Some(None)` = explicit nil.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub or_tag: Option<Option<String>>,
    /// Requested level for this op.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_concern: Option<WriteConcern>,
    /// Ms to wait for the write concern.
    #[serde(
        default,
        deserialize_with = "opt_u64_flex",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<u64>,
}

/// What an op does, after the classification rules of core.md §5.2.
#[derive(Debug, Clone, PartialEq)]
pub enum OpKind<'a> {
    /// OR-Map add.
    OrAdd(&'a OrMapRecord),
    /// OR-Map remove of one tag.
    OrRemove(&'a str),
    /// LWW merge of a record (tombstone if its value is nil).
    LwwPut(&'a LwwRecord),
    /// LWW remove stamped by the server clock.
    LwwRemove,
}

impl ClientOp {
    /// Classifies the op by the first matching rule of core.md §5.2; `None` = invalid.
    pub fn kind(&self) -> Option<OpKind<'_>> {
        let op_type = self.op_type.as_deref();
        let or_record = self.or_record.as_ref().and_then(|r| r.as_ref());
        let or_tag = self.or_tag.as_ref().and_then(|t| t.as_deref());
        if op_type == Some("OR_ADD") || (op_type.is_none() && or_record.is_some()) {
            return or_record.map(OpKind::OrAdd);
        }
        if op_type == Some("OR_REMOVE")
            || (op_type.is_none() && or_tag.is_some() && self.or_record.is_none())
        {
            return or_tag.map(OpKind::OrRemove);
        }
        if let Some(Some(record)) = &self.record {
            return Some(OpKind::LwwPut(record));
        }
        if op_type == Some("REMOVE") || matches!(self.record, Some(None)) {
            return Some(OpKind::LwwRemove);
        }
        None
    }
}

/// CLIENT_OP payload wrapper is the op itself.
pub type ClientOpPayload = ClientOp;

/// OP_BATCH payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct OpBatchPayload {
    /// Ops in order.
    pub ops: Vec<ClientOp>,
    /// Default level for ops without their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_concern: Option<WriteConcern>,
    /// Default timeout (ms).
    #[serde(
        default,
        deserialize_with = "opt_u64_flex",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<u64>,
}

/// Per-op result inside OP_ACK.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpResult {
    /// The op's id.
    pub op_id: String,
    /// Whether it reached its level.
    pub success: bool,
    /// Highest level reached.
    pub achieved_level: WriteConcern,
    /// Failure text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// OP_ACK payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpAckPayload {
    /// Id of the last op covered.
    pub last_id: String,
    /// Lowest level reached across the batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub achieved_level: Option<WriteConcern>,
    /// Per-op results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<OpResult>>,
}

/// OP_REJECTED payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpRejectedPayload {
    /// Id of the rejected op.
    pub op_id: String,
    /// Human-readable reason.
    pub reason: String,
    /// 400, 401, 403, 413, …
    #[serde(
        default,
        deserialize_with = "opt_u64_flex",
        skip_serializing_if = "Option::is_none"
    )]
    pub code: Option<u64>,
}

/// MERGE_REJECTED (flat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MergeRejected {
    /// Map.
    pub map_name: String,
    /// Key.
    pub key: String,
    /// The refused value.
    #[serde(default = "crate::numbers::nil")]
    pub attempted_value: Value,
    /// Why.
    pub reason: String,
    /// Timestamp of the refused write.
    pub timestamp: Timestamp,
}

/// Event kinds of SERVER_EVENT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerEventType {
    /// LWW put.
    Put,
    /// LWW remove (tombstone record included).
    Remove,
    /// OR add.
    OrAdd,
    /// OR remove.
    OrRemove,
}

/// SERVER_EVENT payload, also one element of SERVER_BATCH_EVENT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerEventPayload {
    /// Map.
    pub map_name: String,
    /// Kind.
    pub event_type: ServerEventType,
    /// Key.
    pub key: String,
    /// PUT / REMOVE: the record now stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<LwwRecord>,
    /// OR_ADD: the record added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub or_record: Option<OrMapRecord>,
    /// OR tag added / removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub or_tag: Option<String>,
}

/// SERVER_BATCH_EVENT payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerBatchEventPayload {
    /// Events in order.
    pub events: Vec<ServerEventPayload>,
}

/// GC_PRUNE payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcPrunePayload {
    /// Prune threshold.
    pub older_than: Timestamp,
}

/// ERROR payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorPayload {
    /// HTTP-like code.
    #[serde(deserialize_with = "u64_flex")]
    pub code: u64,
    /// Human-readable text.
    pub message: String,
    /// Extra data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

/// SYNC_INIT (flat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncInit {
    /// Map to sync.
    pub map_name: String,
    /// Millis of the last server timestamp the client saw.
    #[serde(
        default,
        deserialize_with = "opt_u64_flex",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_sync_timestamp: Option<u64>,
}

/// SYNC_RESP_ROOT / ORMAP_SYNC_RESP_ROOT payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncRespRootPayload {
    /// Map.
    pub map_name: String,
    /// Root hash (0 if empty).
    #[serde(deserialize_with = "u32_flex")]
    pub root_hash: u32,
    /// Server `hlc.now()`.
    pub timestamp: Timestamp,
}

/// MERKLE_REQ_BUCKET / ORMAP_MERKLE_REQ_BUCKET payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MerkleReqBucketPayload {
    /// Map.
    pub map_name: String,
    /// "" or 1–3 lowercase hex chars.
    pub path: String,
}

/// SYNC_RESP_BUCKETS / ORMAP_SYNC_RESP_BUCKETS payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncRespBucketsPayload {
    /// Map.
    pub map_name: String,
    /// Echo of the path.
    pub path: String,
    /// Child hex char -> hash.
    #[serde(deserialize_with = "hash_map_flex")]
    pub buckets: BTreeMap<String, u32>,
}

/// One LWW leaf entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeafRecord {
    /// Key.
    pub key: String,
    /// The record exactly as stored.
    pub record: LwwRecord,
}

/// SYNC_RESP_LEAF payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncRespLeafPayload {
    /// Map.
    pub map_name: String,
    /// Echo of the path.
    pub path: String,
    /// Every entry of the leaf.
    pub records: Vec<LeafRecord>,
}

/// SYNC_RESET_REQUIRED payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncResetRequiredPayload {
    /// Map.
    pub map_name: String,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// ORMAP_SYNC_INIT (flat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrMapSyncInit {
    /// Map.
    pub map_name: String,
    /// Client's OR tree root.
    #[serde(default, deserialize_with = "u32_flex")]
    pub root_hash: u32,
    /// Client's `getBuckets("")`.
    #[serde(default, deserialize_with = "hash_map_flex")]
    pub bucket_hashes: BTreeMap<String, u32>,
    /// As for SYNC_INIT.
    #[serde(
        default,
        deserialize_with = "opt_u64_flex",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_sync_timestamp: Option<u64>,
}

/// ORMAP_SYNC_RESP_LEAF payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrMapSyncRespLeafPayload {
    /// Map.
    pub map_name: String,
    /// Echo of the path.
    pub path: String,
    /// One entry per key in the leaf.
    pub entries: Vec<OrMapEntry>,
}

/// ORMAP_DIFF_REQUEST payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrMapDiffRequestPayload {
    /// Map.
    pub map_name: String,
    /// Keys wanted.
    pub keys: Vec<String>,
}

/// ORMAP_DIFF_RESPONSE / ORMAP_PUSH_DIFF payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrMapEntriesPayload {
    /// Map.
    pub map_name: String,
    /// Entries.
    pub entries: Vec<OrMapEntry>,
}

/// PARTITION_MAP_REQUEST payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PartitionMapRequestPayload {
    /// Version the client holds.
    #[serde(
        default,
        deserialize_with = "opt_u64_flex",
        skip_serializing_if = "Option::is_none"
    )]
    pub current_version: Option<u64>,
}

/// Endpoints of a cluster member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeEndpoints {
    /// WebSocket URL the client opens.
    pub websocket: String,
    /// HTTP URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
}

/// A member in PARTITION_MAP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    /// Node id.
    pub node_id: String,
    /// Endpoints.
    pub endpoints: NodeEndpoints,
    /// ACTIVE, JOINING, LEAVING, SUSPECTED, FAILED.
    pub status: String,
}

/// A partition in PARTITION_MAP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionInfo {
    /// Partition id.
    #[serde(deserialize_with = "u32_flex")]
    pub partition_id: u32,
    /// Owner node.
    pub owner_node_id: String,
    /// Backup nodes.
    #[serde(default)]
    pub backup_node_ids: Vec<String>,
}

/// PARTITION_MAP payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionMapPayload {
    /// Increases on every topology change.
    #[serde(deserialize_with = "u64_flex")]
    pub version: u64,
    /// 271.
    #[serde(deserialize_with = "u32_flex")]
    pub partition_count: u32,
    /// Members.
    pub nodes: Vec<NodeInfo>,
    /// One per partition, sorted by id.
    pub partitions: Vec<PartitionInfo>,
    /// Creation time.
    #[serde(deserialize_with = "u64_flex")]
    pub generated_at: u64,
}

/// One change in PARTITION_MAP_DELTA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionChange {
    /// Partition id.
    #[serde(deserialize_with = "u32_flex")]
    pub partition_id: u32,
    /// Old owner.
    pub previous_owner: String,
    /// New owner.
    pub new_owner: String,
    /// REBALANCE, FAILOVER, JOIN, LEAVE.
    pub reason: String,
}

/// PARTITION_MAP_DELTA payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionMapDeltaPayload {
    /// New version.
    #[serde(deserialize_with = "u64_flex")]
    pub version: u64,
    /// Version it applies to.
    #[serde(deserialize_with = "u64_flex")]
    pub previous_version: u64,
    /// Changes.
    pub changes: Vec<PartitionChange>,
    /// Creation time.
    #[serde(deserialize_with = "u64_flex")]
    pub timestamp: u64,
}
