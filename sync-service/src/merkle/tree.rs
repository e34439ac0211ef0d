//! The depth-3, 16-ary Merkle tree shared by LWW and OR-Maps (core.md §6.2).
//!
//! The shape is fixed (4096 leaves addressed by the top 12 bits of `fnv1a(key)`), so
//! internal hashes live in flat arrays and an update touches exactly four sums. Every
//! hash is a wrapping sum, which is what lets the gateway add up the buckets of several
//! shards and obtain the tree of the whole map.

use std::collections::{BTreeMap, HashMap};

/// A validated node path: `""` or one to three lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePath {
    digits: [u8; 3],
    len: usize,
}

impl NodePath {
    /// The root.
    pub const ROOT: NodePath = NodePath {
        digits: [0; 3],
        len: 0,
    };

    /// Parses a path; anything but 0–3 lowercase hex characters is rejected.
    pub fn parse(path: &str) -> Option<NodePath> {
        if path.len() > 3 {
            return None;
        }
        let mut digits = [0u8; 3];
        for (slot, c) in digits.iter_mut().zip(path.chars()) {
            *slot = match c {
                '0'..='9' => c as u8 - b'0',
                'a'..='f' => c as u8 - b'a' + 10,
                _ => return None,
            };
        }
        Some(NodePath {
            digits,
            len: path.len(),
        })
    }

    /// The path of the leaf holding a key whose `fnv1a` is `key_hash`.
    pub fn leaf_of(key_hash: u32) -> NodePath {
        let leaf = leaf_index(key_hash);
        NodePath {
            digits: [
                (leaf >> 8) as u8,
                ((leaf >> 4) & 0xf) as u8,
                (leaf & 0xf) as u8,
            ],
            len: 3,
        }
    }

    /// Number of hex digits (0 = root, 3 = leaf).
    pub fn depth(&self) -> usize {
        self.len
    }

    /// The leaf index (0..4096) when this path names a leaf.
    pub fn leaf_index(&self) -> Option<u16> {
        (self.len == 3).then(|| {
            (u16::from(self.digits[0]) << 8)
                | (u16::from(self.digits[1]) << 4)
                | u16::from(self.digits[2])
        })
    }
}

impl std::fmt::Display for NodePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for d in &self.digits[..self.len] {
            write!(f, "{:x}", d)?;
        }
        Ok(())
    }
}

/// The leaf (0..4096) a key hash falls into: its first three hex digits.
pub fn leaf_index(key_hash: u32) -> u16 {
    (key_hash >> 20) as u16
}

#[derive(Debug, Default)]
struct Leaf {
    hash: u32,
    entries: HashMap<String, u32>,
}

/// One map's Merkle tree. Nodes are created on first insert below them and never
/// deleted, so removing every key leaves zero-hash buckets behind, as the client does.
#[derive(Debug)]
pub struct MerkleTree {
    root: u32,
    level1: [u32; 16],
    level2: Box<[u32; 256]>,
    /// Bit `c` set = level-1 node `c` exists.
    level1_exists: u16,
    /// Bit `d` of word `c` set = level-2 node `cd` exists.
    level2_exists: [u16; 16],
    leaves: HashMap<u16, Leaf>,
    entry_count: usize,
}

impl Default for MerkleTree {
    fn default() -> Self {
        MerkleTree {
            root: 0,
            level1: [0; 16],
            level2: Box::new([0; 256]),
            level1_exists: 0,
            level2_exists: [0; 16],
            leaves: HashMap::new(),
            entry_count: 0,
        }
    }
}

impl MerkleTree {
    /// An empty tree (root hash 0).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the entry of `key` (whose `fnv1a` is `key_hash`) to `entry_hash`.
    pub fn update(&mut self, key_hash: u32, key: &str, entry_hash: u32) {
        self.touch(key_hash);
        let leaf_idx = leaf_index(key_hash);
        let leaf = self.leaves.entry(leaf_idx).or_default();
        let old = match leaf.entries.get_mut(key) {
            Some(slot) => std::mem::replace(slot, entry_hash),
            None => {
                leaf.entries.insert(key.to_string(), entry_hash);
                self.entry_count += 1;
                0
            }
        };
        self.add(leaf_idx, entry_hash.wrapping_sub(old));
    }

