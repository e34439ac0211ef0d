//! Property tests of the CRDT guarantees the whole suite relies on:
//! * replicas that receive the same ops in any order, with duplicates, end with
//!   identical contents and identical Merkle trees;
//! * a map split over shards by partition has the single-shard tree as the sum of the
//!   shards' trees at every node (what the gateway computes);
//! * dropping partitions (a shard giving them up) leaves the hashes of a replica that
//!   never held them, and merging them back (regaining them) restores the tree.

use crate::config::PartitionSet;
use crate::merkle::{MerkleTree, NodePath};
use crate::requests::{HashedKey, Op, OpKind};
use crate::state::ShardState;
use proptest::prelude::*;
use rmpv::Value;
use std::collections::BTreeMap;
use topgun_proto::hlc::{Hlc, Timestamp};
use topgun_proto::wire::{LwwRecord, OrMapRecord};

/// What the generator decides per op; timestamps are made unique afterwards.
#[derive(Debug, Clone)]
enum Spec {
    Put {
        key: u8,
        value: Value,
        ttl: Option<u64>,
    },
    Remove {
        key: u8,
    },
    OrAdd {
        key: u8,
        value: Value,
        ttl: Option<u64>,
    },
    /// Remove the tag of the n-th OR add (modulo their count), under its key.
    OrRemoveOf {
        add: usize,
    },
    /// Remove a tag nobody added.
    OrRemoveUnknown {
        key: u8,
        tag: u8,
    },
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i32>().prop_map(Value::from),
        "[a-c]{0,3}".prop_map(Value::from),
        (any::<bool>(), -5i64..5).prop_map(|(b, n)| Value::Map(vec![
            (Value::from("done"), Value::from(b)),
            (Value::from("n"), Value::from(n)),
        ])),
        Just(Value::F64(0.5)),
    ]
}

fn spec(keys: u8) -> impl Strategy<Value = Spec> {
    let ttl = proptest::option::of(1u64..1_000);
    prop_oneof![
        3 => (0..keys, value(), ttl.clone()).prop_map(|(key, value, ttl)| Spec::Put { key, value, ttl }),
        1 => (0..keys).prop_map(|key| Spec::Remove { key }),
        3 => (0..keys, value(), ttl).prop_map(|(key, value, ttl)| Spec::OrAdd { key, value, ttl }),
        2 => any::<usize>().prop_map(|add| Spec::OrRemoveOf { add }),
        1 => (0..keys, 0u8..4).prop_map(|(key, tag)| Spec::OrRemoveUnknown { key, tag }),
    ]
}

/// Turns specs into ops with unique timestamps (the HLC guarantees that in reality; two
/// different writes with one timestamp are the one case LWW cannot order).
fn build(specs: &[(Spec, u64, u8)]) -> Vec<Op> {
    let key_name = |k: u8| format!("key-{k}");
    let mut adds: Vec<(String, String)> = Vec::new();
    let mut ops = Vec::new();
    for (i, (spec, millis, node)) in specs.iter().enumerate() {
        let ts = Timestamp::new(1_700_000_000_000 + millis, i as u64, format!("n{node}"));
        let (map, key, kind) = match spec.clone() {
            Spec::Put { key, value, ttl } => (
                "m",
                key_name(key),
                OpKind::LwwPut(LwwRecord {
                    value,
                    timestamp: ts,
                    ttl_ms: ttl,
                }),
            ),
            Spec::Remove { key } => (
                "m",
                key_name(key),
                OpKind::LwwPut(LwwRecord {
                    value: Value::Nil,
                    timestamp: ts,
                    ttl_ms: None,
                }),
            ),
            Spec::OrAdd { key, value, ttl } => {
                let tag = ts.to_string();
                adds.push((key_name(key), tag.clone()));
                (
                    "m",
                    key_name(key),
                    OpKind::OrAdd(OrMapRecord {
                        value,
                        timestamp: ts,
                        tag,
                        ttl_ms: ttl,
                    }),
                )
            }
            Spec::OrRemoveOf { add } => {
                if adds.is_empty() {
                    continue;
                }
                let (key, tag) = adds[add % adds.len()].clone();
                ("m", key, OpKind::OrRemove(tag))
            }
            Spec::OrRemoveUnknown { key, tag } => {
                ("m", key_name(key), OpKind::OrRemove(format!("ghost-{tag}")))
            }
        };
        ops.push(Op {
            op_id: i.to_string(),
            map_name: map.into(),
            key: HashedKey::new(key),
            kind,
        });
    }
    ops
}

