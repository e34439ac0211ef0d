//! Server → client messages: frame decoding (binary MsgPack, BATCH envelopes, JSON text)
//! and the typed view the scenarios work with (core.md §1.2–1.6).

use crate::clock::Timestamp;
use crate::error::BenchError;
use rmpv::Value;

/// One per-op result inside OP_ACK (core.md §5.6).
#[derive(Debug, Clone, PartialEq)]
pub struct OpResult {
    /// The op id.
    pub op_id: String,
    /// Whether the op reached its requested level.
    pub success: bool,
    /// Highest level reached, as sent.
    pub achieved_level: Option<String>,
    /// Failure text.
    pub error: Option<String>,
}

/// One record of a Merkle leaf; the value is not kept because the hash does not use it.
#[derive(Debug, Clone, PartialEq)]
pub struct LeafRecord {
    /// Record key.
    pub key: String,
    /// Record timestamp.
    pub timestamp: Timestamp,
}

/// The server messages the load generator understands; everything else is `Other`.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMsg {
    /// The server wants a token.
    AuthRequired,
    /// Authentication succeeded.
    AuthAck,
    /// Authentication failed.
    AuthFail {
        /// Reason text, if any.
        error: String,
    },
    /// A batch was acknowledged up to `last_id`.
    OpAck {
        /// Id of the last op covered.
        last_id: String,
        /// Level reached by the batch as a whole.
        achieved_level: Option<String>,
        /// Per-op results, when sent.
        results: Vec<OpResult>,
    },
    /// One op was refused.
    OpRejected {
        /// The refused op.
        op_id: String,
        /// Why.
        reason: String,
        /// Numeric code, if sent.
        code: Option<i64>,
    },
    /// A protocol-level error.
    Error {
        /// Numeric code (HTTP-like).
        code: Option<i64>,
        /// Text.
        message: String,
    },
    /// A conflict resolver refused a write.
    MergeRejected {
        /// Map of the write.
        map_name: String,
        /// Key of the write.
        key: String,
        /// Why.
        reason: String,
    },
    /// Initial results of a live query.
    QueryResp {
        /// Subscription id.
        query_id: String,
        /// Number of results.
        results: usize,
    },
    /// One change of a live query.
    QueryUpdate {
        /// Subscription id.
        query_id: String,
        /// Record key.
        key: String,
        /// `ENTER`, `UPDATE` or `LEAVE`.
        change_type: String,
        /// New value (nil for LEAVE).
        value: Value,
    },
    /// Answer to a one-shot search.
    SearchResp {
        /// Echo of the request id.
        request_id: String,
        /// Number of results.
        results: usize,
        /// Set when the search failed.
        error: Option<String>,
    },
    /// Root of the server's Merkle tree.
    SyncRespRoot {
        /// Map.
        map_name: String,
        /// Root hash.
        root_hash: u32,
        /// Server HLC millis, the next `lastSyncTimestamp`.
        server_millis: Option<u64>,
    },
    /// Child hashes of one inner node.
    SyncRespBuckets {
        /// Map.
        map_name: String,
        /// Echo of the requested path.
        path: String,
        /// Child hex char → hash.
        buckets: Vec<(String, u32)>,
    },
    /// Records of one leaf (possibly one part of it).
    SyncRespLeaf {
        /// Map.
        map_name: String,
        /// Echo of the requested path.
        path: String,
        /// The records.
        records: Vec<LeafRecord>,
        /// Encoded size of this message, for per-leaf byte accounting.
        bytes: usize,
    },
    /// The server wants the client to drop its state.
    SyncResetRequired {
        /// Map.
        map_name: String,
        /// Why.
        reason: String,
    },
    /// SERVER_EVENT (1) or SERVER_BATCH_EVENT (n events).
    ServerEvents {
        /// Number of events carried.
        count: usize,
    },
    /// Heartbeat answer.
    Pong,
    /// Any other message type.
    Other {
        /// Its `type`.
        kind: String,
    },
}

