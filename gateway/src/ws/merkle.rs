//! Merkle delta sync for LWW maps and OR-Maps (core.md §6.4, §6.9), over the sum of
//! every shard's tree.

use super::session::Session;
use crate::error::GatewayError;
use crate::scatter::{self, MerkleAnswer};
use crate::writes;
use prost::Message as _;
use std::collections::HashMap;
use topgun_proto::grpc::common::{KeyState, MapKind};
use topgun_proto::hlc::wall_clock_ms;
use topgun_proto::wire::{
    self, batch, BatchEnvelope, LeafRecord, LwwRecord, MerkleReqBucketPayload, Message,
    OrMapDiffRequestPayload, OrMapEntriesPayload, OrMapEntry, OrMapRecord, OrMapSyncInit,
    OrMapSyncRespLeafPayload, SyncInit, SyncResetRequiredPayload, SyncRespBucketsPayload,
    SyncRespLeafPayload, SyncRespRootPayload,
};

/// Tombstones older than this are pruned; a client that last synced before it may have
/// missed deletions and must reset (core.md §4.6, §6.7).
pub const GC_AGE_MS: u64 = 30 * 24 * 60 * 60 * 1000;

/// Most records in one leaf message.
const LEAF_CHUNK: usize = 2_000;
/// Most bytes of records in one leaf message (a message always holds at least one), so
/// frames of large records stay far below 16 MiB and a slow link takes one at a time.
const LEAF_CHUNK_BYTES: usize = 1024 * 1024;