fn ops(keys: u8, max: usize) -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec((spec(keys), 0u64..5, 1u8..4), 1..max).prop_map(|specs| build(&specs))
}

/// Applies `order` (indices into `ops`) to a fresh replica.
fn replica(ops: &[Op], order: &[usize], owned: &PartitionSet) -> ShardState {
    let mut state = ShardState::new();
    let mut hlc = Hlc::new("replica");
    let mut sink = Vec::new();
    for &i in order {
        if owned.contains(ops[i].key.partition()) {
            state.apply(&mut hlc, &ops[i], &mut sink);
        }
    }
    state
}

/// Everything observable: records, OR key states (records and tombstones).
fn contents(state: &ShardState) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, map) in state.lww_maps() {
        for (key, record) in map.iter() {
            out.insert(format!("lww/{name}/{key}"), format!("{record:?}"));
        }
    }
    for (name, map) in state.or_maps() {
        for (key, key_state) in map.iter() {
            out.insert(format!("or/{name}/{key}"), format!("{key_state:?}"));
        }
    }
    out
}

/// Every node of a tree: path -> (hash, buckets).
fn nodes(tree: &MerkleTree) -> Vec<Node> {
    let mut paths = vec![String::new()];
    for depth in 1..=3 {
        let previous: Vec<String> = paths
            .iter()
            .filter(|p| p.len() == depth - 1)
            .cloned()
            .collect();
        for p in previous {
            for c in "0123456789abcdef".chars() {
                paths.push(format!("{p}{c}"));
            }
        }
    }
    paths
        .into_iter()
        .map(|p| {
            let path = NodePath::parse(&p).expect("generated paths are valid");
            (p, tree.node_hash(&path), tree.buckets(&path))
        })
        .collect()
}

