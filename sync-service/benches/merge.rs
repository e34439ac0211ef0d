//! Merge throughput of LWW puts, Merkle update cost and the GC sweep's pause, measured once.
//!
//! Run: `cargo bench -p topgun-sync --bench merge -j 2` (release profile).

use rmpv::Value;
use std::hint::black_box;
use std::time::{Duration, Instant};
use topgun_proto::hash::fnv1a;
use topgun_proto::hlc::{Hlc, Timestamp};
use topgun_proto::wire::LwwRecord;
use topgun_sync::config::SyncConfig;
use topgun_sync::merkle::{lww_entry_hash, MerkleTree};
use topgun_sync::requests::{ApplyBatch, HashedKey, Op, OpKind, Origin, WriteConcern};
use topgun_sync::state::ShardState;
use topgun_sync::Shard;

const OPS: usize = 1_000_000;
const KEYS: usize = 100_000;
const BATCH: usize = 100;

fn value(i: usize) -> Value {
    Value::Map(vec![
        (Value::from("title"), Value::from(format!("task {i}"))),
        (Value::from("done"), Value::from(i % 2 == 0)),
        (Value::from("n"), Value::from(i as u64)),
    ])
}

/// Puts over `KEYS` keys with increasing timestamps, so every op changes state.
fn ops() -> Vec<Op> {
    (0..OPS)
        .map(|i| Op {
            op_id: i.to_string(),
            map_name: "bench".into(),
            key: HashedKey::new(format!("key-{}", i % KEYS)),
            kind: OpKind::LwwPut(LwwRecord {
                value: value(i),
                timestamp: Timestamp::new(1_700_000_000_000 + i as u64, 0, "client-1"),
                ttl_ms: None,
            }),
        })
        .collect()
}

fn report(label: &str, ops: usize, elapsed: Duration) {
    let per_op = elapsed.as_nanos() as f64 / ops as f64;
    let rate = ops as f64 / elapsed.as_secs_f64();
    println!("{label:<48} {rate:>12.0} ops/s {per_op:>9.1} ns/op");
}

fn bench_state_merge(ops: &[Op]) {
    let mut state = ShardState::new();
    let mut hlc = Hlc::new("sync-0");
    let mut changes = Vec::with_capacity(BATCH);
    let start = Instant::now();
    for op in ops {
        state.apply(&mut hlc, op, &mut changes);
        if changes.len() >= BATCH {
            changes.clear();
        }
    }
    report("LWW put merge (state + Merkle)", ops.len(), start.elapsed());
    black_box(state.lww("bench").map(|m| m.tree().root_hash()));
}

fn bench_shard_batches(ops: &[Op]) {
    let config = SyncConfig {
        change_feed_buffer: 100_000,
        ..SyncConfig::default()
    };
    let shard = Shard::new(&config.validate().expect("default config"), None);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let batches: Vec<ApplyBatch> = ops
        .chunks(BATCH)
        .map(|chunk| ApplyBatch {
            ops: chunk.to_vec(),
            write_concern: WriteConcern::Applied,
            origin: Origin::default(),
        })
        .collect();
    let start = Instant::now();
    runtime.block_on(async {
        for batch in batches {
            black_box(shard.apply_batch(batch).await.expect("owned keys"));
        }
    });
    report(
        "LWW put ApplyBatch x100 (memory-only, + feed)",
        ops.len(),
        start.elapsed(),
    );
}

fn bench_merkle() {
    let keys: Vec<(String, u32)> = (0..KEYS)
        .map(|i| {
            let key = format!("key-{i}");
            let hash = fnv1a(&key);
            (key, hash)
        })
        .collect();
    let stamps: Vec<Timestamp> = (0..OPS)
        .map(|i| Timestamp::new(1_700_000_000_000 + i as u64, 0, "client-1"))
        .collect();

    let start = Instant::now();
    let mut acc = 0u32;
    for (i, stamp) in stamps.iter().enumerate() {
        acc = acc.wrapping_add(lww_entry_hash(&keys[i % KEYS].0, stamp));
    }
    report("LWW entry hash (fnv1a of key:ts)", OPS, start.elapsed());
    black_box(acc);

    let hashes: Vec<u32> = (0..OPS)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761))
        .collect();
    let mut tree = MerkleTree::new();
    let start = Instant::now();
    for (i, entry) in hashes.iter().enumerate() {
        let (key, key_hash) = &keys[i % KEYS];
        tree.update(*key_hash, key, *entry);
    }
    report(
        "Merkle tree update (precomputed entry hash)",
        OPS,
        start.elapsed(),
    );
    black_box(tree.root_hash());
}

