//! Domain forms of the incoming gRPC messages. Each prost message is validated once,
//! on receipt, with `TryFrom`: prost `Option`s, open enums and raw MsgPack bytes never
//! reach the CRDT code, and bad input is refused before anything changes.

use crate::config::PartitionSet;
use crate::error::SyncError;
use crate::merkle::NodePath;
use rmpv::Value;
use topgun_proto::convert::decode_value_field;
use topgun_proto::grpc::common as pb_common;
use topgun_proto::grpc::sync as pb;
use topgun_proto::hash::fnv1a;
use topgun_proto::hlc::Timestamp;
use topgun_proto::partition::PARTITION_COUNT;
use topgun_proto::predicate::Position;
use topgun_proto::wire::{self, LwwRecord, OrMapRecord};

/// Which of a name's two independent stores a request addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MapKind {
    /// LWW-Map.
    Lww,
    /// OR-Map.
    Or,
}

impl MapKind {
    /// Reads the open protobuf enum.
    pub fn from_proto(value: i32) -> Result<Self, SyncError> {
        match pb_common::MapKind::try_from(value) {
            Ok(pb_common::MapKind::Lww) => Ok(MapKind::Lww),
            Ok(pb_common::MapKind::Or) => Ok(MapKind::Or),
            Err(_) => Err(SyncError::invalid(format!("unknown map kind {value}"))),
        }
    }

    /// The protobuf enum value.
    pub fn to_proto(self) -> pb_common::MapKind {
        match self {
            MapKind::Lww => pb_common::MapKind::Lww,
            MapKind::Or => pb_common::MapKind::Or,
        }
    }
}

/// A key with its `fnv1a` hash, computed once: the hash gives both the partition and
/// the Merkle path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashedKey {
    /// The key.
    pub key: String,
    /// `fnv1a(key)`.
    pub hash: u32,
}

impl HashedKey {
    /// Hashes `key`.
    pub fn new(key: impl Into<String>) -> Self {
        let key = key.into();
        let hash = fnv1a(&key);
        HashedKey { key, hash }
    }

    /// The partition that owns the key.
    pub fn partition(&self) -> u32 {
        self.hash % PARTITION_COUNT
    }
}

/// What an op does.
#[derive(Debug, Clone, PartialEq)]
pub enum OpKind {
    /// LWW merge of a client record (nil value = tombstone).
    LwwPut(LwwRecord),
    /// LWW remove without a record: the shard stamps the tombstone.
    LwwRemove,
    /// OR-Map add.
    OrAdd(OrMapRecord),
    /// OR-Map remove of one tag.
    OrRemove(String),
    /// OR-Map key merge from a client's push diff.
    OrMerge {
        /// Records to merge.
        records: Vec<OrMapRecord>,
        /// Tags the client has tombstoned.
        tombstones: Vec<String>,
    },
}

impl OpKind {
    /// Short name of the op type, as used in metric labels.
    pub fn label(&self) -> &'static str {
        match self {
            OpKind::LwwPut(_) => "lww_put",
            OpKind::LwwRemove => "lww_remove",
            OpKind::OrAdd(_) => "or_add",
            OpKind::OrRemove(_) => "or_remove",
            OpKind::OrMerge { .. } => "or_merge",
        }
    }

    /// The store the op writes to.
    pub fn map_kind(&self) -> MapKind {
        match self {
            OpKind::LwwPut(_) | OpKind::LwwRemove => MapKind::Lww,
            OpKind::OrAdd(_) | OpKind::OrRemove(_) | OpKind::OrMerge { .. } => MapKind::Or,
        }
    }
}

/// One validated op.
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    /// Client op id (may be empty).
    pub op_id: String,
    /// Target map.
    pub map_name: String,
    /// Target key.
    pub key: HashedKey,
    /// What to do.
    pub kind: OpKind,
}

/// Who caused a change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// Gateway instance id.
    pub gateway_id: String,
    /// Connection id within that gateway.
    pub connection_id: u64,
}

impl Origin {
    /// The protobuf form.
    pub fn to_proto(&self) -> pb_common::Origin {
        pb_common::Origin {
            gateway_id: self.gateway_id.clone(),
            connection_id: self.connection_id,
        }
    }
}

impl From<Option<pb_common::Origin>> for Origin {
    fn from(origin: Option<pb_common::Origin>) -> Self {
        origin
            .map(|o| Origin {
                gateway_id: o.gateway_id,
                connection_id: o.connection_id,
            })
            .unwrap_or_default()
    }
}

