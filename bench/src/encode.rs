//! Client → server messages, built as MsgPack maps (core.md §1.2–1.4).
//!
//! The load generator encodes with its own small builder instead of the suite's wire types
//! so that it checks a server against the protocol text, not against shared code that could
//! carry the same mistake on both sides.

use crate::clock::Timestamp;
use crate::error::BenchError;
use crate::write_concern::WriteConcern;
use rmpv::Value;

/// A MsgPack map with string keys, in the given order.
pub fn map<K: Into<String>>(entries: Vec<(K, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::String(k.into().into()), v))
            .collect(),
    )
}

/// A message whose fields live under `payload` (core.md §1.4).
fn with_payload(kind: &str, payload: Value) -> Value {
    map(vec![("type", Value::from(kind)), ("payload", payload)])
}

/// The MsgPack bytes of `value`: one protocol message per binary frame (core.md §1.2).
pub fn to_bytes(value: &Value) -> Result<Vec<u8>, BenchError> {
    let mut buf = Vec::with_capacity(128);
    rmpv::encode::write_value(&mut buf, value).map_err(|e| BenchError::Encode(e.to_string()))?;
    Ok(buf)
}

/// The wire form of an HLC timestamp.
pub fn timestamp(ts: &Timestamp) -> Value {
    map(vec![
        ("millis", Value::from(ts.millis)),
        ("counter", Value::from(ts.counter)),
        ("nodeId", Value::from(ts.node_id.as_str())),
    ])
}

/// `AUTH {token}` (core.md §2.3).
pub fn auth(token: &str) -> Value {
    map(vec![
        ("type", Value::from("AUTH")),
        ("token", Value::from(token)),
    ])
}

/// One LWW put inside an OP_BATCH.
#[derive(Debug, Clone)]
pub struct PutOp {
    /// Op id; the protocol's client sends increasing decimal numbers and the server echoes
    /// the last one in OP_ACK, which is how acknowledgements are matched to batches.
    pub id: u64,
    /// Target map.
    pub map_name: String,
    /// Target key.
    pub key: String,
    /// The record value.
    pub value: Value,
    /// The record timestamp.
    pub timestamp: Timestamp,
}

fn put_op(op: &PutOp) -> Value {
    let ts = timestamp(&op.timestamp);
    // Same shape as the TypeScript client's op-log entries (core.md §5.3), extra keys included.
    map(vec![
        ("id", Value::from(op.id.to_string())),
        ("mapName", Value::from(op.map_name.as_str())),
        ("key", Value::from(op.key.as_str())),
        ("opType", Value::from("PUT")),
        (
            "record",
            map(vec![("value", op.value.clone()), ("timestamp", ts.clone())]),
        ),
        ("timestamp", ts),
        ("synced", Value::Boolean(false)),
    ])
}

/// `OP_BATCH` of LWW puts with an optional batch-level write concern (core.md §5.5, §5.9).
pub fn op_batch(
    ops: &[PutOp],
    write_concern: Option<WriteConcern>,
    timeout_ms: Option<u64>,
) -> Value {
    let mut payload = vec![("ops", Value::Array(ops.iter().map(put_op).collect()))];
    if let Some(level) = write_concern {
        payload.push(("writeConcern", Value::from(level.as_str())));
    }
    if let Some(ms) = timeout_ms {
        payload.push(("timeout", Value::from(ms)));
    }
    with_payload("OP_BATCH", map(payload))
}

/// `OP_BATCH` with arbitrary op maps, for deliberately invalid batches in tests.
pub fn op_batch_raw(ops: Vec<Value>) -> Value {
    with_payload("OP_BATCH", map(vec![("ops", Value::Array(ops))]))
}

/// `QUERY_SUB` with an empty query, which matches every record of the map
/// (queries-search-messaging.md §1.1).
pub fn query_sub(query_id: &str, map_name: &str) -> Value {
    with_payload(
        "QUERY_SUB",
        map(vec![
            ("queryId", Value::from(query_id)),
            ("mapName", Value::from(map_name)),
            ("query", Value::Map(Vec::new())),
        ]),
    )
}