    /// Creates the nodes on the path of a key without giving it an entry. OR keys left
    /// with only tombstones call it, so which nodes exist depends on the keys a map has
    /// seen, not on the order ops arrived in (an add then its remove, or the remove
    /// then the ignored add, leave the same tree), and a reload rebuilds the same tree.
    pub fn touch(&mut self, key_hash: u32) {
        let leaf_idx = leaf_index(key_hash);
        self.leaves.entry(leaf_idx).or_default();
        let (c, d) = ((leaf_idx >> 8) as usize, ((leaf_idx >> 4) & 0xf) as usize);
        self.level1_exists |= 1 << c;
        self.level2_exists[c] |= 1 << d;
    }

    /// Removes the entry of `key`; its nodes stay, with their sums reduced.
    pub fn remove(&mut self, key_hash: u32, key: &str) {
        let leaf_idx = leaf_index(key_hash);
        let Some(old) = self
            .leaves
            .get_mut(&leaf_idx)
            .and_then(|leaf| leaf.entries.remove(key))
        else {
            return;
        };
        self.entry_count -= 1;
        self.add(leaf_idx, 0u32.wrapping_sub(old));
    }

    fn add(&mut self, leaf_idx: u16, delta: u32) {
        if delta == 0 {
            return;
        }
        let idx = leaf_idx as usize;
        self.root = self.root.wrapping_add(delta);
        self.level1[idx >> 8] = self.level1[idx >> 8].wrapping_add(delta);
        self.level2[idx >> 4] = self.level2[idx >> 4].wrapping_add(delta);
        if let Some(leaf) = self.leaves.get_mut(&leaf_idx) {
            leaf.hash = leaf.hash.wrapping_add(delta);
        }
    }

    /// The root hash (0 for an empty tree).
    pub fn root_hash(&self) -> u32 {
        self.root
    }

    /// Number of entries (keys) in the tree.
    pub fn len(&self) -> usize {
        self.entry_count
    }

    /// True when no key has an entry.
    pub fn is_empty(&self) -> bool {
        self.entry_count == 0
    }

    /// The hash of the node at `path`; 0 for a node that does not exist.
    pub fn node_hash(&self, path: &NodePath) -> u32 {
        let d = &path.digits;
        match path.len {
            0 => self.root,
            1 => self.level1[d[0] as usize],
            2 => self.level2[(d[0] as usize) << 4 | d[1] as usize],
            _ => path
                .leaf_index()
                .and_then(|idx| self.leaves.get(&idx))
                .map_or(0, |leaf| leaf.hash),
        }
    }

    /// `getBuckets(path)`: each existing child's hex digit and hash (zero-hash children
    /// included); empty for leaves and for nodes that do not exist.
    pub fn buckets(&self, path: &NodePath) -> BTreeMap<char, u32> {
        let d = &path.digits;
        let mut out = BTreeMap::new();
        match path.len {
            0 => {
                for c in 0..16 {
                    if self.level1_exists & (1 << c) != 0 {
                        out.insert(hex_char(c), self.level1[c]);
                    }
                }
            }
            1 => {
                let c = d[0] as usize;
                for child in 0..16 {
                    if self.level2_exists[c] & (1 << child) != 0 {
                        out.insert(hex_char(child), self.level2[c << 4 | child]);
                    }
                }
            }
            2 => {
                let prefix = (u16::from(d[0]) << 8) | (u16::from(d[1]) << 4);
                for child in 0..16u16 {
                    if let Some(leaf) = self.leaves.get(&(prefix | child)) {
                        out.insert(hex_char(child as usize), leaf.hash);
                    }
                }
            }
            _ => {}
        }
        out
    }

    /// The keys with an entry in the leaf at `path` (none unless `path` is a leaf).
    pub fn leaf_keys(&self, path: &NodePath) -> impl Iterator<Item = &str> {
        path.leaf_index()
            .and_then(|idx| self.leaves.get(&idx))
            .into_iter()
            .flat_map(|leaf| leaf.entries.keys().map(String::as_str))
    }

