//! The client side of LWW Merkle sync (core.md §6.2–6.4): a local tree built exactly like
//! the TypeScript client's, and the walk that compares it with the server's buckets.

use crate::clock::Timestamp;
use crate::decode::LeafRecord;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use topgun_proto::hash::fnv1a;

/// Tree depth: entries live in leaves at 3-hex-character paths.
pub const DEPTH: usize = 3;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The leaf a key lives in: the first three hex digits of its FNV-1a hash.
pub fn leaf_path(key: &str) -> String {
    let mut hex = format!("{:08x}", fnv1a(key));
    hex.truncate(DEPTH);
    hex
}

/// The LWW entry hash: FNV-1a of `key:millis:counter:nodeId`; the value is not hashed.
pub fn entry_hash(key: &str, ts: &Timestamp) -> u32 {
    fnv1a(&format!(
        "{key}:{}:{}:{}",
        ts.millis, ts.counter, ts.node_id
    ))
}

/// A Merkle tree of depth 3 whose node hashes are wrapping sums of their children.
#[derive(Debug, Clone, Default)]
pub struct MerkleTree {
    /// key → (leaf path, entry hash)
    entries: HashMap<String, (String, u32)>,
    /// Every existing node by path ("" = root); nodes are never removed (core.md §6.2).
    nodes: HashMap<String, u32>,
}

impl MerkleTree {
    /// Sets the entry of `key` to `hash`, updating every node on its path.
    pub fn set(&mut self, key: &str, hash: u32) {
        let leaf = leaf_path(key);
        let old = self
            .entries
            .insert(key.to_string(), (leaf.clone(), hash))
            .map_or(0, |(_, h)| h);
        for len in 0..=DEPTH {
            let node = self.nodes.entry(leaf[..len].to_string()).or_insert(0);
            *node = node.wrapping_sub(old).wrapping_add(hash);
        }
    }

    /// Root hash (0 for an empty tree).
    pub fn root(&self) -> u32 {
        self.nodes.get("").copied().unwrap_or(0)
    }

    /// Hash of the node at `path`, if it exists.
    pub fn node_hash(&self, path: &str) -> Option<u32> {
        self.nodes.get(path).copied()
    }

