//! Builders for protocol messages used across the system tests.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use topgun_proto::hash::fnv1a;

/// An HLC timestamp.
pub fn ts(millis: u64, counter: u64, node: &str) -> Value {
    json!({"millis": millis, "counter": counter, "nodeId": node})
}

/// An LWW PUT op as the TS client sends it inside OP_BATCH.
pub fn put(id: &str, map: &str, key: &str, value: Value, millis: u64, node: &str) -> Value {
    json!({"id": id, "mapName": map, "key": key, "opType": "PUT",
           "record": {"value": value, "timestamp": ts(millis, 0, node)},
           "timestamp": ts(millis, 0, node), "synced": false})
}

/// An LWW REMOVE op (tombstone record).
pub fn remove(id: &str, map: &str, key: &str, millis: u64, node: &str) -> Value {
    json!({"id": id, "mapName": map, "key": key, "opType": "REMOVE",
           "record": {"value": null, "timestamp": ts(millis, 0, node)}, "synced": false})
}

/// An OR_ADD op.
pub fn or_add(
    id: &str,
    map: &str,
    key: &str,
    value: Value,
    tag: &str,
    millis: u64,
    node: &str,
) -> Value {
    json!({"id": id, "mapName": map, "key": key, "opType": "OR_ADD",
           "orRecord": {"value": value, "timestamp": ts(millis, 0, node), "tag": tag}, "synced": false})
}

/// An OR_REMOVE op.
pub fn or_remove(id: &str, map: &str, key: &str, tag: &str) -> Value {
    json!({"id": id, "mapName": map, "key": key, "opType": "OR_REMOVE", "orTag": tag, "synced": false})
}

/// OP_BATCH of ops.
pub fn batch(ops: Vec<Value>) -> Value {
    json!({"type": "OP_BATCH", "payload": {"ops": ops}})
}

/// A unique map name per test run (the suite's state outlives a test only in memory).
pub fn map_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// A client-side LWW Merkle tree exactly as core.md §6 defines it.
#[derive(Debug, Default)]
pub struct ClientTree {
    /// key -> (path, entry hash)
    entries: BTreeMap<String, (String, u32)>,
}

impl ClientTree {
    /// Adds or replaces a key's record.
    pub fn put(&mut self, key: &str, millis: u64, counter: u64, node: &str) {
        let path = format!("{:08x}", fnv1a(key))[..3].to_string();
        let hash = fnv1a(&format!("{key}:{millis}:{counter}:{node}"));
        self.entries.insert(key.to_string(), (path, hash));
    }

    /// Hash of the node at `path`.
    pub fn hash(&self, path: &str) -> u32 {
        self.entries
            .values()
            .filter(|(p, _)| p.starts_with(path))
            .fold(0u32, |a, (_, h)| a.wrapping_add(*h))
    }

    /// Local hash of child `c` of `path` (0 when missing).
    pub fn child(&self, path: &str, c: &str) -> u32 {
        self.hash(&format!("{path}{c}"))
    }
}

/// Writes `count` records `key-<i>` = `{"i": i}` in batches of 50 with the PERSISTED
/// write concern and asserts every batch is acknowledged as persisted.
pub async fn write_persisted(c: &mut topgun_tests::WsClient, map: &str, count: u64) {
    for chunk_start in (0..count).step_by(50) {
        let end = (chunk_start + 50).min(count);
        let ops: Vec<Value> = (chunk_start..end)
            .map(|i| {
                put(
                    &(i + 1).to_string(),
                    map,
                    &format!("key-{i}"),
                    json!({"i": i}),
                    1_700_000_000_000 + i,
                    "writer",
                )
            })
            .collect();
        let mut msg = batch(ops);
        msg["payload"]["writeConcern"] = json!("PERSISTED");
        c.send(&msg).await;
        let reply = c.recv().await;
        assert_eq!(reply["type"], "OP_ACK", "batch at {chunk_start}: {reply}");
        assert_eq!(reply["payload"]["lastId"], end.to_string());
        assert_eq!(reply["payload"]["achievedLevel"], "PERSISTED", "{reply}");
    }
}

/// Every live record of an LWW map, read through a query.
pub async fn read_all(c: &mut topgun_tests::WsClient, map: &str) -> BTreeMap<String, Value> {
    let query_id = uuid::Uuid::new_v4().to_string();
    c.send(&json!({"type": "QUERY_SUB", "payload": {"queryId": query_id, "mapName": map, "query": {}}})).await;
    let resp = c.recv_type("QUERY_RESP").await;
    c.send(&json!({"type": "QUERY_UNSUB", "payload": {"queryId": query_id}}))
        .await;
    resp["payload"]["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                r["key"].as_str().expect("key").to_string(),
                r["value"].clone(),
            )
        })
        .collect()
}