    /// The entry hash of `key`, if it has one.
    pub fn entry(&self, key_hash: u32, key: &str) -> Option<u32> {
        self.leaves
            .get(&leaf_index(key_hash))
            .and_then(|leaf| leaf.entries.get(key).copied())
    }
}

fn hex_char(d: usize) -> char {
    char::from_digit(d as u32, 16).unwrap_or('0')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::entry_hash::lww_entry_hash;
    use topgun_proto::hash::fnv1a;
    use topgun_proto::hlc::Timestamp;

    fn put(tree: &mut MerkleTree, key: &str, ts: Timestamp) {
        tree.update(fnv1a(key), key, lww_entry_hash(key, &ts));
    }

    fn path(p: &str) -> NodePath {
        NodePath::parse(p).expect("valid path")
    }

    fn example() -> MerkleTree {
        let mut tree = MerkleTree::new();
        put(
            &mut tree,
            "user-1",
            Timestamp::new(1_700_000_000_000, 1, "node-1"),
        );
        put(
            &mut tree,
            "user-2",
            Timestamp::new(1_700_000_000_001, 0, "node-2"),
        );
        put(
            &mut tree,
            "todo:42",
            Timestamp::new(1_700_000_000_500, 3, "c1"),
        );
        tree
    }

    #[test]
    fn worked_example_root_and_buckets() {
        let tree = example();
        assert_eq!(tree.root_hash(), 733201421);
        let root: Vec<(char, u32)> = tree.buckets(&NodePath::ROOT).into_iter().collect();
        assert_eq!(root, vec![('3', 2944331021), ('f', 2083837696)]);
        let f: Vec<(char, u32)> = tree.buckets(&path("f")).into_iter().collect();
        assert_eq!(f, vec![('5', 1214284741), ('8', 869552955)]);
        assert_eq!(tree.node_hash(&path("f55")), 1214284741);
        assert_eq!(
            tree.leaf_keys(&path("f55")).collect::<Vec<_>>(),
            vec!["user-1"]
        );
        assert!(
            tree.buckets(&path("f55")).is_empty(),
            "leaves have no buckets"
        );
        assert_eq!(NodePath::leaf_of(fnv1a("user-1")).to_string(), "f55");
    }

    #[test]
    fn updates_replace_and_removals_keep_zero_nodes() {
        let mut tree = example();
        put(
            &mut tree,
            "user-1",
            Timestamp::new(1_700_000_000_000, 1, "node-1"),
        );
        assert_eq!(
            tree.root_hash(),
            733201421,
            "same entry twice changes nothing"
        );
        tree.remove(fnv1a("todo:42"), "todo:42");
        assert_eq!(tree.root_hash(), 1214284741u32.wrapping_add(869552955));
        assert_eq!(
            tree.buckets(&NodePath::ROOT).get(&'3'),
            Some(&0),
            "node kept with hash 0"
        );
        assert_eq!(tree.buckets(&path("32")).get(&'6'), Some(&0));
        assert_eq!(tree.len(), 2);
        tree.remove(fnv1a("missing"), "missing");
        assert_eq!(tree.len(), 2);
    }

    #[test]
    fn missing_nodes_answer_zero_and_no_buckets() {
        let tree = example();
        assert_eq!(tree.node_hash(&path("0")), 0);
        assert!(tree.buckets(&path("0")).is_empty());
        assert!(tree.buckets(&path("00")).is_empty());
        assert_eq!(MerkleTree::new().root_hash(), 0);
        assert!(MerkleTree::new().buckets(&NodePath::ROOT).is_empty());
    }

    #[test]
    fn paths_are_validated() {
        for bad in ["g", "F", "1234", " ", "é"] {
            assert!(NodePath::parse(bad).is_none(), "{bad:?}");
        }
        for good in ["", "0", "af", "f55"] {
            assert_eq!(
                NodePath::parse(good).map(|p| p.to_string()),
                Some(good.to_string())
            );
        }
    }
}
