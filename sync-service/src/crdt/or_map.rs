//! OR-Map, the observed-remove multimap (core.md §4.5).
//!
//! Tombstones are kept per key: every op names its key, so a tombstone lives with the
//! key whose record it removed (or, for an OR_REMOVE of a tag never seen, with the key
//! the remove named, so a late add of that tag is still ignored). Tags are opaque.
//!
//! Keys holding a record with a TTL or a tombstone whose tag parses as a timestamp are
//! also indexed by when the GC next has work there, so a sweep (which holds the shard's
//! write lock) visits only keys with something due instead of every key.

use super::partition_counts::PartitionCounts;
use crate::merkle::tree::leaf_index;
use crate::merkle::{or_entry_hash, MerkleTree, NodePath};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use topgun_proto::hlc::Timestamp;
use topgun_proto::wire::OrMapRecord;

/// Everything one key holds: live records by tag and tombstoned tags.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct OrKeyState {
    /// Live records (TTL-expired ones included until swept), by tag.
    pub records: BTreeMap<String, OrMapRecord>,
    /// Tags removed from this key.
    pub tombstones: BTreeSet<String>,
}

impl OrKeyState {
    fn is_empty(&self) -> bool {
        self.records.is_empty() && self.tombstones.is_empty()
    }
}

/// When the GC next has work at a key.
#[derive(Debug, Default, Clone, PartialEq)]
struct KeyDue {
    /// Earliest millis after which one of its records is expired.
    expires: Option<u64>,
    /// Its oldest tombstone tag that parses as a timestamp (only those are pruned).
    oldest_tombstone: Option<Timestamp>,
}

impl KeyDue {
    fn of(state: &OrKeyState) -> KeyDue {
        KeyDue {
            expires: state
                .records
                .values()
                .filter_map(|r| match r.ttl_ms {
                    Some(ttl) if ttl > 0 => Some(r.timestamp.millis.saturating_add(ttl)),
                    _ => None,
                })
                .min(),
            oldest_tombstone: state
                .tombstones
                .iter()
                .filter_map(|tag| Timestamp::parse(tag))
                .min(),
        }
    }
}

/// A state change made by [`OrMap::merge_key`].
#[derive(Debug, Clone, PartialEq)]
pub enum OrChange {
    /// A record was added or replaced by a newer one with the same tag.
    Added(OrMapRecord),
    /// A tag was tombstoned.
    Removed(String),
}

/// The keys of one OR-Map, its Merkle tree and its partition counts.
#[derive(Debug, Default)]
pub struct OrMap {
    keys: BTreeMap<String, OrKeyState>,
    tree: MerkleTree,
    /// Keys without live records but with tombstones, per leaf: they have no Merkle
    /// entry, yet leaf answers must list them so removals reach clients that missed them.
    tombstone_only: HashMap<u16, BTreeSet<String>>,
    partitions: PartitionCounts,
    /// What is due at each key that has anything due.
    due: HashMap<String, KeyDue>,
    /// Keys by their earliest record expiry.
    expiring: BTreeSet<(u64, String)>,
    /// Keys by their oldest prunable tombstone.
    tombstoned: BTreeSet<(Timestamp, String)>,
}

