//! Key -> partition: `fnv1a(key) mod 271` (core.md §7.1). Only the key is hashed.

use crate::hash::fnv1a;

/// Fixed number of partitions of every TopGun cluster.
pub const PARTITION_COUNT: u32 = 271;

/// The partition that owns `key`.
pub fn partition_of(key: &str) -> u32 {
    fnv1a(key) % PARTITION_COUNT
}

/// Partitions owned by shard `index` of `count` shards: a contiguous, near-equal range,
/// so every partition has exactly one owner and the union covers all 271.
pub fn shard_partitions(index: u32, count: u32) -> Vec<u32> {
    assert!(count > 0 && index < count, "shard index out of range");
    (0..PARTITION_COUNT)
        .filter(|p| shard_of_partition(*p, count) == index)
        .collect()
}

/// Which of `count` shards owns `partition` under [`shard_partitions`].
pub fn shard_of_partition(partition: u32, count: u32) -> u32 {
    // Ranges of floor/ceil(271 / count) partitions, in order.
    ((u64::from(partition) * u64::from(count)) / u64::from(PARTITION_COUNT)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_protocol_table() {
        for (key, partition) in [
            ("", 199),
            ("a", 101),
            ("hello", 95),
            ("key1", 268),
            ("user-1", 120),
            ("todos", 212),
        ] {
            assert_eq!(partition_of(key), partition, "partition_of({key:?})");
        }
    }

    #[test]
    fn shard_ranges_are_disjoint_and_cover_every_partition() {
        for count in 1..=7 {
            let mut all: Vec<u32> = (0..count)
                .flat_map(|i| shard_partitions(i, count))
                .collect();
            all.sort_unstable();
            assert_eq!(
                all,
                (0..PARTITION_COUNT).collect::<Vec<_>>(),
                "count {count}"
            );
        }
    }
}
