//! LWW-Map (core.md §4.4): one record per key, the strictly newer timestamp wins,
//! tombstones are ordinary records until pruned.
//!
//! Records with a TTL and tombstones are also indexed by when they become due, so a GC
//! sweep costs what it collects, not the size of the map: it runs under the shard's
//! write lock, and a full scan of 1M records held every write for ≈64 ms.

use super::partition_counts::PartitionCounts;
use crate::merkle::{lww_entry_hash, MerkleTree};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use topgun_proto::hlc::Timestamp;
use topgun_proto::wire::LwwRecord;

/// The records of one LWW map, its Merkle tree and its partition counts.
#[derive(Debug, Default)]
pub struct LwwMap {
    // Ordered by key so ScanMap pages without sorting.
    records: BTreeMap<String, LwwRecord>,
    tree: MerkleTree,
    partitions: PartitionCounts,
    /// Live records with a TTL, by the millis after which they are expired.
    expiring: BTreeSet<(u64, String)>,
    /// Tombstones by timestamp.
    tombstones: BTreeSet<(Timestamp, String)>,
}

/// When a record becomes due for GC.
enum Due {
    /// A tombstone: pruned once older than the tombstone TTL.
    Tombstone(Timestamp),
    /// A live record with a TTL: expired once `now` is past these millis.
    Expires(u64),
    /// Neither.
    Never,
}

impl Due {
    fn of(record: &LwwRecord) -> Due {
        if record.is_tombstone() {
            return Due::Tombstone(record.timestamp.clone());
        }
        match record.ttl_ms {
            Some(ttl) if ttl > 0 => Due::Expires(record.timestamp.millis.saturating_add(ttl)),
            _ => Due::Never,
        }
    }
}