impl ServerMsg {
    /// The wire type name, for diagnostics.
    pub fn kind(&self) -> &str {
        match self {
            ServerMsg::AuthRequired => "AUTH_REQUIRED",
            ServerMsg::AuthAck => "AUTH_ACK",
            ServerMsg::AuthFail { .. } => "AUTH_FAIL",
            ServerMsg::OpAck { .. } => "OP_ACK",
            ServerMsg::OpRejected { .. } => "OP_REJECTED",
            ServerMsg::Error { .. } => "ERROR",
            ServerMsg::MergeRejected { .. } => "MERGE_REJECTED",
            ServerMsg::QueryResp { .. } => "QUERY_RESP",
            ServerMsg::QueryUpdate { .. } => "QUERY_UPDATE",
            ServerMsg::SearchResp { .. } => "SEARCH_RESP",
            ServerMsg::SyncRespRoot { .. } => "SYNC_RESP_ROOT",
            ServerMsg::SyncRespBuckets { .. } => "SYNC_RESP_BUCKETS",
            ServerMsg::SyncRespLeaf { .. } => "SYNC_RESP_LEAF",
            ServerMsg::SyncResetRequired { .. } => "SYNC_RESET_REQUIRED",
            ServerMsg::ServerEvents { .. } => "SERVER_EVENT",
            ServerMsg::Pong => "PONG",
            ServerMsg::Other { kind } => kind,
        }
    }
}

fn malformed(kind: &str, what: &str) -> BenchError {
    BenchError::Protocol(format!("{kind}: {what}"))
}

/// Looks up a string key in a MsgPack map.
pub fn field<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    value
        .as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

/// An `int` field: any integer family or a whole-valued float (core.md §0, §1.3).
pub fn as_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Integer(i) => i.as_u64(),
        Value::F64(f) if f.fract() == 0.0 && *f >= 0.0 && *f < 18_446_744_073_709_551_616.0 => {
            Some(*f as u64)
        }
        Value::F32(f) if f.fract() == 0.0 && *f >= 0.0 => Some(*f as u64),
        _ => None,
    }
}

fn as_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Integer(i) => i.as_i64(),
        Value::F64(f) if f.fract() == 0.0 => Some(*f as i64),
        Value::F32(f) if f.fract() == 0.0 => Some(*f as i64),
        _ => None,
    }
}

fn str_field(value: &Value, key: &str, kind: &str) -> Result<String, BenchError> {
    field(value, key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| malformed(kind, &format!("missing string `{key}`")))
}

fn opt_str(value: &Value, key: &str) -> Option<String> {
    field(value, key)
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn payload<'a>(value: &'a Value, kind: &str) -> Result<&'a Value, BenchError> {
    field(value, "payload")
        .filter(|p| p.is_map())
        .ok_or_else(|| malformed(kind, "missing `payload` map"))
}

fn hash_u32(value: &Value, kind: &str, what: &str) -> Result<u32, BenchError> {
    as_u64(value)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| malformed(kind, &format!("{what} is not a u32: {value}")))
}

/// Decodes a wire timestamp map.
pub fn timestamp(value: &Value, kind: &str) -> Result<Timestamp, BenchError> {
    let millis = field(value, "millis")
        .and_then(as_u64)
        .ok_or_else(|| malformed(kind, "timestamp without millis"))?;
    let counter = field(value, "counter")
        .and_then(as_u64)
        .ok_or_else(|| malformed(kind, "timestamp without counter"))?;
    let node_id = str_field(value, "nodeId", kind)?;
    Ok(Timestamp {
        millis,
        counter,
        node_id,
    })
}

fn op_results(p: &Value) -> Result<Vec<OpResult>, BenchError> {
    let Some(list) = field(p, "results").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    list.iter()
        .map(|r| {
            Ok(OpResult {
                op_id: str_field(r, "opId", "OP_ACK result")?,
                success: field(r, "success")
                    .and_then(Value::as_bool)
                    .ok_or_else(|| malformed("OP_ACK result", "missing bool `success`"))?,
                achieved_level: opt_str(r, "achievedLevel"),
                error: opt_str(r, "error"),
            })
        })
        .collect()
}