fn trees(state: &ShardState) -> Trees {
    let mut out: Vec<_> = state
        .lww_maps()
        .map(|(n, m)| (format!("lww/{n}"), nodes(m.tree())))
        .collect();
    out.extend(
        state
            .or_maps()
            .map(|(n, m)| (format!("or/{n}"), nodes(m.tree()))),
    );
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn first_difference(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Option<String> {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .find(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k}: {:?} vs {:?}", a.get(k), b.get(k)))
}

/// path, hash, buckets.
type Node = (String, u32, BTreeMap<char, u32>);
type Trees = Vec<(String, Vec<Node>)>;

/// Only the first differing node, so a failure report stays readable.
fn first_tree_difference(a: &Trees, b: &Trees) -> Option<String> {
    if a.len() != b.len() {
        return Some(format!(
            "maps {:?} vs {:?}",
            a.iter().map(|t| &t.0).collect::<Vec<_>>(),
            b.iter().map(|t| &t.0).collect::<Vec<_>>()
        ));
    }
    for ((name, x), (_, y)) in a.iter().zip(b) {
        if let Some((p, q)) = x.iter().zip(y).find(|(p, q)| p != q) {
            return Some(format!(
                "{name} at {:?}: {:?} vs {:?}",
                p.0,
                (p.1, &p.2),
                (q.1, &q.2)
            ));
        }
    }
    None
}

/// A delivery schedule: every op at least once, some twice, in any order.
fn schedule(n: usize) -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(0..n, 0..=n)
        .prop_map(move |dups| (0..n).chain(dups).collect::<Vec<_>>())
        .prop_shuffle()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn replicas_converge_whatever_the_order_and_duplication(
        (ops, orders) in ops(6, 40).prop_flat_map(|ops| {
            let n = ops.len();
            (Just(ops), proptest::collection::vec(schedule(n), 3))
        })
    ) {
        let all = PartitionSet::all();
        let reference = replica(&ops, &(0..ops.len()).collect::<Vec<_>>(), &all);
        for order in &orders {
            let other = replica(&ops, order, &all);
            let diff = first_difference(&contents(&other), &contents(&reference));
            prop_assert!(diff.is_none(), "contents differ: {:?}", diff);
            let diff = first_tree_difference(&trees(&other), &trees(&reference));
            prop_assert!(diff.is_none(), "trees differ: {:?}", diff);
        }
    }

    #[test]
    fn shard_buckets_sum_to_the_single_shard_tree(
        (ops, split) in (ops(60, 80), 1u32..270)
    ) {
        let order: Vec<usize> = (0..ops.len()).collect();
        let single = replica(&ops, &order, &PartitionSet::all());
        let left = replica(&ops, &order, &PartitionSet::from_list(0..split));
        let right = replica(&ops, &order, &PartitionSet::from_list(split..271));
        for (name, single_map_nodes) in trees(&single) {
            let find = |state: &ShardState| trees(state).into_iter().find(|(n, _)| *n == name).map(|(_, t)| t);
            let (l, r) = (find(&left), find(&right));
            for (i, (path, hash, buckets)) in single_map_nodes.iter().enumerate() {
                let part = |t: &Option<Vec<Node>>| {
                    t.as_ref().map(|t| t[i].clone()).unwrap_or((path.clone(), 0, BTreeMap::new()))
                };
                let (lp, rp) = (part(&l), part(&r));
                prop_assert_eq!(lp.1.wrapping_add(rp.1), *hash, "hash at {:?} of {}", path, name);
                let mut summed = lp.2.clone();
                for (c, h) in rp.2 {
                    let slot = summed.entry(c).or_insert(0);
                    *slot = slot.wrapping_add(h);
                }
                prop_assert_eq!(&summed, buckets, "buckets at {:?} of {}", path, name);
            }
        }
    }

    #[test]
    fn dropped_partitions_leave_no_trace_and_merge_back_to_the_same_tree(
        (ops, dropped) in (ops(60, 80), proptest::collection::btree_set(0u32..271, 0..271))
    ) {
        let order: Vec<usize> = (0..ops.len()).collect();
        let reference = replica(&ops, &order, &PartitionSet::all());
        let kept = PartitionSet::from_list((0..271).filter(|p| !dropped.contains(p)));
        let mut state = replica(&ops, &order, &PartitionSet::all());
        state.drop_partitions(|p| dropped.contains(&p));

        // Exactly the kept keys remain, with every node hash of a replica that only ever
        // held them (nodes may linger with a zero hash, as after any removal).
        let only_kept = replica(&ops, &order, &kept);
        let diff = first_difference(&contents(&state), &contents(&only_kept));
        prop_assert!(diff.is_none(), "contents differ: {:?}", diff);
        let hashes = |state: &ShardState| -> BTreeMap<String, Vec<(String, u32)>> {
            trees(state)
                .into_iter()
                .map(|(name, nodes)| (name, nodes.into_iter().map(|(p, h, _)| (p, h)).collect::<Vec<_>>()))
                .filter(|(_, nodes)| nodes.iter().any(|(_, h)| *h != 0))
                .collect()
        };
        prop_assert_eq!(hashes(&state), hashes(&only_kept));

        // Merging the dropped keys back, as a load from storage does, restores every node.
        for (name, map) in reference.lww_maps() {
            for (key, record) in map.iter() {
                let key = HashedKey::new(key.clone());
                if dropped.contains(&key.partition()) {
                    state.load_lww(name, &key, record.clone());
                }
            }
        }
        for (name, map) in reference.or_maps() {
            for (key, key_state) in map.iter() {
                let key = HashedKey::new(key.clone());
                if dropped.contains(&key.partition()) {
                    state.load_or(name, &key, key_state.clone());
                }
            }
        }
        let diff = first_difference(&contents(&state), &contents(&reference));
        prop_assert!(diff.is_none(), "contents differ: {:?}", diff);
        let diff = first_tree_difference(&trees(&state), &trees(&reference));
        prop_assert!(diff.is_none(), "trees differ: {:?}", diff);
    }
}