/// `SYNC_INIT` (flat, core.md §6.4).
pub fn sync_init(map_name: &str, last_sync_millis: u64) -> Value {
    map(vec![
        ("type", Value::from("SYNC_INIT")),
        ("mapName", Value::from(map_name)),
        ("lastSyncTimestamp", Value::from(last_sync_millis)),
    ])
}

/// `MERKLE_REQ_BUCKET` for one tree path (core.md §6.4).
pub fn merkle_req_bucket(map_name: &str, path: &str) -> Value {
    with_payload(
        "MERKLE_REQ_BUCKET",
        map(vec![
            ("mapName", Value::from(map_name)),
            ("path", Value::from(path)),
        ]),
    )
}

/// One-shot `SEARCH` (queries-search-messaging.md §2.3).
pub fn search(request_id: &str, map_name: &str, query: &str, limit: u32) -> Value {
    with_payload(
        "SEARCH",
        map(vec![
            ("requestId", Value::from(request_id)),
            ("mapName", Value::from(map_name)),
            ("query", Value::from(query)),
            ("options", map(vec![("limit", Value::from(limit))])),
        ]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(v: &'a Value, key: &str) -> &'a Value {
        v.as_map()
            .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some(key)))
            .map(|(_, v)| v)
            .unwrap_or(&Value::Nil)
    }

    #[test]
    fn op_batch_has_the_client_shape_and_round_trips() {
        let ts = Timestamp {
            millis: 1_700_000_000_000,
            counter: 3,
            node_id: "c1".into(),
        };
        let op = PutOp {
            id: 7,
            map_name: "m".into(),
            key: "k".into(),
            value: Value::from(1),
            timestamp: ts,
        };
        let msg = op_batch(&[op], Some(WriteConcern::Persisted), Some(2000));
        let bytes = to_bytes(&msg).expect("encodes");
        let back = rmpv::decode::read_value(&mut bytes.as_slice()).expect("decodes");
        assert_eq!(get(&back, "type").as_str(), Some("OP_BATCH"));
        let payload = get(&back, "payload");
        assert_eq!(get(payload, "writeConcern").as_str(), Some("PERSISTED"));
        assert_eq!(get(payload, "timeout").as_u64(), Some(2000));
        let op = &get(payload, "ops").as_array().expect("ops")[0];
        assert_eq!(get(op, "id").as_str(), Some("7"));
        assert_eq!(get(op, "opType").as_str(), Some("PUT"));
        let record_ts = get(get(op, "record"), "timestamp");
        assert_eq!(get(record_ts, "millis").as_u64(), Some(1_700_000_000_000));
        assert_eq!(get(record_ts, "counter").as_u64(), Some(3));
        assert_eq!(get(record_ts, "nodeId").as_str(), Some("c1"));
    }

    #[test]
    fn optional_fields_are_absent_not_nil() {
        let msg = op_batch(&[], None, None);
        let payload = get(&msg, "payload").as_map().expect("payload map");
        assert_eq!(payload.len(), 1, "only ops: {payload:?}");
    }

    #[test]
    fn flat_and_payload_messages_are_placed_as_the_spec_says() {
        let init = sync_init("todos", 0);
        assert_eq!(get(&init, "mapName").as_str(), Some("todos"));
        let req = merkle_req_bucket("todos", "f5");
        assert_eq!(get(get(&req, "payload"), "path").as_str(), Some("f5"));
        let s = search("r1", "docs", "alpha", 5);
        assert_eq!(
            get(get(get(&s, "payload"), "options"), "limit").as_u64(),
            Some(5)
        );
        let q = query_sub("q1", "m");
        assert_eq!(
            get(get(&q, "payload"), "query").as_map().map(Vec::len),
            Some(0)
        );
    }
}
