//! Garbage collection (core.md §4.4, §4.6): TTL expiry turns expired records into
//! tombstones (with change events, persisted like any write), and tombstones older than
//! the tombstone TTL are pruned from memory, the Merkle trees and storage.

use crate::requests::{HashedKey, MapKind};
use crate::state::{Change, ChangeKind, RowId, ShardState};
use topgun_proto::hlc::{Hlc, Timestamp};
use topgun_proto::wire::LwwRecord;

/// What one sweep did.
#[derive(Debug, Default)]
pub struct GcOutcome {
    /// Changes to publish (expiries).
    pub changes: Vec<Change>,
    /// Rows whose state changed and must be written.
    pub touched: Vec<RowId>,
    /// LWW rows to delete from storage, each only if not newer than its pruned tombstone.
    pub deletes: Vec<(RowId, Timestamp)>,
    /// Records expired.
    pub expired: usize,
    /// Tombstones (LWW records or OR tags' keys) pruned.
    pub pruned: usize,
}

/// One sweep at `now_ms`: expire TTL records, then prune tombstones older than
/// `now_ms - tombstone_ttl_ms`.
pub fn sweep(
    state: &mut ShardState,
    hlc: &mut Hlc,
    now_ms: u64,
    tombstone_ttl_ms: u64,
    node_id: &str,
) -> GcOutcome {
    let mut out = GcOutcome::default();
    // `{millis, 0, ""}` sorts before every timestamp with those millis, so exactly the
    // tombstones from earlier milliseconds compare as older.
    let older_than = Timestamp::new(now_ms.saturating_sub(tombstone_ttl_ms), 0, "");

    for (map_name, map) in state.lww_maps_mut() {
        for (key, stamp) in map.expired(now_ms, node_id) {
            let _ = hlc.update(&stamp);
            let key = HashedKey::new(key);
            let tombstone = LwwRecord {
                value: rmpv::Value::Nil,
                timestamp: stamp,
                ttl_ms: None,
            };
            // Merged, not overwritten: a newer write that raced the sweep still wins.
            if let Some(previous) = map.merge(&key.key, key.hash, tombstone.clone()) {
                out.expired += 1;
                out.touched.push(RowId {
                    kind: MapKind::Lww,
                    map_name: map_name.clone(),
                    key: key.key.clone(),
                });
                out.changes.push(Change {
                    map_name: map_name.clone(),
                    key,
                    kind: ChangeKind::Lww {
                        record: tombstone,
                        previous,
                    },
                });
            }
        }
        for (key, stamp) in map.prune_tombstones(&older_than) {
            out.pruned += 1;
            out.deletes.push((
                RowId {
                    kind: MapKind::Lww,
                    map_name: map_name.clone(),
                    key,
                },
                stamp,
            ));
        }
    }

    for (map_name, map) in state.or_maps_mut() {
        for (key, tag) in map.expired(now_ms) {
            let key = HashedKey::new(key);
            if map.apply_tombstone(&key.key, key.hash, &tag) {
                out.expired += 1;
                out.touched.push(RowId {
                    kind: MapKind::Or,
                    map_name: map_name.clone(),
                    key: key.key.clone(),
                });
                out.changes.push(Change {
                    map_name: map_name.clone(),
                    key,
                    kind: ChangeKind::OrRemove(tag),
                });
            }
        }
        for key in map.prune_tombstones(&older_than) {
            out.pruned += 1;
            out.touched.push(RowId {
                kind: MapKind::Or,
                map_name: map_name.clone(),
                key,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::requests::{Op, OpKind};
    use rmpv::Value;
    use topgun_proto::wire::OrMapRecord;

    const DAY: u64 = 86_400_000;

    fn op(map: &str, key: &str, kind: OpKind) -> Op {
        Op {
            op_id: String::new(),
            map_name: map.into(),
            key: HashedKey::new(key),
            kind,
        }
    }

    #[test]
    fn expires_ttl_records_and_prunes_old_tombstones() {
        let mut state = ShardState::new();
        let mut hlc = Hlc::new("sync-0");
        let now = 100 * DAY;
        let ttl = LwwRecord {
            value: Value::from(1),
            timestamp: Timestamp::new(now - 1_000, 0, "c"),
            ttl_ms: Some(500),
        };
        let old_tomb = LwwRecord {
            value: Value::Nil,
            timestamp: Timestamp::new(now - 40 * DAY, 0, "c"),
            ttl_ms: None,
        };
        let fresh_tomb = LwwRecord {
            value: Value::Nil,
            timestamp: Timestamp::new(now - DAY, 0, "c"),
            ttl_ms: None,
        };
        let or_rec = OrMapRecord {
            value: Value::from("x"),
            timestamp: Timestamp::new(now - 1_000, 0, "c"),
            tag: "t1".into(),
            ttl_ms: Some(10),
        };
        let old_tag = format!("{}:0:c", now - 40 * DAY);
        let mut sink = Vec::new();
        for o in [
            op("m", "ttl", OpKind::LwwPut(ttl)),
            op("m", "old", OpKind::LwwPut(old_tomb)),
            op("m", "fresh", OpKind::LwwPut(fresh_tomb)),
            op("o", "k", OpKind::OrAdd(or_rec)),
            op("o", "j", OpKind::OrRemove(old_tag)),
        ] {
            state.apply(&mut hlc, &o, &mut sink);
        }
        let out = sweep(&mut state, &mut hlc, now, 30 * DAY, "sync-0");
        assert_eq!(out.expired, 2);
        assert_eq!(out.pruned, 2);
        let lww = state.lww("m").expect("map");
        let expired = lww.get("ttl").expect("tombstone kept");
        assert!(expired.is_tombstone());
        assert_eq!(expired.timestamp, Timestamp::new(now - 500, 0, "sync-0"));
        assert!(lww.get("old").is_none(), "old tombstone pruned");
        assert!(lww.get("fresh").is_some(), "recent tombstone kept");
        assert_eq!(out.deletes.len(), 1);
        assert_eq!(out.deletes[0].1, Timestamp::new(now - 40 * DAY, 0, "c"));
        let or = state.or("o").expect("map");
        assert!(or
            .get("k")
            .is_some_and(|s| s.records.is_empty() && s.tombstones.contains("t1")));
        assert!(or.get("j").is_none(), "key left with nothing is forgotten");
        assert!(matches!(out.changes[0].kind, ChangeKind::Lww { .. }));
        assert!(out
            .changes
            .iter()
            .any(|c| c.kind == ChangeKind::OrRemove("t1".into())));
        // A second sweep finds nothing new.
        let again = sweep(&mut state, &mut hlc, now, 30 * DAY, "sync-0");
        assert_eq!((again.expired, again.pruned), (0, 0));
    }
}