/// Types this load generator reads out of one message map.
fn typed(value: Value, encoded_len: usize) -> Result<ServerMsg, BenchError> {
    let kind = field(&value, "type")
        .and_then(Value::as_str)
        .ok_or_else(|| BenchError::Protocol(format!("message without a string `type`: {value}")))?
        .to_string();
    let k = kind.as_str();
    Ok(match k {
        "AUTH_REQUIRED" => ServerMsg::AuthRequired,
        "AUTH_ACK" => ServerMsg::AuthAck,
        "AUTH_FAIL" => ServerMsg::AuthFail {
            error: opt_str(&value, "error").unwrap_or_else(|| "(no reason given)".into()),
        },
        "OP_ACK" => {
            let p = payload(&value, k)?;
            ServerMsg::OpAck {
                last_id: str_field(p, "lastId", k)?,
                achieved_level: opt_str(p, "achievedLevel"),
                results: op_results(p)?,
            }
        }
        "OP_REJECTED" => {
            let p = payload(&value, k)?;
            ServerMsg::OpRejected {
                op_id: str_field(p, "opId", k)?,
                reason: opt_str(p, "reason").unwrap_or_default(),
                code: field(p, "code").and_then(as_i64),
            }
        }
        "ERROR" => {
            // Tolerate a flat ERROR too: whatever shape it has, it must count as a failure.
            let p = field(&value, "payload")
                .filter(|p| p.is_map())
                .unwrap_or(&value);
            ServerMsg::Error {
                code: field(p, "code").and_then(as_i64),
                message: opt_str(p, "message")
                    .or_else(|| opt_str(p, "error"))
                    .unwrap_or_else(|| value.to_string()),
            }
        }
        "MERGE_REJECTED" => ServerMsg::MergeRejected {
            map_name: opt_str(&value, "mapName").unwrap_or_default(),
            key: opt_str(&value, "key").unwrap_or_default(),
            reason: opt_str(&value, "reason").unwrap_or_default(),
        },
        "QUERY_RESP" => {
            let p = payload(&value, k)?;
            let results = field(p, "results")
                .and_then(Value::as_array)
                .ok_or_else(|| malformed(k, "missing `results` array"))?;
            ServerMsg::QueryResp {
                query_id: str_field(p, "queryId", k)?,
                results: results.len(),
            }
        }
        "QUERY_UPDATE" => {
            let p = payload(&value, k)?;
            ServerMsg::QueryUpdate {
                query_id: str_field(p, "queryId", k)?,
                key: str_field(p, "key", k)?,
                change_type: str_field(p, "changeType", k)?,
                value: field(p, "value").cloned().unwrap_or(Value::Nil),
            }
        }
        "SEARCH_RESP" => {
            let p = payload(&value, k)?;
            let results = field(p, "results")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            ServerMsg::SearchResp {
                request_id: str_field(p, "requestId", k)?,
                results,
                error: opt_str(p, "error"),
            }
        }
        "SYNC_RESP_ROOT" => {
            let p = payload(&value, k)?;
            let root = field(p, "rootHash").ok_or_else(|| malformed(k, "missing `rootHash`"))?;
            ServerMsg::SyncRespRoot {
                map_name: str_field(p, "mapName", k)?,
                root_hash: hash_u32(root, k, "rootHash")?,
                server_millis: field(p, "timestamp")
                    .and_then(|t| field(t, "millis"))
                    .and_then(as_u64),
            }
        }
        "SYNC_RESP_BUCKETS" => {
            let p = payload(&value, k)?;
            let buckets = field(p, "buckets")
                .and_then(Value::as_map)
                .ok_or_else(|| malformed(k, "missing `buckets` map"))?;
            let buckets = buckets
                .iter()
                .map(|(c, h)| {
                    let c = c
                        .as_str()
                        .ok_or_else(|| malformed(k, "bucket key is not a string"))?;
                    Ok((c.to_string(), hash_u32(h, k, "bucket hash")?))
                })
                .collect::<Result<Vec<_>, BenchError>>()?;
            ServerMsg::SyncRespBuckets {
                map_name: str_field(p, "mapName", k)?,
                path: str_field(p, "path", k)?,
                buckets,
            }
        }
        "SYNC_RESP_LEAF" => {
            let p = payload(&value, k)?;
            let list = field(p, "records")
                .and_then(Value::as_array)
                .ok_or_else(|| malformed(k, "missing `records` array"))?;
            let records = list
                .iter()
                .map(|r| {
                    let record =
                        field(r, "record").ok_or_else(|| malformed(k, "entry without `record`"))?;
                    let ts = field(record, "timestamp")
                        .ok_or_else(|| malformed(k, "record without `timestamp`"))?;
                    Ok(LeafRecord {
                        key: str_field(r, "key", k)?,
                        timestamp: timestamp(ts, k)?,
                    })
                })
                .collect::<Result<Vec<_>, BenchError>>()?;
            ServerMsg::SyncRespLeaf {
                map_name: str_field(p, "mapName", k)?,
                path: str_field(p, "path", k)?,
                records,
                bytes: encoded_len,
            }
        }
        "SYNC_RESET_REQUIRED" => {
            let p = payload(&value, k)?;
            ServerMsg::SyncResetRequired {
                map_name: str_field(p, "mapName", k)?,
                reason: opt_str(p, "reason").unwrap_or_default(),
            }
        }
        "SERVER_EVENT" => ServerMsg::ServerEvents { count: 1 },
        "SERVER_BATCH_EVENT" => ServerMsg::ServerEvents {
            count: field(&value, "payload")
                .and_then(|p| field(p, "events"))
                .and_then(Value::as_array)
                .map_or(0, Vec::len),
        },
        "PONG" => ServerMsg::Pong,
        _ => ServerMsg::Other { kind },
    })
}