/// Splits `items` into leaf messages' worth: at most [`LEAF_CHUNK`] items and, unless a
/// single item is larger, at most [`LEAF_CHUNK_BYTES`] by `size`.
fn leaf_chunks<T>(items: Vec<(T, usize)>) -> Vec<Vec<T>> {
    let mut chunks = Vec::new();
    let mut chunk = Vec::new();
    let mut bytes = 0;
    for (item, size) in items {
        if !chunk.is_empty() && (chunk.len() == LEAF_CHUNK || bytes + size > LEAF_CHUNK_BYTES) {
            chunks.push(std::mem::take(&mut chunk));
            bytes = 0;
        }
        bytes += size;
        chunk.push(item);
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

/// Leaf records of the shards' LWW key states, each with its (protobuf) size.
fn leaf_records(states: Vec<KeyState>) -> Vec<(LeafRecord, usize)> {
    states
        .into_iter()
        .filter_map(|state| {
            let size = state.encoded_len();
            let record = LwwRecord::try_from(state.lww?).ok()?;
            Some((
                LeafRecord {
                    key: state.key,
                    record,
                },
                size,
            ))
        })
        .collect()
}

/// Largest BATCH the delta push may build; a bigger delta is left to the Merkle walk,
/// which moves it in leaf-sized messages a slow link can take one at a time.
const DELTA_PUSH_MAX_BYTES: usize = 4 * 1024 * 1024;

/// SYNC_INIT: the GC-age check, then the root. A client that synced before
/// (`lastSyncTimestamp` > 0) first gets the records changed since then, as
/// SYNC_RESP_LEAF messages in the same BATCH frame as the root: the client handles a
/// BATCH's messages one after the other, so it compares roots with the changes merged
/// and, when it missed nothing else, needs no walk at all. The walk stays the fallback
/// for anything the push cannot know about (see `delta_push`).
pub(super) async fn sync_init(s: &Session, m: SyncInit) {
    if let Err(err) = s.gw.check_read(s.principal(), &m.map_name) {
        return s.send_error(&err).await;
    }
    let last = m.last_sync_timestamp.unwrap_or(0);
    if last > 0 && wall_clock_ms().saturating_sub(last) > GC_AGE_MS {
        let payload = SyncResetRequiredPayload {
            map_name: m.map_name,
            reason: Some("lastSyncTimestamp older than GC age".into()),
        };
        return s.send(Message::SyncResetRequired { payload }).await;
    }
    // Read before anything is scanned: a change this answer does not reflect is
    // stamped at or after it, so the client's next delta push includes it.
    let timestamp = s.gw.now();
    let pushed = if last > 0 {
        delta_push(s, &m.map_name, last).await
    } else {
        Vec::new()
    };
    let root_hash = match scatter::merkle_root(&s.gw, &m.map_name, MapKind::Lww).await {
        Ok(root_hash) => root_hash,
        Err(err) => return s.send_error(&err).await,
    };
    let root = Message::SyncRespRoot {
        payload: SyncRespRootPayload {
            map_name: m.map_name.clone(),
            root_hash,
            timestamp,
        },
    };
    match batch_with_root(&m.map_name, pushed, &root) {
        Some(batch) => s.send(batch).await,
        None => s.send(root).await,
    }
}

/// The LWW records of `map` changed since server millis `last`, or nothing when the
/// shards cannot tell exactly (their change feeds no longer reach back that far, they
/// restarted or loaded data since) or more changed than the push limit: the Merkle walk
/// then transfers what differs. Missing a change here costs a walk, never correctness.
async fn delta_push(s: &Session, map: &str, last: u64) -> Vec<(LeafRecord, usize)> {
    let (limit, skew) = {
        let server = s.gw.server.read();
        (server.delta_push_limit, server.delta_clock_skew_ms)
    };
    if limit == 0 {
        return Vec::new();
    }
    let since = last.saturating_sub(skew).max(1);
    let states = scatter::changed_since(&s.gw, map, since, limit)
        .await
        .unwrap_or_default();
    leaf_records(states)
}

/// One BATCH holding `records` as SYNC_RESP_LEAF messages followed by `root`, or None
/// when there is nothing to push or it would be too large for one frame.
fn batch_with_root(
    map: &str,
    records: Vec<(LeafRecord, usize)>,
    root: &Message,
) -> Option<Message> {
    if records.is_empty() {
        return None;
    }
    let mut inner: Vec<Vec<u8>> = leaf_chunks(records)
        .into_iter()
        .map(|records| {
            wire::encode(&Message::SyncRespLeaf {
                payload: SyncRespLeafPayload {
                    map_name: map.to_string(),
                    // Not a walk answer; the client does not read the path (§6.4).
                    path: String::new(),
                    records,
                },
            })
        })
        .collect();
    inner.push(wire::encode(root));
    let data = batch::pack_batch_data(inner.iter().map(Vec::as_slice));
    let count = inner.len() as u64;
    (data.len() <= DELTA_PUSH_MAX_BYTES).then_some(Message::Batch(BatchEnvelope { count, data }))
}

/// Read check, path validation and the scatter of a bucket request of either map kind.
async fn bucket_answer(
    s: &Session,
    p: &MerkleReqBucketPayload,
    kind: MapKind,
) -> Result<MerkleAnswer, GatewayError> {
    s.gw.check_read(s.principal(), &p.map_name)?;
    if !scatter::valid_merkle_path(&p.path) {
        return Err(GatewayError::BadRequest(format!(
            "invalid Merkle path {:?}",
            p.path
        )));
    }
    scatter::merkle_node(&s.gw, &p.map_name, kind, &p.path).await
}

pub(super) async fn lww_bucket(s: &Session, p: MerkleReqBucketPayload) {
    match bucket_answer(s, &p, MapKind::Lww).await {
        Ok(MerkleAnswer::Buckets(buckets)) => {
            let payload = SyncRespBucketsPayload {
                map_name: p.map_name,
                path: p.path,
                buckets,
            };
            s.send(Message::SyncRespBuckets { payload }).await
        }
        Ok(MerkleAnswer::Leaf(entries)) => {
            for records in leaf_chunks(leaf_records(entries)) {
                let payload = SyncRespLeafPayload {
                    map_name: p.map_name.clone(),
                    path: p.path.clone(),
                    records,
                };
                s.send(Message::SyncRespLeaf { payload }).await;
            }
        }
        Err(err) => s.send_error(&err).await,
    }
}

pub(super) async fn or_sync_init(s: &Session, m: OrMapSyncInit) {
    if let Err(err) = s.gw.check_read(s.principal(), &m.map_name) {
        return s.send_error(&err).await;
    }
    match scatter::merkle_root(&s.gw, &m.map_name, MapKind::Or).await {
        Ok(root_hash) => {
            let payload = SyncRespRootPayload {
                map_name: m.map_name,
                root_hash,
                timestamp: s.gw.now(),
            };
            s.send(Message::OrMapSyncRespRoot { payload }).await
        }
        Err(err) => s.send_error(&err).await,
    }
}

/// A shard's OR key state as the wire entry.
pub(crate) fn or_entry(state: KeyState) -> OrMapEntry {
    OrMapEntry {
        key: state.key,
        records: state
            .or_records
            .into_iter()
            .filter_map(|r| OrMapRecord::try_from(r).ok())
            .collect(),
        tombstones: state.or_tombstones,
    }
}

pub(super) async fn or_bucket(s: &Session, p: MerkleReqBucketPayload) {
    match bucket_answer(s, &p, MapKind::Or).await {
        Ok(MerkleAnswer::Buckets(buckets)) => {
            let payload = SyncRespBucketsPayload {
                map_name: p.map_name,
                path: p.path,
                buckets,
            };
            s.send(Message::OrMapSyncRespBuckets { payload }).await
        }
        Ok(MerkleAnswer::Leaf(entries)) => {
            let sized = entries
                .into_iter()
                .map(|state| {
                    let size = state.encoded_len();
                    (or_entry(state), size)
                })
                .collect();
            for entries in leaf_chunks(sized) {
                let payload = OrMapSyncRespLeafPayload {
                    map_name: p.map_name.clone(),
                    path: p.path.clone(),
                    entries,
                };
                s.send(Message::OrMapSyncRespLeaf { payload }).await;
            }
        }
        Err(err) => s.send_error(&err).await,
    }
}

pub(super) async fn or_diff(s: &Session, p: OrMapDiffRequestPayload) {
    if let Err(err) = s.gw.check_read(s.principal(), &p.map_name) {
        return s.send_error(&err).await;
    }
    match scatter::get_records(&s.gw, &p.map_name, MapKind::Or, &p.keys).await {
        Ok(states) => {
            let mut found: HashMap<String, OrMapEntry> = states
                .into_iter()
                .map(|st| (st.key.clone(), or_entry(st)))
                .collect();
            // One entry per requested key; unknown keys get empty records.
            let entries = p
                .keys
                .iter()
                .map(|k| {
                    found.remove(k).unwrap_or_else(|| OrMapEntry {
                        key: k.clone(),
                        records: vec![],
                        tombstones: vec![],
                    })
                })
                .collect();
            s.send(Message::OrMapDiffResponse {
                payload: OrMapEntriesPayload {
                    map_name: p.map_name,
                    entries,
                },
            })
            .await
        }
        Err(err) => s.send_error(&err).await,
    }
}

/// ORMAP_PUSH_DIFF: merge every entry; no reply on success (never an OP_ACK, §5.6).
pub(super) async fn or_push(s: &Session, p: OrMapEntriesPayload) {
    let writer = s.writer();
    let ops = match writes::validate_or_merge(&s.gw, &p.map_name, &p.entries, &writer) {
        Ok(ops) => ops,
        Err(GatewayError::Forbidden(_)) => {
            let err = GatewayError::Forbidden(format!("Access Denied for map {}", p.map_name));
            return s.send_error(&err).await;
        }
        Err(err) => return s.send_error(&err).await,
    };
    if ops.is_empty() {
        return;
    }
    if let Err(err) = writes::apply(&s.gw, ops, &writer).await {
        s.send_error(&err).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_chunks_split_by_count_and_by_bytes_keeping_order() {
        let small: Vec<(u32, usize)> = (0..4_500).map(|i| (i, 10)).collect();
        let chunks = leaf_chunks(small);
        assert_eq!(
            chunks.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![2_000, 2_000, 500]
        );
        let big = LEAF_CHUNK_BYTES / 2 + 1;
        let chunks = leaf_chunks(vec![(1, big), (2, big), (3, 5), (4, 3 * LEAF_CHUNK_BYTES)]);
        assert_eq!(chunks, vec![vec![1], vec![2, 3], vec![4]]);
        assert!(leaf_chunks(Vec::<(u8, usize)>::new()).is_empty());
    }
}
