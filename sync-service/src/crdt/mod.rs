//! The CRDT maps a shard holds: LWW-Maps and OR-Maps, each with its Merkle tree.

pub mod lww;
pub mod or_map;
pub mod partition_counts;

pub use lww::LwwMap;
pub use or_map::{OrChange, OrKeyState, OrMap};
pub use partition_counts::PartitionCounts;
