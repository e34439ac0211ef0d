//! LWW-Map (core.md §4.4): one record per key, the strictly newer timestamp wins,
//! tombstones are ordinary records until pruned.

use super::partition_counts::PartitionCounts;
use crate::merkle::{lww_entry_hash, MerkleTree};
use std::collections::BTreeMap;
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
        match self.records.get_mut(key) {
            Some(local) => {
                if record.timestamp <= local.timestamp {
                    return None;
                }
                let entry_hash = lww_entry_hash(key, &record.timestamp);
                let previous = std::mem::replace(local, record);
                self.tree.update(key_hash, key, entry_hash);
                Some(Some(previous))
            }
            None => {
                let entry_hash = lww_entry_hash(key, &record.timestamp);
                self.records.insert(key.to_string(), record);
                self.tree.update(key_hash, key, entry_hash);
                self.partitions.added(key_hash);
                Some(None)
            }
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
        let doomed: Vec<String> = self
            .records
            .iter()
            .filter(|(_, r)| r.is_tombstone() && r.timestamp < *older_than)
            .map(|(k, _)| k.clone())
            .collect();
        let mut pruned = Vec::with_capacity(doomed.len());
        for key in doomed {
            if let Some(record) = self.records.remove(&key) {
                let key_hash = topgun_proto::hash::fnv1a(&key);
                self.tree.remove(key_hash, &key);
                self.partitions.removed(key_hash);
                pruned.push((key, record.timestamp));
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
            self.records.remove(key);
            self.tree.remove(*key_hash, key);
            self.partitions.removed(*key_hash);
        }
        doomed.len()
    }

    /// Live records whose TTL has run out at `now_ms`, with the timestamp their expiry
    /// tombstone gets: `{millis: millis + ttl, counter: 0, nodeId: node_id}`.
    pub fn expired(&self, now_ms: u64, node_id: &str) -> Vec<(String, Timestamp)> {
        self.records
            .iter()
            .filter(|(_, r)| !r.is_tombstone() && r.is_expired(now_ms))
            .map(|(k, r)| {
                let ttl = r.ttl_ms.unwrap_or(0);
                (
                    k.clone(),
                    Timestamp::new(r.timestamp.millis.saturating_add(ttl), 0, node_id),
                )
            })
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
}
