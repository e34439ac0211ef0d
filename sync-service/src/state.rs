//! The in-memory CRDT state of one shard: every map it holds, and the merge of a
//! validated op into it. Pure data and logic; locking, I/O and events live in
//! [`crate::shard`].

use crate::crdt::{LwwMap, OrChange, OrKeyState, OrMap};
use crate::requests::{HashedKey, MapKind, Op, OpKind};
use std::collections::HashMap;
use topgun_proto::hlc::{Hlc, Timestamp};
use topgun_proto::wire::{LwwRecord, OrMapRecord};

/// A state change, the source of one change-feed event.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Map.
    pub map_name: String,
    /// Key, with its hash.
    pub key: HashedKey,
    /// What happened.
    pub kind: ChangeKind,
}

/// What a [`Change`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeKind {
    /// An LWW record was stored (PUT, or REMOVE when it is a tombstone).
    Lww {
        /// The record now stored.
        record: LwwRecord,
        /// The record it replaced.
        previous: Option<LwwRecord>,
    },
    /// An OR record was added.
    OrAdd(OrMapRecord),
    /// An OR tag was tombstoned.
    OrRemove(String),
}

/// Identifies one durable row: (map, kind, key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RowId {
    /// Store.
    pub kind: MapKind,
    /// Map.
    pub map_name: String,
    /// Key, with its hash.
    pub key: String,
}

impl RowId {
    /// The row an op writes.
    pub fn of(op: &Op) -> Self {
        RowId {
            kind: op.kind.map_kind(),
            map_name: op.map_name.clone(),
            key: op.key.key.clone(),
        }
    }
}

/// All maps of a shard. LWW and OR data of one name are independent stores.
#[derive(Debug, Default)]
pub struct ShardState {
    lww: HashMap<String, LwwMap>,
    or: HashMap<String, OrMap>,
}

impl ShardState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Merges one op. The HLC absorbs every incoming record timestamp (and the time
    /// in a parseable OR_REMOVE tag) so timestamps the shard issues later order after
    /// everything it has seen. Pushes the changes the op made and returns whether it
    /// changed anything.
    pub fn apply(&mut self, hlc: &mut Hlc, op: &Op, changes: &mut Vec<Change>) -> bool {
        let key = &op.key;
        match &op.kind {
            OpKind::LwwPut(record) => {
                absorb(hlc, &record.timestamp);
                self.merge_lww(&op.map_name, key, record.clone(), changes)
            }
            OpKind::LwwRemove => {
                let tombstone = LwwRecord {
                    value: rmpv::Value::Nil,
                    timestamp: hlc.now(),
                    ttl_ms: None,
                };
                self.merge_lww(&op.map_name, key, tombstone, changes)
            }
            OpKind::OrAdd(record) => {
                absorb(hlc, &record.timestamp);
                let map = self.or.entry(op.map_name.clone()).or_default();
                let changed = map.apply(&key.key, key.hash, record.clone());
                if changed {
                    changes.push(change(&op.map_name, key, ChangeKind::OrAdd(record.clone())));
                }
                changed
            }
            OpKind::OrRemove(tag) => {
                if let Some(ts) = Timestamp::parse(tag) {
                    absorb(hlc, &ts);
                }
                let map = self.or.entry(op.map_name.clone()).or_default();
                let changed = map.apply_tombstone(&key.key, key.hash, tag);
                if changed {
                    changes.push(change(&op.map_name, key, ChangeKind::OrRemove(tag.clone())));
                }
                changed
            }
            OpKind::OrMerge {
                records,
                tombstones,
            } => {
                for record in records {
                    absorb(hlc, &record.timestamp);
                }
                let map = self.or.entry(op.map_name.clone()).or_default();
                let made = map.merge_key(&key.key, key.hash, records.clone(), tombstones);
                let changed = !made.is_empty();
                changes.extend(made.into_iter().map(|c| {
                    let kind = match c {
                        OrChange::Added(record) => ChangeKind::OrAdd(record),
                        OrChange::Removed(tag) => ChangeKind::OrRemove(tag),
                    };
                    change(&op.map_name, key, kind)
                }));
                changed
            }
        }
    }

    /// LWW merge that records the change.
    pub fn merge_lww(
        &mut self,
        map_name: &str,
        key: &HashedKey,
        record: LwwRecord,
        changes: &mut Vec<Change>,
    ) -> bool {
        let map = match self.lww.get_mut(map_name) {
            Some(map) => map,
            None => self.lww.entry(map_name.to_string()).or_default(),
        };
        match map.merge(&key.key, key.hash, record.clone()) {
            Some(previous) => {
                changes.push(change(map_name, key, ChangeKind::Lww { record, previous }));
                true
            }
            None => false,
        }
    }

    /// Folds a stored LWW record into the state (start-up load; no change recorded).
    pub fn load_lww(&mut self, map_name: &str, key: &HashedKey, record: LwwRecord) {
        self.lww
            .entry(map_name.to_string())
            .or_default()
            .merge(&key.key, key.hash, record);
    }

    /// Folds a stored OR key state into the state (start-up load; no change recorded).
    pub fn load_or(&mut self, map_name: &str, key: &HashedKey, state: OrKeyState) {
        self.or
            .entry(map_name.to_string())
            .or_default()
            .load_key(&key.key, key.hash, state);
    }

    /// Forgets every key of the partitions `dropped` selects, in both kinds of map, and
    /// the maps that emptied; returns how many keys went. No change is recorded: the
    /// partitions moved to another shard, their data did not change.
    pub fn drop_partitions(&mut self, dropped: impl Fn(u32) -> bool) -> usize {
        let mut removed = 0;
        self.lww.retain(|_, map| {
            let went = map.drop_partitions(&dropped);
            removed += went;
            went == 0 || !map.is_empty()
        });
        self.or.retain(|_, map| {
            let went = map.drop_partitions(&dropped);
            removed += went;
            went == 0 || !map.is_empty()
        });
        removed
    }

    /// The LWW map `name`, if it exists.
    pub fn lww(&self, name: &str) -> Option<&LwwMap> {
        self.lww.get(name)
    }

    /// The OR-Map `name`, if it exists.
    pub fn or(&self, name: &str) -> Option<&OrMap> {
        self.or.get(name)
    }

    /// Every LWW map, mutable (garbage collection).
    pub fn lww_maps_mut(&mut self) -> impl Iterator<Item = (&String, &mut LwwMap)> {
        self.lww.iter_mut()
    }

    /// Every OR-Map, mutable (garbage collection).
    pub fn or_maps_mut(&mut self) -> impl Iterator<Item = (&String, &mut OrMap)> {
        self.or.iter_mut()
    }

    /// Every LWW map.
    pub fn lww_maps(&self) -> impl Iterator<Item = (&String, &LwwMap)> {
        self.lww.iter()
    }

    /// Every OR-Map.
    pub fn or_maps(&self) -> impl Iterator<Item = (&String, &OrMap)> {
        self.or.iter()
    }

    /// The OR-Map `name`, mutable, created if missing.
    pub fn or_mut(&mut self, name: &str) -> &mut OrMap {
        self.or.entry(name.to_string()).or_default()
    }
}