/// Acknowledgement levels, in increasing order.
pub type WriteConcern = wire::WriteConcern;

/// A validated ApplyBatch.
#[derive(Debug, Clone)]
pub struct ApplyBatch {
    /// The ops, in order.
    pub ops: Vec<Op>,
    /// Level the caller waits for.
    pub write_concern: WriteConcern,
    /// Who sent it.
    pub origin: Origin,
}

impl TryFrom<pb::ApplyBatchRequest> for ApplyBatch {
    type Error = SyncError;

    fn try_from(req: pb::ApplyBatchRequest) -> Result<Self, SyncError> {
        let write_concern = pb_common::WriteConcern::try_from(req.write_concern)
            .map(WriteConcern::from)
            .map_err(|_| {
                SyncError::invalid(format!("unknown write concern {}", req.write_concern))
            })?;
        let ops = req
            .ops
            .into_iter()
            .enumerate()
            .map(|(i, op)| {
                Op::try_from(op).map_err(|e| SyncError::invalid(format!("op #{i}: {}", strip(&e))))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ApplyBatch {
            ops,
            write_concern,
            origin: req.origin.into(),
        })
    }
}

/// The message of an InvalidArgument without its prefix, for nesting.
fn strip(err: &SyncError) -> String {
    match err {
        SyncError::InvalidArgument(msg) => msg.clone(),
        other => other.to_string(),
    }
}

impl TryFrom<pb::Op> for Op {
    type Error = SyncError;

    fn try_from(op: pb::Op) -> Result<Self, SyncError> {
        check_map_name(&op.map_name)?;
        check_text(&op.key, "key")?;
        let kind = match op.kind {
            None => return Err(SyncError::invalid("op kind is missing")),
            Some(pb::op::Kind::LwwPut(record)) => OpKind::LwwPut(lww_record(record)?),
            Some(pb::op::Kind::LwwRemove(pb::LwwRemove {})) => OpKind::LwwRemove,
            Some(pb::op::Kind::OrAdd(record)) => OpKind::OrAdd(or_record(record)?),
            Some(pb::op::Kind::OrRemoveTag(tag)) => {
                check_tag(&tag)?;
                OpKind::OrRemove(tag)
            }
            Some(pb::op::Kind::OrMerge(merge)) => {
                for tag in &merge.tombstones {
                    check_tag(tag)?;
                }
                OpKind::OrMerge {
                    records: merge
                        .records
                        .into_iter()
                        .map(or_record)
                        .collect::<Result<_, _>>()?,
                    tombstones: merge.tombstones,
                }
            }
        };
        Ok(Op {
            op_id: op.op_id,
            map_name: op.map_name,
            key: HashedKey::new(op.key),
            kind,
        })
    }
}

/// Validates an LWW record: timestamp present and storable, value decodable.
pub fn lww_record(record: pb_common::LwwRecord) -> Result<LwwRecord, SyncError> {
    let timestamp = timestamp(record.timestamp, "record.timestamp")?;
    check_wide(record.ttl_ms, "record.ttl_ms")?;
    Ok(LwwRecord {
        value: decode_value_field(&record.value, "record.value")?,
        timestamp,
        ttl_ms: record.ttl_ms,
    })
}

/// Validates an OR record: timestamp present and storable, tag non-empty.
pub fn or_record(record: pb_common::OrRecord) -> Result<OrMapRecord, SyncError> {
    let timestamp = timestamp(record.timestamp, "or_record.timestamp")?;
    check_tag(&record.tag)?;
    check_wide(record.ttl_ms, "or_record.ttl_ms")?;
    Ok(OrMapRecord {
        value: decode_value_field(&record.value, "or_record.value")?,
        timestamp,
        tag: record.tag,
        ttl_ms: record.ttl_ms,
    })
}

/// Validates a timestamp: present, with numbers storage can hold (63 bits) and a node id
/// without NUL.
pub fn timestamp(ts: Option<pb_common::Timestamp>, field: &str) -> Result<Timestamp, SyncError> {
    let ts = ts.ok_or_else(|| SyncError::invalid(format!("{field} is missing")))?;
    check_wide(Some(ts.millis), field)?;
    check_wide(Some(ts.counter), field)?;
    check_text(&ts.node_id, field)?;
    Ok(Timestamp::from(ts))
}

/// Storage keeps numbers as signed 64-bit integers.
fn check_wide(value: Option<u64>, field: &str) -> Result<(), SyncError> {
    match value {
        Some(v) if v > i64::MAX as u64 => {
            Err(SyncError::invalid(format!("{field} {v} exceeds 2^63-1")))
        }
        _ => Ok(()),
    }
}

/// Rejects NUL, which PostgreSQL text columns cannot hold: accepting it would make the
/// row unstorable and block persistence.
fn check_text(value: &str, field: &str) -> Result<(), SyncError> {
    if value.contains('\0') {
        return Err(SyncError::invalid(format!(
            "{field} must not contain NUL characters"
        )));
    }
    Ok(())
}

/// Map names: non-empty, storable.
pub fn check_map_name(name: &str) -> Result<(), SyncError> {
    if name.is_empty() {
        return Err(SyncError::invalid("map_name must not be empty"));
    }
    check_text(name, "map_name")
}

fn check_tag(tag: &str) -> Result<(), SyncError> {
    if tag.is_empty() {
        return Err(SyncError::invalid("OR tag must not be empty"));
    }
    check_text(tag, "OR tag")
}

/// A validated GetRecords.
#[derive(Debug, Clone)]
pub struct GetRecords {
    /// Map.
    pub map_name: String,
    /// Store.
    pub kind: MapKind,
    /// Keys to read.
    pub keys: Vec<HashedKey>,
}

impl TryFrom<pb::GetRecordsRequest> for GetRecords {
    type Error = SyncError;

