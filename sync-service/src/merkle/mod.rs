//! Merkle trees of the maps and the client-exact entry hashes they sum.

pub mod entry_hash;
pub mod js_text;
pub mod tree;

pub use entry_hash::{lww_entry_hash, or_entry_hash};
pub use tree::{MerkleTree, NodePath};