/// Non-strict HLC update: drift is accepted (AP), so the error cannot occur.
fn absorb(hlc: &mut Hlc, ts: &Timestamp) {
    let _ = hlc.update(ts);
}

fn change(map_name: &str, key: &HashedKey, kind: ChangeKind) -> Change {
    Change {
        map_name: map_name.to_string(),
        key: key.clone(),
        kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value;

    fn op(map: &str, key: &str, kind: OpKind) -> Op {
        Op {
            op_id: String::new(),
            map_name: map.into(),
            key: HashedKey::new(key),
            kind,
        }
    }

    #[test]
    fn lww_remove_stamps_a_tombstone_newer_than_everything_seen() {
        let mut state = ShardState::new();
        let mut hlc = Hlc::new("sync-0");
        let mut changes = Vec::new();
        let far = Timestamp::new(u64::from(u32::MAX) * 1000, 5, "client");
        let put = LwwRecord {
            value: Value::from(1),
            timestamp: far.clone(),
            ttl_ms: None,
        };
        assert!(state.apply(
            &mut hlc,
            &op("m", "k", OpKind::LwwPut(put.clone())),
            &mut changes
        ));
        assert!(state.apply(&mut hlc, &op("m", "k", OpKind::LwwRemove), &mut changes));
        let stored = state.lww("m").and_then(|m| m.get("k")).expect("stored");
        assert!(stored.is_tombstone());
        assert!(stored.timestamp > far);
        assert_eq!(stored.timestamp.node_id, "sync-0");
        assert_eq!(changes.len(), 2);
        assert!(matches!(&changes[1].kind, ChangeKind::Lww { previous: Some(p), .. } if *p == put));
        // Same name, other kind: independent store.
        assert!(state.or("m").is_none());
    }

    #[test]
    fn unchanged_merges_record_nothing() {
        let mut state = ShardState::new();
        let mut hlc = Hlc::new("s");
        let mut changes = Vec::new();
        let rec = OrMapRecord {
            value: Value::from(1),
            timestamp: Timestamp::new(1, 0, "c"),
            tag: "t".into(),
            ttl_ms: None,
        };
        assert!(state.apply(
            &mut hlc,
            &op("m", "k", OpKind::OrAdd(rec.clone())),
            &mut changes
        ));
        assert!(!state.apply(&mut hlc, &op("m", "k", OpKind::OrAdd(rec)), &mut changes));
        assert!(state.apply(
            &mut hlc,
            &op("m", "k", OpKind::OrRemove("t".into())),
            &mut changes
        ));
        assert!(!state.apply(
            &mut hlc,
            &op("m", "k", OpKind::OrRemove("t".into())),
            &mut changes
        ));
        assert_eq!(changes.len(), 2);
    }
}
