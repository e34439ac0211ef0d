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