/// Times five GC sweeps at `now` (one day of tombstone TTL) that must find nothing due,
/// and prints the mean.
fn time_idle_sweeps(label: &str, state: &mut ShardState, hlc: &mut Hlc, now: u64) {
    let rounds = 5;
    let start = Instant::now();
    for _ in 0..rounds {
        let outcome = topgun_sync::gc::sweep(state, hlc, now, 86_400_000, "sync-0");
        assert_eq!(outcome.pruned + outcome.expired, 0);
    }
    let per_sweep = start.elapsed() / rounds;
    println!(
        "{label:<48} {:>12.3} ms per sweep",
        per_sweep.as_secs_f64() * 1000.0
    );
}

/// One GC sweep over a map of `GC_RECORDS` live records without TTL plus `GC_TOMBSTONES`
/// fresh tombstones: nothing to collect, so the time is the sweep's cost (a pause of every
/// write to the shard, which it holds the state lock for).
fn bench_gc_sweep() {
    const GC_RECORDS: usize = 1_000_000;
    const GC_TOMBSTONES: usize = 1_000;
    let mut state = ShardState::new();
    let mut hlc = Hlc::new("sync-0");
    let mut changes = Vec::new();
    for i in 0..GC_RECORDS + GC_TOMBSTONES {
        let op = Op {
            op_id: String::new(),
            map_name: "gc".into(),
            key: HashedKey::new(format!("key-{i}")),
            kind: OpKind::LwwPut(LwwRecord {
                value: if i < GC_RECORDS { value(i) } else { Value::Nil },
                timestamp: Timestamp::new(1_700_000_000_000 + i as u64, 0, "client-1"),
                ttl_ms: None,
            }),
        };
        state.apply(&mut hlc, &op, &mut changes);
        changes.clear();
    }
    let now = 1_700_000_000_000 + GC_RECORDS as u64;
    time_idle_sweeps(
        &format!("GC sweep, {GC_RECORDS} records, nothing due"),
        &mut state,
        &mut hlc,
        now,
    );
}

/// One GC sweep over an OR-Map of `GC_KEYS` keys with one record each (no TTL) and a
/// tombstone on every tenth key, none of them old enough to prune.
fn bench_gc_sweep_or() {
    const GC_KEYS: usize = 200_000;
    let mut state = ShardState::new();
    let mut hlc = Hlc::new("sync-0");
    let mut changes = Vec::new();
    for i in 0..GC_KEYS {
        let key = HashedKey::new(format!("key-{i}"));
        let stamp = Timestamp::new(1_700_000_000_000 + i as u64, 0, "client-1");
        let add = Op {
            op_id: String::new(),
            map_name: "gc-or".into(),
            key: key.clone(),
            kind: OpKind::OrAdd(topgun_proto::wire::OrMapRecord {
                value: value(i),
                timestamp: stamp.clone(),
                tag: stamp.to_string(),
                ttl_ms: None,
            }),
        };
        state.apply(&mut hlc, &add, &mut changes);
        if i % 10 == 0 {
            let removed = Timestamp::new(stamp.millis, 1, "client-1");
            let remove = Op {
                op_id: String::new(),
                map_name: "gc-or".into(),
                key,
                kind: OpKind::OrRemove(removed.to_string()),
            };
            state.apply(&mut hlc, &remove, &mut changes);
        }
        changes.clear();
    }
    let now = 1_700_000_000_000 + GC_KEYS as u64;
    time_idle_sweeps(
        &format!("GC sweep, OR-Map of {GC_KEYS} keys, nothing due"),
        &mut state,
        &mut hlc,
        now,
    );
}

fn main() {
    let ops = ops();
    println!("{OPS} ops over {KEYS} keys, batches of {BATCH}");
    bench_state_merge(&ops);
    bench_shard_batches(&ops);
    bench_merkle();
    bench_gc_sweep();
    bench_gc_sweep_or();
}