    /// `getBuckets(path)`: child hex char → child hash over existing children.
    pub fn buckets(&self, path: &str) -> BTreeMap<char, u32> {
        if path.len() >= DEPTH {
            return BTreeMap::new();
        }
        HEX.iter()
            .filter_map(|&c| {
                let child = format!("{path}{}", c as char);
                self.nodes.get(&child).map(|h| (c as char, *h))
            })
            .collect()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A client's copy of one LWW map: the newest timestamp per key and the tree over them.
#[derive(Debug, Clone, Default)]
pub struct Replica {
    records: HashMap<String, Timestamp>,
    tree: MerkleTree,
}

impl Replica {
    /// LWW merge (core.md §4.4): keeps the record with the greater timestamp; true if changed.
    pub fn merge(&mut self, key: &str, ts: &Timestamp) -> bool {
        if self.records.get(key).is_some_and(|local| local >= ts) {
            return false;
        }
        self.tree.set(key, entry_hash(key, ts));
        self.records.insert(key.to_string(), ts.clone());
        true
    }

    /// The tree.
    pub fn tree(&self) -> &MerkleTree {
        &self.tree
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// No records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// One Merkle walk: which paths are requested, which answers are still due, what came back.
///
/// The walk pipelines like the TypeScript client: every differing child is requested as soon
/// as its parent's buckets arrive. A leaf path is resolved when the local leaf hash equals the
/// hash the server announced for it, because a large leaf may arrive in several messages.
#[derive(Debug, Default)]
pub struct SyncWalk {
    /// path → hash the server announced for it
    outstanding: HashMap<String, u32>,
    /// Requests sent so far.
    pub requests: u64,
    /// Leaf paths that delivered records.
    pub leaves_fetched: BTreeSet<String>,
    /// Records received in leaves.
    pub records_received: u64,
    /// Records that changed the replica.
    pub records_changed: u64,
    /// Bytes of leaf messages.
    pub leaf_bytes: u64,
    /// Records the server pushed ahead of its root (changes since the last sync).
    pub records_pushed: u64,
    /// Pushed records that changed the replica.
    pub pushed_changed: u64,
}

impl SyncWalk {
    /// Starts from the server root: the paths to request (`[""]` when the roots differ).
    pub fn start(&mut self, local: &Replica, remote_root: u32) -> Vec<String> {
        if local.tree().root() == remote_root {
            return Vec::new();
        }
        self.request(String::new(), remote_root)
    }

    fn request(&mut self, path: String, expected: u32) -> Vec<String> {
        self.outstanding.insert(path.clone(), expected);
        self.requests += 1;
        vec![path]
    }

    /// Handles SYNC_RESP_BUCKETS: requests every child whose hash differs from the local one.
    pub fn on_buckets(
        &mut self,
        local: &Replica,
        path: &str,
        buckets: &[(String, u32)],
    ) -> Vec<String> {
        self.outstanding.remove(path);
        let mut next = Vec::new();
        for (c, remote) in buckets {
            let child = format!("{path}{c}");
            if child.len() > DEPTH {
                continue;
            }
            if local.tree().node_hash(&child).unwrap_or(0) != *remote {
                next.extend(self.request(child, *remote));
            }
        }
        next
    }

    /// Handles SYNC_RESP_LEAF: merges the records and resolves the path once it matches.
    pub fn on_leaf(
        &mut self,
        local: &mut Replica,
        path: &str,
        records: &[LeafRecord],
        bytes: usize,
    ) {
        self.leaves_fetched.insert(path.to_string());
        self.leaf_bytes += bytes as u64;
        for r in records {
            self.records_received += 1;
            if local.merge(&r.key, &r.timestamp) {
                self.records_changed += 1;
            }
        }
        if let Some(expected) = self.outstanding.get(path) {
            if local.tree().node_hash(path).unwrap_or(0) == *expected {
                self.outstanding.remove(path);
            }
        }
    }

    /// Handles SYNC_RESP_LEAF messages that arrive before the root: the server's push of
    /// what changed since the client's last sync. They answer no request.
    pub fn on_pushed(&mut self, local: &mut Replica, records: &[LeafRecord], bytes: usize) {
        self.leaf_bytes += bytes as u64;
        for r in records {
            self.records_pushed += 1;
            if local.merge(&r.key, &r.timestamp) {
                self.pushed_changed += 1;
            }
        }
    }

    /// No answer is due.
    pub fn is_complete(&self) -> bool {
        self.outstanding.is_empty()
    }

    /// Paths still due, with the hash the server announced and the local one.
    pub fn unresolved(&self, local: &Replica) -> Vec<(String, u32, u32)> {
        let mut list: Vec<_> = self
            .outstanding
            .iter()
            .map(|(p, h)| (p.clone(), *h, local.tree().node_hash(p).unwrap_or(0)))
            .collect();
        list.sort();
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(millis: u64, counter: u64, node: &str) -> Timestamp {
        Timestamp {
            millis,
            counter,
            node_id: node.into(),
        }
    }

    fn spec_tree() -> Replica {
        // The worked example of core.md §6.3.
        let mut r = Replica::default();
        r.merge("user-1", &ts(1_700_000_000_000, 1, "node-1"));
        r.merge("user-2", &ts(1_700_000_000_001, 0, "node-2"));
        r.merge("todo:42", &ts(1_700_000_000_500, 3, "c1"));
        r
    }

    #[test]
    fn matches_the_spec_worked_example() {
        assert_eq!(leaf_path("user-1"), "f55");
        assert_eq!(
            entry_hash("user-1", &ts(1_700_000_000_000, 1, "node-1")),
            1_214_284_741
        );
        let r = spec_tree();
        assert_eq!(r.tree().root(), 733_201_421);
        assert_eq!(
            r.tree().buckets(""),
            BTreeMap::from([('3', 2_944_331_021), ('f', 2_083_837_696)])
        );
        assert_eq!(
            r.tree().buckets("f"),
            BTreeMap::from([('5', 1_214_284_741), ('8', 869_552_955)])
        );
        assert!(r.tree().buckets("f55").is_empty());
    }

    #[test]
    fn lww_merge_keeps_the_newer_record_and_rehashes() {
        let mut r = spec_tree();
        assert!(
            !r.merge("user-1", &ts(1_700_000_000_000, 1, "node-1")),
            "same timestamp is no change"
        );
        assert!(
            !r.merge("user-1", &ts(1_600_000_000_000, 9, "node-1")),
            "older loses"
        );
        let before = r.tree().root();
        assert!(r.merge("user-1", &ts(1_700_000_000_000, 2, "node-1")));
        let delta =
            entry_hash("user-1", &ts(1_700_000_000_000, 2, "node-1")).wrapping_sub(1_214_284_741);
        assert_eq!(r.tree().root(), before.wrapping_add(delta));
        assert_eq!(r.len(), 3);
    }

    /// Answers a walk from a server replica, the way a compatible server would.
    fn serve(
        server: &Replica,
        server_leaves: &HashMap<String, Vec<LeafRecord>>,
        client: &mut Replica,
    ) -> SyncWalk {
        let mut walk = SyncWalk::default();
        let mut queue = walk.start(client, server.tree().root());
        while let Some(path) = queue.pop() {
            match server_leaves.get(&path) {
                Some(records) if path.len() == DEPTH => walk.on_leaf(client, &path, records, 10),
                _ => {
                    let buckets: Vec<(String, u32)> = server
                        .tree()
                        .buckets(&path)
                        .into_iter()
                        .map(|(c, h)| (c.to_string(), h))
                        .collect();
                    queue.extend(walk.on_buckets(client, &path, &buckets));
                }
            }
        }
        walk
    }

    fn server_state(n: usize, bump: &[usize]) -> (Replica, HashMap<String, Vec<LeafRecord>>) {
        let mut server = Replica::default();
        let mut leaves: HashMap<String, Vec<LeafRecord>> = HashMap::new();
        for i in 0..n {
            let key = format!("rec-{i}");
            let t = if bump.contains(&i) {
                ts(2_000, 0, "w")
            } else {
                ts(1_000, i as u64, "w")
            };
            server.merge(&key, &t);
            leaves
                .entry(leaf_path(&key))
                .or_default()
                .push(LeafRecord { key, timestamp: t });
        }
        (server, leaves)
    }

    #[test]
    fn a_fresh_client_fetches_every_leaf_and_converges() {
        let (server, leaves) = server_state(500, &[]);
        let mut client = Replica::default();
        let walk = serve(&server, &leaves, &mut client);
        assert!(walk.is_complete());
        assert_eq!(client.tree().root(), server.tree().root());
        assert_eq!(client.len(), 500);
        assert_eq!(walk.leaves_fetched.len(), leaves.len());
        assert_eq!(walk.records_received, 500);
    }

    #[test]
    fn a_client_with_old_state_fetches_only_the_changed_leaves() {
        let (old_server, old_leaves) = server_state(2_000, &[]);
        let mut client = Replica::default();
        serve(&old_server, &old_leaves, &mut client);

        let changed = [3, 700, 1_999];
        let (server, leaves) = server_state(2_000, &changed);
        let walk = serve(&server, &leaves, &mut client);
        let touched: BTreeSet<String> = changed
            .iter()
            .map(|i| leaf_path(&format!("rec-{i}")))
            .collect();
        assert_eq!(walk.leaves_fetched, touched);
        assert_eq!(walk.records_changed, 3);
        assert_eq!(client.tree().root(), server.tree().root());
    }

    #[test]
    fn equal_roots_need_no_request() {
        let (server, leaves) = server_state(50, &[]);
        let mut client = server.clone();
        let walk = serve(&server, &leaves, &mut client);
        assert_eq!(walk.requests, 0);
        assert!(walk.is_complete());
    }

    #[test]
    fn a_split_leaf_resolves_only_when_its_hash_matches() {
        let mut server = Replica::default();
        // Two keys in one leaf: find a second key sharing the leaf of "a".
        let leaf = leaf_path("a");
        let other = (0..100_000)
            .map(|i| format!("k{i}"))
            .find(|k| leaf_path(k) == leaf)
            .expect("a colliding key exists");
        let (ta, tb) = (ts(5, 0, "s"), ts(6, 0, "s"));
        server.merge("a", &ta);
        server.merge(&other, &tb);
        let mut client = Replica::default();
        let mut walk = SyncWalk::default();
        walk.outstanding.insert(
            leaf.clone(),
            server.tree().node_hash(&leaf).expect("leaf exists"),
        );
        walk.on_leaf(
            &mut client,
            &leaf,
            &[LeafRecord {
                key: "a".into(),
                timestamp: ta,
            }],
            1,
        );
        assert!(!walk.is_complete(), "half a leaf is not the leaf");
        assert_eq!(walk.unresolved(&client).len(), 1);
        walk.on_leaf(
            &mut client,
            &leaf,
            &[LeafRecord {
                key: other,
                timestamp: tb,
            }],
            1,
        );
        assert!(walk.is_complete());
    }

    #[test]
    fn an_empty_answer_for_a_leaf_path_resolves_it() {
        let client = Replica::default();
        let mut walk = SyncWalk::default();
        let next = walk.start(&client, 42);
        assert_eq!(next, vec![String::new()]);
        let next = walk.on_buckets(&client, "", &[("a".into(), 42)]);
        assert_eq!(next, vec!["a".to_string()]);
        walk.on_buckets(&client, "a", &[]);
        assert!(walk.is_complete());
        assert_eq!(walk.requests, 2);
    }
}