    fn try_from(req: pb::GetRecordsRequest) -> Result<Self, SyncError> {
        check_map_name(&req.map_name)?;
        Ok(GetRecords {
            kind: MapKind::from_proto(req.kind)?,
            map_name: req.map_name,
            keys: req.keys.into_iter().map(HashedKey::new).collect(),
        })
    }
}

/// Default and maximum page sizes of ScanMap.
pub const SCAN_DEFAULT_LIMIT: usize = 1_000;
/// Largest page ScanMap returns, whatever the caller asks.
pub const SCAN_MAX_LIMIT: usize = 10_000;

/// A validated ScanMap.
#[derive(Debug, Clone)]
pub struct ScanMap {
    /// Map.
    pub map_name: String,
    /// Store.
    pub kind: MapKind,
    /// Exclusive lower bound.
    pub after_key: Option<String>,
    /// Page size (already defaulted and capped).
    pub limit: usize,
    /// Only LWW records strictly newer than this.
    pub since: Option<Timestamp>,
}

impl TryFrom<pb::ScanMapRequest> for ScanMap {
    type Error = SyncError;

    fn try_from(req: pb::ScanMapRequest) -> Result<Self, SyncError> {
        check_map_name(&req.map_name)?;
        let limit = match req.limit as usize {
            0 => SCAN_DEFAULT_LIMIT,
            n => n.min(SCAN_MAX_LIMIT),
        };
        let since = match req.since {
            Some(ts) => Some(timestamp(Some(ts), "since")?),
            None => None,
        };
        Ok(ScanMap {
            kind: MapKind::from_proto(req.kind)?,
            map_name: req.map_name,
            after_key: req.after_key.filter(|k| !k.is_empty()),
            limit,
            since,
        })
    }
}

/// Most keys a ChangedSince answer may carry, whatever the caller asks for.
pub const CHANGED_SINCE_MAX_LIMIT: usize = 100_000;

/// A validated ChangedSince.
#[derive(Debug, Clone)]
pub struct ChangedSince {
    /// LWW map.
    pub map_name: String,
    /// Shard clock millis; changes at or after it are wanted.
    pub since_millis: u64,
    /// Most keys to return (capped at [`CHANGED_SINCE_MAX_LIMIT`]).
    pub limit: usize,
}

impl TryFrom<pb::ChangedSinceRequest> for ChangedSince {
    type Error = SyncError;

    fn try_from(req: pb::ChangedSinceRequest) -> Result<Self, SyncError> {
        check_map_name(&req.map_name)?;
        if req.since_millis == 0 {
            return Err(SyncError::InvalidArgument(
                "since_millis must be a server time above 0".into(),
            ));
        }
        Ok(ChangedSince {
            map_name: req.map_name,
            since_millis: req.since_millis,
            limit: (req.limit as usize).min(CHANGED_SINCE_MAX_LIMIT),
        })
    }
}

/// A validated RunQuery.
#[derive(Debug, Clone)]
pub struct RunQuery {
    /// LWW map to query.
    pub map_name: String,
    /// The decoded wire query.
    pub query: wire::Query,
    /// At most this many rows (0 = all).
    pub limit: usize,
    /// Only rows strictly after this position.
    pub after: Option<Position>,
}

impl TryFrom<pb::RunQueryRequest> for RunQuery {
    type Error = SyncError;