fn read_u32_le(data: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

/// Appends the messages of one MsgPack frame to `out`, unpacking BATCH envelopes
/// recursively (core.md §1.6: u32-LE count, then u32-LE length + message, N times).
fn decode_into(bytes: &[u8], out: &mut Vec<ServerMsg>) -> Result<(), BenchError> {
    let mut slice = bytes;
    let value = rmpv::decode::read_value(&mut slice)
        .map_err(|e| BenchError::Protocol(format!("undecodable frame: {e}")))?;
    if field(&value, "type").and_then(Value::as_str) != Some("BATCH") {
        out.push(typed(value, bytes.len())?);
        return Ok(());
    }
    let data = match field(&value, "data") {
        Some(Value::Binary(b)) => b.as_slice(),
        _ => return Err(malformed("BATCH", "missing binary `data`")),
    };
    let count =
        read_u32_le(data, 0).ok_or_else(|| malformed("BATCH", "data shorter than its count"))?;
    let mut at = 4;
    for i in 0..count {
        let len = read_u32_le(data, at)
            .ok_or_else(|| malformed("BATCH", &format!("truncated before message {i}")))?
            as usize;
        at += 4;
        let inner = data
            .get(at..at + len)
            .ok_or_else(|| malformed("BATCH", &format!("message {i} overruns data")))?;
        decode_into(inner, out)?;
        at += len;
    }
    Ok(())
}

/// The protocol messages carried by one binary frame.
pub fn decode_binary(bytes: &[u8]) -> Result<Vec<ServerMsg>, BenchError> {
    let mut out = Vec::with_capacity(1);
    decode_into(bytes, &mut out)?;
    Ok(out)
}

/// The protocol message carried by one text frame, which clients parse as JSON (core.md §1.2).
pub fn decode_text(text: &str) -> Result<Vec<ServerMsg>, BenchError> {
    let json: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| BenchError::Protocol(format!("text frame is not JSON: {e}")))?;
    let value =
        rmpv::ext::to_value(json).map_err(|e| BenchError::Protocol(format!("text frame: {e}")))?;
    Ok(vec![typed(value, text.len())?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::{map, to_bytes};

    fn bytes(v: &Value) -> Vec<u8> {
        to_bytes(v).expect("encodes")
    }

    fn with_payload(kind: &str, p: Value) -> Value {
        map(vec![("type", Value::from(kind)), ("payload", p)])
    }

    #[test]
    fn decodes_op_ack_with_results() {
        let msg = with_payload(
            "OP_ACK",
            map(vec![
                ("lastId", Value::from("9")),
                ("achievedLevel", Value::from("APPLIED")),
                (
                    "results",
                    Value::Array(vec![map(vec![
                        ("opId", Value::from("9")),
                        ("success", Value::Boolean(false)),
                        ("achievedLevel", Value::from("APPLIED")),
                        (
                            "error",
                            Value::from("Timeout: achieved APPLIED, requested PERSISTED"),
                        ),
                    ])]),
                ),
            ]),
        );
        let got = decode_binary(&bytes(&msg)).expect("decodes");
        assert_eq!(
            got,
            vec![ServerMsg::OpAck {
                last_id: "9".into(),
                achieved_level: Some("APPLIED".into()),
                results: vec![OpResult {
                    op_id: "9".into(),
                    success: false,
                    achieved_level: Some("APPLIED".into()),
                    error: Some("Timeout: achieved APPLIED, requested PERSISTED".into()),
                }],
            }]
        );
    }

    #[test]
    fn decodes_rejections_and_errors() {
        let rej = with_payload(
            "OP_REJECTED",
            map(vec![
                ("opId", Value::from("op-bad")),
                ("reason", Value::from("schema validation failed")),
                ("code", Value::from(400)),
            ]),
        );
        let err = with_payload(
            "ERROR",
            map(vec![
                ("code", Value::from(403)),
                ("message", Value::from("Access Denied for map secrets")),
            ]),
        );
        assert_eq!(
            decode_binary(&bytes(&rej)).expect("decodes"),
            vec![ServerMsg::OpRejected {
                op_id: "op-bad".into(),
                reason: "schema validation failed".into(),
                code: Some(400)
            }]
        );
        assert_eq!(
            decode_binary(&bytes(&err)).expect("decodes"),
            vec![ServerMsg::Error {
                code: Some(403),
                message: "Access Denied for map secrets".into()
            }]
        );
    }

    #[test]
    fn unpacks_the_spec_batch_example() {
        // core.md §1.6: AUTH_ACK (15 bytes) and PONG (34 bytes) in one BATCH.
        let ack = bytes(&map(vec![("type", Value::from("AUTH_ACK"))]));
        let pong = bytes(&map(vec![
            ("type", Value::from("PONG")),
            ("timestamp", Value::from(5)),
            ("serverTime", Value::from(6)),
        ]));
        assert_eq!((ack.len(), pong.len()), (15, 34));
        let mut data = 2u32.to_le_bytes().to_vec();
        for m in [&ack, &pong] {
            data.extend((m.len() as u32).to_le_bytes());
            data.extend(m.iter());
        }
        assert_eq!(data.len(), 61);
        let envelope = map(vec![
            ("type", Value::from("BATCH")),
            ("count", Value::from(2)),
            ("data", Value::Binary(data)),
        ]);
        assert_eq!(
            decode_binary(&bytes(&envelope)).expect("decodes"),
            vec![ServerMsg::AuthAck, ServerMsg::Pong]
        );
    }

    #[test]
    fn a_truncated_batch_is_a_protocol_error() {
        let mut data = 2u32.to_le_bytes().to_vec();
        data.extend(100u32.to_le_bytes());
        data.extend([0x80]);
        let envelope = map(vec![
            ("type", Value::from("BATCH")),
            ("count", Value::from(2)),
            ("data", Value::Binary(data)),
        ]);
        assert!(matches!(
            decode_binary(&bytes(&envelope)),
            Err(BenchError::Protocol(_))
        ));
    }

    #[test]
    fn merkle_answers_accept_whole_floats_and_reject_out_of_range_hashes() {
        let root = with_payload(
            "SYNC_RESP_ROOT",
            map(vec![
                ("mapName", Value::from("todos")),
                ("rootHash", Value::F64(733_201_421.0)),
                (
                    "timestamp",
                    map(vec![
                        ("millis", Value::F64(1_700_000_000_100.0)),
                        ("counter", Value::from(0)),
                        ("nodeId", Value::from("s")),
                    ]),
                ),
            ]),
        );
        assert_eq!(
            decode_binary(&bytes(&root)).expect("decodes"),
            vec![ServerMsg::SyncRespRoot {
                map_name: "todos".into(),
                root_hash: 733_201_421,
                server_millis: Some(1_700_000_000_100)
            }]
        );
        let bad = with_payload(
            "SYNC_RESP_BUCKETS",
            map(vec![
                ("mapName", Value::from("m")),
                ("path", Value::from("")),
                ("buckets", map(vec![("f", Value::from(1u64 << 33))])),
            ]),
        );
        assert!(matches!(
            decode_binary(&bytes(&bad)),
            Err(BenchError::Protocol(_))
        ));
    }

    #[test]
    fn decodes_leaf_records() {
        let ts = map(vec![
            ("millis", Value::from(1_700_000_000_000u64)),
            ("counter", Value::from(1)),
            ("nodeId", Value::from("node-1")),
        ]);
        let leaf = with_payload(
            "SYNC_RESP_LEAF",
            map(vec![
                ("mapName", Value::from("todos")),
                ("path", Value::from("f55")),
                (
                    "records",
                    Value::Array(vec![map(vec![
                        ("key", Value::from("user-1")),
                        (
                            "record",
                            map(vec![("value", Value::Nil), ("timestamp", ts)]),
                        ),
                    ])]),
                ),
            ]),
        );
        let encoded = bytes(&leaf);
        let got = decode_binary(&encoded).expect("decodes");
        let ServerMsg::SyncRespLeaf {
            records,
            path,
            bytes: len,
            ..
        } = &got[0]
        else {
            panic!("not a leaf: {got:?}")
        };
        assert_eq!(path, "f55");
        assert_eq!(*len, encoded.len());
        assert_eq!(records[0].key, "user-1");
        assert_eq!(
            records[0].timestamp,
            Timestamp {
                millis: 1_700_000_000_000,
                counter: 1,
                node_id: "node-1".into()
            }
        );
    }

    #[test]
    fn text_frames_are_json_and_unknown_types_are_kept_as_other() {
        let got = decode_text(r#"{"type":"SEARCH_RESP","payload":{"requestId":"r1","results":[],"totalCount":0,"error":"not implemented: search"}}"#)
            .expect("decodes");
        assert_eq!(
            got,
            vec![ServerMsg::SearchResp {
                request_id: "r1".into(),
                results: 0,
                error: Some("not implemented: search".into())
            }]
        );
        let other = decode_binary(&bytes(&map(vec![("type", Value::from("LOCK_GRANTED"))])))
            .expect("decodes");
        assert_eq!(other[0].kind(), "LOCK_GRANTED");
    }

    #[test]
    fn a_known_type_with_missing_fields_is_a_protocol_error() {
        let ack = with_payload(
            "OP_ACK",
            map(vec![("achievedLevel", Value::from("APPLIED"))]),
        );
        assert!(matches!(
            decode_binary(&bytes(&ack)),
            Err(BenchError::Protocol(_))
        ));
        assert!(matches!(
            decode_binary(&[0xc1]),
            Err(BenchError::Protocol(_))
        ));
    }
}
