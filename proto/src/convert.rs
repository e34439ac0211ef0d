//! Conversions between wire types (MsgPack, `rmpv` values) and gRPC messages. Values
//! cross gRPC as MsgPack bytes so user data keeps every MsgPack distinction.

use crate::grpc::common as pb;
use crate::hlc::Timestamp;
use crate::wire::{self, LwwRecord, OrMapRecord, WriteConcern};

/// A gRPC message that failed validation on receipt.
#[derive(Debug, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct ConvertError {
    /// Which field.
    pub field: &'static str,
    /// What was wrong.
    pub reason: String,
}

impl From<&Timestamp> for pb::Timestamp {
    fn from(ts: &Timestamp) -> Self {
        pb::Timestamp {
            millis: ts.millis,
            counter: ts.counter,
            node_id: ts.node_id.clone(),
        }
    }
}

impl From<pb::Timestamp> for Timestamp {
    fn from(ts: pb::Timestamp) -> Self {
        Timestamp {
            millis: ts.millis,
            counter: ts.counter,
            node_id: ts.node_id,
        }
    }
}

/// Reads a required timestamp.
pub fn timestamp_from(
    ts: Option<pb::Timestamp>,
    field: &'static str,
) -> Result<Timestamp, ConvertError> {
    ts.map(Timestamp::from).ok_or(ConvertError {
        field,
        reason: "missing timestamp".into(),
    })
}

impl From<&LwwRecord> for pb::LwwRecord {
    fn from(r: &LwwRecord) -> Self {
        pb::LwwRecord {
            value: wire::encode_value(&r.value),
            timestamp: Some((&r.timestamp).into()),
            ttl_ms: r.ttl_ms,
        }
    }
}

impl TryFrom<pb::LwwRecord> for LwwRecord {
    type Error = ConvertError;
    fn try_from(r: pb::LwwRecord) -> Result<Self, ConvertError> {
        Ok(LwwRecord {
            value: decode_value_field(&r.value, "lww.value")?,
            timestamp: timestamp_from(r.timestamp, "lww.timestamp")?,
            ttl_ms: r.ttl_ms,
        })
    }
}

impl From<&OrMapRecord> for pb::OrRecord {
    fn from(r: &OrMapRecord) -> Self {
        pb::OrRecord {
            value: wire::encode_value(&r.value),
            timestamp: Some((&r.timestamp).into()),
            tag: r.tag.clone(),
            ttl_ms: r.ttl_ms,
        }
    }
}

impl TryFrom<pb::OrRecord> for OrMapRecord {
    type Error = ConvertError;
    fn try_from(r: pb::OrRecord) -> Result<Self, ConvertError> {
        Ok(OrMapRecord {
            value: decode_value_field(&r.value, "or.value")?,
            timestamp: timestamp_from(r.timestamp, "or.timestamp")?,
            tag: r.tag,
            ttl_ms: r.ttl_ms,
        })
    }
}

/// Decodes a MsgPack value field; empty bytes count as nil.
pub fn decode_value_field(bytes: &[u8], field: &'static str) -> Result<rmpv::Value, ConvertError> {
    if bytes.is_empty() {
        return Ok(rmpv::Value::Nil);
    }
    wire::decode_value(bytes).map_err(|reason| ConvertError { field, reason })
}

impl From<WriteConcern> for pb::WriteConcern {
    fn from(w: WriteConcern) -> Self {
        match w {
            WriteConcern::FireAndForget => pb::WriteConcern::FireAndForget,
            WriteConcern::Memory => pb::WriteConcern::Memory,
            WriteConcern::Applied => pb::WriteConcern::Applied,
            WriteConcern::Replicated => pb::WriteConcern::Replicated,
            WriteConcern::Persisted => pb::WriteConcern::Persisted,
        }
    }
}

impl From<pb::WriteConcern> for WriteConcern {
    fn from(w: pb::WriteConcern) -> Self {
        match w {
            pb::WriteConcern::FireAndForget => WriteConcern::FireAndForget,
            pb::WriteConcern::Memory => WriteConcern::Memory,
            pb::WriteConcern::Applied => WriteConcern::Applied,
            pb::WriteConcern::Replicated => WriteConcern::Replicated,
            pb::WriteConcern::Persisted => WriteConcern::Persisted,
        }
    }
}