    fn try_from(req: pb::RunQueryRequest) -> Result<Self, SyncError> {
        check_map_name(&req.map_name)?;
        // Empty bytes mean "no filter, no sort": every live record matches.
        let query = if req.query.is_empty() {
            wire::Query::default()
        } else {
            wire::decode_body::<wire::Query>(&req.query)
                .map_err(|e| SyncError::invalid(format!("query is not a MsgPack Query map: {e}")))?
        };
        let after = match req.after.as_deref() {
            None | Some([]) => None,
            Some(bytes) => {
                let value: Value = wire::decode_value(bytes)
                    .map_err(|e| SyncError::invalid(format!("after is not MsgPack: {e}")))?;
                Some(Position::from_value(&value).ok_or_else(|| {
                    SyncError::invalid("after must be a MsgPack array [sortValues..., key]")
                })?)
            }
        };
        Ok(RunQuery {
            map_name: req.map_name,
            query,
            limit: req.limit as usize,
            after,
        })
    }
}

/// A validated MerkleNode request.
#[derive(Debug, Clone)]
pub struct MerkleNodeQuery {
    /// Map.
    pub map_name: String,
    /// Which tree.
    pub kind: MapKind,
    /// The node.
    pub path: NodePath,
}

impl TryFrom<pb::MerkleNodeRequest> for MerkleNodeQuery {
    type Error = SyncError;

    fn try_from(req: pb::MerkleNodeRequest) -> Result<Self, SyncError> {
        check_map_name(&req.map_name)?;
        let path = NodePath::parse(&req.path).ok_or_else(|| {
            SyncError::invalid(format!(
                "path must be \"\" or 1-3 lowercase hex characters, got {:?}",
                req.path
            ))
        })?;
        Ok(MerkleNodeQuery {
            kind: MapKind::from_proto(req.kind)?,
            map_name: req.map_name,
            path,
        })
    }
}

/// A validated PublishTopic.
#[derive(Debug, Clone)]
pub struct Publish {
    /// Topic name.
    pub topic: String,
    /// MsgPack payload, relayed untouched.
    pub data: Vec<u8>,
    /// Sender.
    pub origin: Origin,
    /// Publisher id, if any.
    pub publisher_id: Option<String>,
}

/// Largest topic payload relayed.
pub const MAX_TOPIC_PAYLOAD: usize = 1024 * 1024;

impl TryFrom<pb::PublishTopicRequest> for Publish {
    type Error = SyncError;

    fn try_from(req: pb::PublishTopicRequest) -> Result<Self, SyncError> {
        if req.topic.is_empty() {
            return Err(SyncError::invalid("topic must not be empty"));
        }
        if req.data.len() > MAX_TOPIC_PAYLOAD {
            return Err(SyncError::invalid(format!(
                "topic payload of {} bytes exceeds {MAX_TOPIC_PAYLOAD}",
                req.data.len()
            )));
        }
        Ok(Publish {
            topic: req.topic,
            data: req.data,
            origin: req.origin.into(),
            publisher_id: req.publisher_id,
        })
    }
}

/// A validated SetPartitions: the complete new set of owned partitions.
#[derive(Debug, Clone)]
pub struct SetPartitions {
    /// The partitions to own (possibly none).
    pub partitions: PartitionSet,
    /// Ownership version; only one above the shard's current version applies.
    pub version: u64,
    /// Reload the kept partitions from storage after the settle delay too.
    pub reload_kept: bool,
}

impl TryFrom<pb::SetPartitionsRequest> for SetPartitions {
    type Error = SyncError;

