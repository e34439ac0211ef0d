//! Per-partition key counts of one map, kept up to date on insert and delete so that
//! ListMaps never scans a map.

use std::collections::BTreeMap;
use topgun_proto::partition::PARTITION_COUNT;

/// Number of keys per partition.
#[derive(Debug, Default, Clone)]
pub struct PartitionCounts {
    counts: BTreeMap<u32, u64>,
    total: u64,
}

impl PartitionCounts {
    /// The keys among `keys` whose partition `dropped` selects, with their hashes —
    /// what a map must forget when its shard releases partitions. Empty at once when no
    /// counted partition is selected, without hashing a key.
    pub fn keys_to_drop<'a>(
        &self,
        keys: impl Iterator<Item = &'a String>,
        dropped: impl Fn(u32) -> bool,
    ) -> Vec<(String, u32)> {
        if !self.counts.keys().any(|p| dropped(*p)) {
            return Vec::new();
        }
        keys.map(|k| (k, topgun_proto::hash::fnv1a(k)))
            .filter(|(_, hash)| dropped(hash % PARTITION_COUNT))
            .map(|(k, hash)| (k.clone(), hash))
            .collect()
    }

    /// Counts one more key with hash `key_hash`.
    pub fn added(&mut self, key_hash: u32) {
        *self.counts.entry(key_hash % PARTITION_COUNT).or_default() += 1;
        self.total += 1;
    }

    /// Counts one key fewer.
    pub fn removed(&mut self, key_hash: u32) {
        let partition = key_hash % PARTITION_COUNT;
        if let Some(count) = self.counts.get_mut(&partition) {
            *count -= 1;
            self.total -= 1;
            if *count == 0 {
                self.counts.remove(&partition);
            }
        }
    }

    /// Keys of the map.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Partition → key count, for partitions holding at least one key.
    pub fn by_partition(&self) -> &BTreeMap<u32, u64> {
        &self.counts
    }
}