impl OrMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// `apply(key, rec)`: adds a record unless its tag is tombstoned; a record with a
    /// known tag only replaces the stored one if its timestamp is strictly newer, so
    /// duplicates and reordering change nothing. Returns whether state changed.
    pub fn apply(&mut self, key: &str, key_hash: u32, record: OrMapRecord) -> bool {
        let state = self.key_state(key, key_hash);
        let changed = insert_record(state, record);
        self.refresh(key, key_hash);
        changed
    }

    /// `applyTombstone(tag)` for a tag of `key`: deletes the record and remembers the
    /// tag. Returns whether state changed (a record removed or a new tombstone).
    pub fn apply_tombstone(&mut self, key: &str, key_hash: u32, tag: &str) -> bool {
        let state = self.key_state(key, key_hash);
        let removed = state.records.remove(tag).is_some();
        let new_tombstone = state.tombstones.insert(tag.to_string());
        self.refresh(key, key_hash);
        removed || new_tombstone
    }

    /// `mergeKey(key, records, tombstones)` from a client's push diff. Only tombstones
    /// that remove a record of this key are kept: a push carries the client's entire,
    /// map-wide tombstone set, and storing all of it under every pushed key would grow
    /// without bound. Returns the changes, in order: removals, then additions.
    pub fn merge_key(
        &mut self,
        key: &str,
        key_hash: u32,
        records: Vec<OrMapRecord>,
        tombstones: &[String],
    ) -> Vec<OrChange> {
        let mut changes = Vec::new();
        let state = self.key_state(key, key_hash);
        for tag in tombstones {
            if state.records.remove(tag).is_some() {
                state.tombstones.insert(tag.clone());
                changes.push(OrChange::Removed(tag.clone()));
            }
        }
        for record in records {
            let candidate = record.clone();
            if insert_record(state, record) {
                changes.push(OrChange::Added(candidate));
            }
        }
        self.refresh(key, key_hash);
        changes
    }

    /// Folds a key state read back from storage into the map (union of records by the
    /// same rules as [`OrMap::apply`], union of tombstones); emits nothing.
    pub fn load_key(&mut self, key: &str, key_hash: u32, loaded: OrKeyState) {
        let state = self.key_state(key, key_hash);
        for tag in &loaded.tombstones {
            state.records.remove(tag);
        }
        state.tombstones.extend(loaded.tombstones);
        for record in loaded.records.into_values() {
            insert_record(state, record);
        }
        self.refresh(key, key_hash);
    }

    /// The state of `key`, if it has any record or tombstone.
    pub fn get(&self, key: &str) -> Option<&OrKeyState> {
        self.keys.get(key)
    }

    /// Keys in order, starting strictly after `after` when given.
    pub fn range_after<'a>(
        &'a self,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a String, &'a OrKeyState)> + 'a {
        let lower = match after {
            Some(key) => Bound::Excluded(key),
            None => Bound::Unbounded,
        };
        self.keys.range::<str, _>((lower, Bound::Unbounded))
    }

    /// Every key with state, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &OrKeyState)> {
        self.keys.iter()
    }

    /// Number of keys with state.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key has state.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The map's Merkle tree (one entry per key with at least one live record).
    pub fn tree(&self) -> &MerkleTree {
        &self.tree
    }

    /// Key counts per partition.
    pub fn partitions(&self) -> &PartitionCounts {
        &self.partitions
    }

    /// Every key of the leaf at `path`: keys with records and keys left with only
    /// tombstones, sorted.
    pub fn leaf_keys(&self, path: &NodePath) -> Vec<&str> {
        let mut keys: Vec<&str> = self.tree.leaf_keys(path).collect();
        if let Some(extra) = path
            .leaf_index()
            .and_then(|leaf| self.tombstone_only.get(&leaf))
        {
            keys.extend(extra.iter().map(String::as_str));
        }
        keys.sort_unstable();
        keys
    }

    /// `(key, tag)` of every record whose TTL has run out at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> Vec<(String, String)> {
        self.expiring
            .range(..(now_ms, String::new()))
            .filter_map(|(_, key)| self.keys.get(key).map(|state| (key, state)))
            .flat_map(|(key, state)| {
                state
                    .records
                    .values()
                    .filter(|r| r.is_expired(now_ms))
                    .map(move |r| (key.clone(), r.tag.clone()))
            })
            .collect()
    }

    /// Drops tombstone tags that parse as timestamps older than `older_than`
    /// (unparseable tags are kept forever) and returns the keys that changed.
    pub fn prune_tombstones(&mut self, older_than: &Timestamp) -> Vec<String> {
        let candidates: Vec<String> = self
            .tombstoned
            .range(..(older_than.clone(), String::new()))
            .map(|(_, key)| key.clone())
            .collect();
        let mut touched = Vec::new();
        for key in candidates {
            let Some(state) = self.keys.get_mut(&key) else {
                continue;
            };
            let before = state.tombstones.len();
            state
                .tombstones
                .retain(|tag| Timestamp::parse(tag).is_none_or(|ts| ts >= *older_than));
            if state.tombstones.len() != before {
                touched.push(key);
            }
        }
        for key in &touched {
            self.refresh(key, topgun_proto::hash::fnv1a(key));
        }
        touched.sort();
        touched
    }

    /// Forgets every key of the partitions `dropped` selects (the shard no longer owns
    /// them), with their Merkle entries, tombstone-only listings and counts; returns how
    /// many keys went. Tree nodes stay, as after any removal.
    pub fn drop_partitions(&mut self, dropped: impl Fn(u32) -> bool) -> usize {
        let doomed = self.partitions.keys_to_drop(self.keys.keys(), dropped);
        for (key, key_hash) in &doomed {
            self.keys.remove(key);
            self.reindex(key);
            self.tree.remove(*key_hash, key);
            let leaf = leaf_index(*key_hash);
            if let Some(set) = self.tombstone_only.get_mut(&leaf) {
                set.remove(key);
                if set.is_empty() {
                    self.tombstone_only.remove(&leaf);
                }
            }
            self.partitions.removed(*key_hash);
        }
        doomed.len()
    }

    fn key_state(&mut self, key: &str, key_hash: u32) -> &mut OrKeyState {
        if !self.keys.contains_key(key) {
            self.partitions.added(key_hash);
        }
        self.keys.entry(key.to_string()).or_default()
    }

    /// Re-derives the Merkle entry and the tombstone-only index of `key` after any
    /// mutation, and forgets keys left with nothing.
    fn refresh(&mut self, key: &str, key_hash: u32) {
        let leaf = leaf_index(key_hash);
        let (has_records, has_tombstones) = match self.keys.get(key) {
            Some(state) => (!state.records.is_empty(), !state.tombstones.is_empty()),
            None => (false, false),
        };
        match self.keys.get(key) {
            Some(state) if has_records => {
                self.tree
                    .update(key_hash, key, or_entry_hash(key, state.records.values()));
            }
            Some(_) => {
                self.tree.remove(key_hash, key);
                self.tree.touch(key_hash);
            }
            None => self.tree.remove(key_hash, key),
        }
        if has_tombstones && !has_records {
            self.tombstone_only
                .entry(leaf)
                .or_default()
                .insert(key.to_string());
        } else if let Some(set) = self.tombstone_only.get_mut(&leaf) {
            set.remove(key);
            if set.is_empty() {
                self.tombstone_only.remove(&leaf);
            }
        }
        if self.keys.get(key).is_some_and(OrKeyState::is_empty) {
            self.keys.remove(key);
            self.partitions.removed(key_hash);
        }
        self.reindex(key);
    }

    /// Brings the GC indexes of `key` up to date with its state (or its absence).
    fn reindex(&mut self, key: &str) {
        let now = self.keys.get(key).map(KeyDue::of).unwrap_or_default();
        let before = self.due.get(key).cloned().unwrap_or_default();
        if now == before {
            return;
        }
        if let Some(at) = before.expires {
            self.expiring.remove(&(at, key.to_string()));
        }
        if let Some(stamp) = before.oldest_tombstone {
            self.tombstoned.remove(&(stamp, key.to_string()));
        }
        if let Some(at) = now.expires {
            self.expiring.insert((at, key.to_string()));
        }
        if let Some(stamp) = &now.oldest_tombstone {
            self.tombstoned.insert((stamp.clone(), key.to_string()));
        }
        if now == KeyDue::default() {
            self.due.remove(key);
        } else {
            self.due.insert(key.to_string(), now);
        }
    }
}