impl LwwMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Merges `record` into `key` (whose `fnv1a` is `key_hash`). Returns `None` when the
    /// map is unchanged (equal or older timestamp: the local record is kept), otherwise
    /// `Some(previous record)`. The record is stored verbatim, `ttlMs` included.
    pub fn merge(
        &mut self,
        key: &str,
        key_hash: u32,
        record: LwwRecord,
    ) -> Option<Option<LwwRecord>> {
        let due = Due::of(&record);
        let previous = match self.records.get_mut(key) {
            Some(local) => {
                if record.timestamp <= local.timestamp {
                    return None;
                }
                let entry_hash = lww_entry_hash(key, &record.timestamp);
                let previous = std::mem::replace(local, record);
                self.tree.update(key_hash, key, entry_hash);
                self.unindex(key, Due::of(&previous));
                Some(previous)
            }
            None => {
                let entry_hash = lww_entry_hash(key, &record.timestamp);
                self.records.insert(key.to_string(), record);
                self.tree.update(key_hash, key, entry_hash);
                self.partitions.added(key_hash);
                None
            }
        };
        self.index(key, due);
        Some(previous)
    }

    fn index(&mut self, key: &str, due: Due) {
        match due {
            Due::Tombstone(stamp) => {
                self.tombstones.insert((stamp, key.to_string()));
            }
            Due::Expires(at) => {
                self.expiring.insert((at, key.to_string()));
            }
            Due::Never => {}
        }
    }

    fn unindex(&mut self, key: &str, due: Due) {
        match due {
            Due::Tombstone(stamp) => {
                self.tombstones.remove(&(stamp, key.to_string()));
            }
            Due::Expires(at) => {
                self.expiring.remove(&(at, key.to_string()));
            }
            Due::Never => {}
        }
    }

    /// The stored record of `key`, tombstones included.
    pub fn get(&self, key: &str) -> Option<&LwwRecord> {
        self.records.get(key)
    }

    /// Records in key order, starting strictly after `after` when given.
    pub fn range_after<'a>(
        &'a self,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a String, &'a LwwRecord)> + 'a {
        let lower = match after {
            Some(key) => Bound::Excluded(key),
            None => Bound::Unbounded,
        };
        self.records.range::<str, _>((lower, Bound::Unbounded))
    }

    /// Every record in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &LwwRecord)> {
        self.records.iter()
    }

    /// Number of stored records (tombstones included).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when the map holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The map's Merkle tree.
    pub fn tree(&self) -> &MerkleTree {
        &self.tree
    }

    /// Key counts per partition.
    pub fn partitions(&self) -> &PartitionCounts {
        &self.partitions
    }

    /// Deletes every tombstone older than `older_than` from the map and its tree, and
    /// returns each pruned key with its tombstone's timestamp (for the storage delete).
    pub fn prune_tombstones(&mut self, older_than: &Timestamp) -> Vec<(String, Timestamp)> {
        // `(older_than, "")` sorts before every entry stamped `older_than`.
        let bound = (older_than.clone(), String::new());
        let doomed: Vec<(Timestamp, String)> = self.tombstones.range(..bound).cloned().collect();
        let mut pruned = Vec::with_capacity(doomed.len());
        for entry in doomed {
            self.tombstones.remove(&entry);
            let (stamp, key) = entry;
            if self.records.remove(&key).is_some() {
                let key_hash = topgun_proto::hash::fnv1a(&key);
                self.tree.remove(key_hash, &key);
                self.partitions.removed(key_hash);
                pruned.push((key, stamp));
            }
        }
        pruned
    }

    /// Forgets every key of the partitions `dropped` selects (the shard no longer owns
    /// them), keeping the tree and the counts consistent; returns how many keys went.
    /// Nothing is recorded: the data still exists, with its new owner and in storage.
    pub fn drop_partitions(&mut self, dropped: impl Fn(u32) -> bool) -> usize {
        let doomed = self.partitions.keys_to_drop(self.records.keys(), dropped);
        for (key, key_hash) in &doomed {
            if let Some(record) = self.records.remove(key) {
                self.unindex(key, Due::of(&record));
            }
            self.tree.remove(*key_hash, key);
            self.partitions.removed(*key_hash);
        }
        doomed.len()
    }

    /// Live records whose TTL has run out at `now_ms`, with the timestamp their expiry
    /// tombstone gets: `{millis: millis + ttl, counter: 0, nodeId: node_id}`.
    pub fn expired(&self, now_ms: u64, node_id: &str) -> Vec<(String, Timestamp)> {
        self.expiring
            .range(..(now_ms, String::new()))
            .map(|(at, key)| (key.clone(), Timestamp::new(*at, 0, node_id)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value;
    use topgun_proto::hash::fnv1a;

    fn rec(value: Value, millis: u64, counter: u64, node: &str) -> LwwRecord {
        LwwRecord {
            value,
            timestamp: Timestamp::new(millis, counter, node),
            ttl_ms: None,
        }
    }

    fn merge(map: &mut LwwMap, key: &str, record: LwwRecord) -> Option<Option<LwwRecord>> {
        map.merge(key, fnv1a(key), record)
    }

    #[test]
    fn strictly_newer_wins_and_equal_keeps_local() {
        let mut map = LwwMap::new();
        assert_eq!(
            merge(&mut map, "k", rec(Value::from(1), 10, 0, "a")),
            Some(None)
        );
        assert_eq!(
            merge(&mut map, "k", rec(Value::from(2), 10, 0, "a")),
            None,
            "equal keeps local"
        );
        assert_eq!(
            merge(&mut map, "k", rec(Value::from(3), 9, 5, "z")),
            None,
            "older loses"
        );
        let newer = merge(&mut map, "k", rec(Value::from(4), 10, 0, "b"));
        assert_eq!(newer, Some(Some(rec(Value::from(1), 10, 0, "a"))));
        assert_eq!(map.get("k").map(|r| r.value.clone()), Some(Value::from(4)));
    }

    #[test]
    fn tombstones_stay_in_the_tree_until_pruned() {
        let mut map = LwwMap::new();
        merge(
            &mut map,
            "user-1",
            rec(Value::from("x"), 1_700_000_000_000, 1, "node-1"),
        );
        merge(&mut map, "gone", rec(Value::Nil, 5, 0, "n"));
        let with_tombstone = map.tree().root_hash();
        assert_eq!(map.len(), 2);
        assert_eq!(map.partitions().total(), 2);
        let pruned = map.prune_tombstones(&Timestamp::new(6, 0, ""));
        assert_eq!(
            pruned,
            vec![("gone".to_string(), Timestamp::new(5, 0, "n"))]
        );
        assert_ne!(map.tree().root_hash(), with_tombstone);
        assert_eq!(map.tree().root_hash(), 1214284741);
        assert_eq!(map.partitions().total(), 1);
        assert!(
            map.prune_tombstones(&Timestamp::new(u64::MAX, 0, ""))
                .is_empty(),
            "live kept"
        );
    }

    #[test]
    fn expiry_candidates_get_deterministic_tombstone_timestamps() {
        let mut map = LwwMap::new();
        let mut ttl = rec(Value::from(1), 1_000, 3, "c");
        ttl.ttl_ms = Some(500);
        merge(&mut map, "t", ttl);
        merge(&mut map, "forever", rec(Value::from(1), 1_000, 0, "c"));
        assert!(map.expired(1_500, "s").is_empty(), "alive at equality");
        assert_eq!(
            map.expired(1_501, "s"),
            vec![("t".to_string(), Timestamp::new(1_500, 0, "s"))]
        );
    }

    #[test]
    fn ranges_are_exclusive_and_ordered() {
        let mut map = LwwMap::new();
        for key in ["b", "a", "c"] {
            merge(&mut map, key, rec(Value::from(1), 1, 0, "n"));
        }
        let keys: Vec<&String> = map.range_after(Some("a")).map(|(k, _)| k).collect();
        assert_eq!(keys, vec!["b", "c"]);
        assert_eq!(map.range_after(None).count(), 3);
    }

    fn expired_by_scan(map: &LwwMap, now: u64) -> Vec<(String, Timestamp)> {
        let mut want: Vec<(String, Timestamp)> = map
            .iter()
            .filter(|(_, r)| !r.is_tombstone() && r.is_expired(now))
            .map(|(k, r)| {
                let at = r.timestamp.millis + r.ttl_ms.unwrap_or(0);
                (k.clone(), Timestamp::new(at, 0, "gc"))
            })
            .collect();
        want.sort();
        want
    }

    fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
        v.sort();
        v
    }

    proptest::proptest! {
        /// The GC indexes always select exactly what a scan of every record would.
        #[test]
        fn gc_indexes_agree_with_a_full_scan(
            ops in proptest::collection::vec((0u8..20, 0u64..50, 0u8..3, 1u64..30), 1..80),
            now in 0u64..100,
            older in 0u64..60,
        ) {
            let mut map = LwwMap::new();
            for (k, millis, kind, ttl) in ops {
                let key = format!("k{k}");
                let record = LwwRecord {
                    value: if kind == 2 { Value::Nil } else { Value::from(1) },
                    timestamp: Timestamp::new(millis, 0, "n"),
                    ttl_ms: (kind == 1).then_some(ttl),
                };
                map.merge(&key, fnv1a(&key), record);
            }
            proptest::prop_assert_eq!(sorted(map.expired(now, "gc")), expired_by_scan(&map, now));

            let older = Timestamp::new(older, 0, "");
            let want: Vec<String> = map
                .iter()
                .filter(|(_, r)| r.is_tombstone() && r.timestamp < older)
                .map(|(k, _)| k.clone())
                .collect();
            let pruned: Vec<String> = map.prune_tombstones(&older).into_iter().map(|(k, _)| k).collect();
            proptest::prop_assert_eq!(sorted(pruned), want);
            proptest::prop_assert!(map.prune_tombstones(&older).is_empty());

            map.drop_partitions(|p| p % 2 == 0);
            proptest::prop_assert_eq!(sorted(map.expired(now, "gc")), expired_by_scan(&map, now));
            proptest::prop_assert_eq!(map.tombstones.len(), map.iter().filter(|(_, r)| r.is_tombstone()).count());
        }
    }
}