    fn try_from(req: pb::SetPartitionsRequest) -> Result<Self, SyncError> {
        if let Some(bad) = req.partitions.iter().find(|p| **p >= PARTITION_COUNT) {
            return Err(SyncError::invalid(format!(
                "partition {bad} is not below {PARTITION_COUNT}"
            )));
        }
        Ok(SetPartitions {
            partitions: PartitionSet::from_list(req.partitions),
            version: req.version,
            reload_kept: req.reload_kept,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts() -> Option<pb_common::Timestamp> {
        Some(pb_common::Timestamp {
            millis: 1,
            counter: 0,
            node_id: "n".into(),
        })
    }

    fn op(kind: Option<pb::op::Kind>) -> pb::Op {
        pb::Op {
            op_id: "1".into(),
            map_name: "m".into(),
            key: "k".into(),
            kind,
        }
    }

    #[test]
    fn valid_ops_convert() {
        let put = pb::op::Kind::LwwPut(pb_common::LwwRecord {
            value: wire::encode_value(&Value::from("v")),
            timestamp: ts(),
            ttl_ms: Some(5),
        });
        let valid = Op::try_from(op(Some(put))).expect("valid");
        assert_eq!(valid.key, HashedKey::new("k"));
        assert!(matches!(
            valid.kind,
            OpKind::LwwPut(LwwRecord {
                ttl_ms: Some(5),
                ..
            })
        ));
        // Empty value bytes are a tombstone.
        let tomb = pb::op::Kind::LwwPut(pb_common::LwwRecord {
            value: vec![],
            timestamp: ts(),
            ttl_ms: None,
        });
        assert!(
            matches!(Op::try_from(op(Some(tomb))).map(|o| o.kind), Ok(OpKind::LwwPut(r)) if r.is_tombstone())
        );
    }

    #[test]
    fn junk_is_refused() {
        let cases = vec![
            op(None),
            pb::Op {
                map_name: String::new(),
                ..op(Some(pb::op::Kind::LwwRemove(pb::LwwRemove {})))
            },
            pb::Op {
                key: "a\0b".into(),
                ..op(Some(pb::op::Kind::LwwRemove(pb::LwwRemove {})))
            },
            op(Some(pb::op::Kind::LwwPut(pb_common::LwwRecord {
                value: vec![0x92, 0x01],
                timestamp: ts(),
                ttl_ms: None,
            }))),
            op(Some(pb::op::Kind::LwwPut(pb_common::LwwRecord {
                value: vec![],
                timestamp: None,
                ttl_ms: None,
            }))),
            op(Some(pb::op::Kind::OrRemoveTag(String::new()))),
            op(Some(pb::op::Kind::OrAdd(pb_common::OrRecord {
                value: vec![],
                timestamp: Some(pb_common::Timestamp {
                    millis: u64::MAX,
                    counter: 0,
                    node_id: "n".into(),
                }),
                tag: "t".into(),
                ttl_ms: None,
            }))),
        ];
        for case in cases {
            let err = Op::try_from(case.clone()).expect_err("invalid");
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{case:?}: {err}");
        }
        let bad_batch = pb::ApplyBatchRequest {
            ops: vec![],
            write_concern: 99,
            origin: None,
        };
        assert!(ApplyBatch::try_from(bad_batch).is_err());
    }

    #[test]
    fn paths_queries_and_positions_are_checked() {
        let req = pb::MerkleNodeRequest {
            map_name: "m".into(),
            kind: 0,
            path: "xyz".into(),
        };
        assert!(MerkleNodeQuery::try_from(req).is_err());
        let req = pb::MerkleNodeRequest {
            map_name: "m".into(),
            kind: 7,
            path: "".into(),
        };
        assert!(MerkleNodeQuery::try_from(req).is_err());
        let req = pb::RunQueryRequest {
            map_name: "m".into(),
            query: vec![0x01],
            limit: 0,
            after: None,
        };
        assert!(RunQuery::try_from(req).is_err());
        let after = wire::encode_value(&Value::Array(vec![Value::from(1)]));
        let req = pb::RunQueryRequest {
            map_name: "m".into(),
            query: vec![],
            limit: 0,
            after: Some(after),
        };
        assert!(
            RunQuery::try_from(req).is_err(),
            "last element must be the key"
        );
        let scan = ScanMap::try_from(pb::ScanMapRequest {
            map_name: "m".into(),
            limit: 1_000_000,
            ..Default::default()
        })
        .expect("valid");
        assert_eq!(scan.limit, SCAN_MAX_LIMIT);
    }

    #[test]
    fn set_partitions_refuses_partitions_out_of_range() {
        let ok = SetPartitions::try_from(pb::SetPartitionsRequest {
            partitions: vec![270, 3, 3],
            version: 2,
            reload_kept: true,
        })
        .expect("valid");
        assert_eq!(ok.partitions.as_slice(), &[3, 270]);
        assert!(ok.reload_kept);
        let err = SetPartitions::try_from(pb::SetPartitionsRequest {
            partitions: vec![1, 271],
            version: 2,
            reload_kept: false,
        })
        .expect_err("271 is out of range");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }
}