/// Adds a record unless its tag is tombstoned; replaces a same-tag record only if
/// strictly newer. Returns whether the key changed.
fn insert_record(state: &mut OrKeyState, record: OrMapRecord) -> bool {
    if state.tombstones.contains(&record.tag) {
        return false;
    }
    match state.records.get_mut(&record.tag) {
        Some(existing) if record.timestamp > existing.timestamp => {
            *existing = record;
            true
        }
        Some(_) => false,
        None => {
            state.records.insert(record.tag.clone(), record);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value;
    use topgun_proto::hash::fnv1a;

    fn rec(tag: &str, value: Value, millis: u64) -> OrMapRecord {
        OrMapRecord {
            value,
            timestamp: Timestamp::new(millis, 0, "n1"),
            tag: tag.into(),
            ttl_ms: None,
        }
    }

    #[test]
    fn add_then_remove_equals_remove_then_add() {
        let h = fnv1a("tags");
        let mut a = OrMap::new();
        assert!(a.apply("tags", h, rec("t1", Value::from("x"), 1)));
        assert!(a.apply_tombstone("tags", h, "t1"));
        let mut b = OrMap::new();
        assert!(b.apply_tombstone("tags", h, "t1"));
        assert!(
            !b.apply("tags", h, rec("t1", Value::from("x"), 1)),
            "tombstoned tag ignored"
        );
        assert_eq!(a.get("tags"), b.get("tags"));
        assert_eq!(a.tree().root_hash(), 0);
        assert_eq!(
            a.tree().buckets(&NodePath::ROOT),
            b.tree().buckets(&NodePath::ROOT)
        );
        assert!(
            !a.apply_tombstone("tags", h, "t1"),
            "second remove is a no-op"
        );
    }

    #[test]
    fn worked_example_hashes_and_leaf_listing() {
        let h = fnv1a("tags");
        let mut map = OrMap::new();
        let alice = OrMapRecord {
            value: Value::from("Alice"),
            timestamp: Timestamp::new(1_700_000_000_000, 0, "n1"),
            tag: "1700000000000:0:n1".into(),
            ttl_ms: None,
        };
        assert!(map.apply("tags", h, alice.clone()));
        assert!(!map.apply("tags", h, alice), "duplicate add");
        assert_eq!(map.tree().root_hash(), 1599115293);
        let leaf = NodePath::parse("f41").expect("valid");
        assert_eq!(map.leaf_keys(&leaf), vec!["tags"]);
        // Removing the only record keeps the key listed in its leaf through its tombstone.
        assert!(map.apply_tombstone("tags", h, "1700000000000:0:n1"));
        assert_eq!(map.tree().root_hash(), 0);
        assert_eq!(map.leaf_keys(&leaf), vec!["tags"]);
        assert_eq!(map.partitions().total(), 1);
    }

    #[test]
    fn merge_key_reports_changes_and_keeps_only_relevant_tombstones() {
        let h = fnv1a("k");
        let mut map = OrMap::new();
        map.apply("k", h, rec("a", Value::from(1), 1));
        let changes = map.merge_key(
            "k",
            h,
            vec![rec("b", Value::from(2), 2), rec("a", Value::from(1), 1)],
            &["a".to_string(), "other-key-tag".to_string()],
        );
        assert_eq!(
            changes,
            vec![
                OrChange::Removed("a".into()),
                OrChange::Added(rec("b", Value::from(2), 2))
            ]
        );
        let state = map.get("k").expect("exists");
        assert_eq!(state.tombstones.iter().collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(state.records.keys().collect::<Vec<_>>(), vec!["b"]);
        // A newer record with the same tag replaces; an older one does not.
        assert!(map.apply("k", h, rec("b", Value::from(3), 3)));
        assert!(!map.apply("k", h, rec("b", Value::from(4), 2)));
    }

    #[test]
    fn pruning_parses_tags_and_forgets_empty_keys() {
        let h = fnv1a("k");
        let mut map = OrMap::new();
        map.apply_tombstone("k", h, "100:0:n");
        map.apply_tombstone("k", h, "opaque-tag");
        assert_eq!(
            map.prune_tombstones(&Timestamp::new(200, 0, "")),
            vec!["k".to_string()]
        );
        assert_eq!(
            map.get("k").map(|s| s.tombstones.len()),
            Some(1),
            "opaque tag kept"
        );
        let h2 = fnv1a("j");
        map.apply_tombstone("j", h2, "50:0:n");
        map.prune_tombstones(&Timestamp::new(200, 0, ""));
        assert!(map.get("j").is_none());
        assert_eq!(map.partitions().total(), 1);
        assert!(map.leaf_keys(&NodePath::leaf_of(h2)).is_empty());
    }

    #[test]
    fn expired_records_are_listed() {
        let h = fnv1a("k");
        let mut map = OrMap::new();
        let mut r = rec("a", Value::from(1), 1_000);
        r.ttl_ms = Some(10);
        map.apply("k", h, r);
        assert!(map.expired(1_010).is_empty());
        assert_eq!(map.expired(1_011), vec![("k".to_string(), "a".to_string())]);
    }

    /// The GC selections as a scan of every key computes them.
    fn expired_by_scan(map: &OrMap, now: u64) -> Vec<(String, String)> {
        let mut want: Vec<(String, String)> = map
            .iter()
            .flat_map(|(key, state)| {
                state
                    .records
                    .values()
                    .filter(|r| r.is_expired(now))
                    .map(move |r| (key.clone(), r.tag.clone()))
            })
            .collect();
        want.sort();
        want
    }

    fn prunable_by_scan(map: &OrMap, older: &Timestamp) -> Vec<String> {
        map.iter()
            .filter(|(_, state)| {
                state
                    .tombstones
                    .iter()
                    .any(|tag| Timestamp::parse(tag).is_some_and(|ts| ts < *older))
            })
            .map(|(key, _)| key.clone())
            .collect()
    }

    proptest::proptest! {
        /// The GC indexes always select exactly what a scan of every key would.
        #[test]
        fn gc_indexes_agree_with_a_full_scan(
            ops in proptest::collection::vec(
                (0u8..8, 0u8..12, 0u64..50, 0u8..4, 1u64..30),
                1..80,
            ),
            now in 0u64..100,
            older in 0u64..60,
        ) {
            let mut map = OrMap::new();
            for (k, t, millis, kind, ttl) in ops {
                let key = format!("k{k}");
                let hash = fnv1a(&key);
                // Tags are timestamps (prunable) except a few opaque ones.
                let tag = if t < 10 { format!("{t}:0:n") } else { format!("opaque-{t}") };
                match kind {
                    0 | 1 => {
                        let mut r = rec(&tag, Value::from(1), millis);
                        r.ttl_ms = (kind == 1).then_some(ttl);
                        map.apply(&key, hash, r);
                    }
                    2 => {
                        map.apply_tombstone(&key, hash, &tag);
                    }
                    _ => {
                        map.merge_key(&key, hash, vec![rec(&tag, Value::from(2), millis)], std::slice::from_ref(&tag));
                    }
                }
            }
            let mut got = map.expired(now);
            got.sort();
            proptest::prop_assert_eq!(got, expired_by_scan(&map, now));

            let older = Timestamp::new(older, 0, "n");
            let want = prunable_by_scan(&map, &older);
            proptest::prop_assert_eq!(map.prune_tombstones(&older), want);
            proptest::prop_assert!(prunable_by_scan(&map, &older).is_empty());
            proptest::prop_assert!(map.prune_tombstones(&older).is_empty());

            map.drop_partitions(|p| p % 2 == 0);
            let mut got = map.expired(now);
            got.sort();
            proptest::prop_assert_eq!(got, expired_by_scan(&map, now));
            proptest::prop_assert_eq!(map.due.len(), map.iter().filter(|(_, s)| KeyDue::of(s) != KeyDue::default()).count());
        }
    }
}
