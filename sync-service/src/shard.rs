//! One sync shard: its CRDT state behind a lock, its clock, its partitions, its change
//! feed, topic relay and storage. Every RPC of the service is a method here, taking
//! validated domain requests.
//!
//! Locking: the state is one read-write lock. Writers (ApplyBatch, GC, load) merge,
//! publish their events and build their storage rows while holding it, so event order
//! and row timestamps follow merge order; storage I/O happens after it is released.
//! Lock order is always state, then clock, then feed. Ownership is its own small lock,
//! never held while taking another; it only changes under the state write lock, and
//! ApplyBatch checks it under that lock, so no op merges into a partition being dropped.

use crate::config::{PartitionSet, ValidatedConfig};
use crate::error::SyncError;
use crate::feed::ChangeFeed;
use crate::gc;
use crate::merkle::NodePath;
use crate::persistence::{self, LoadedRow, Persistence, PIGGYBACK_ROWS, RETRY_CHUNK_ROWS};
use crate::requests::{
    ApplyBatch, ChangedSince, GetRecords, HashedKey, MapKind, MerkleNodeQuery, Origin, RunQuery,
    ScanMap, WriteConcern,
};
use crate::shutdown::stopped;
use crate::state::{RowId, ShardState};
use crate::topics::TopicRelay;
use parking_lot::{Mutex, RwLock};
use prost::Message as _;
use std::cmp::Ordering;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use topgun_proto::grpc::common as pb_common;
use topgun_proto::grpc::sync as pb;
use topgun_proto::hlc::{wall_clock_ms, Hlc, Timestamp};
use topgun_proto::partition::partition_of;
use topgun_proto::predicate::QueryPlan;
use topgun_proto::wire::{self, LwwRecord};

/// Largest ChangedSince answer: a delta bigger than this is left to the Merkle walk,
/// which moves it in leaf-sized messages (and gRPC answers stay under their 16 MiB cap).
pub const CHANGED_SINCE_MAX_BYTES: usize = 4 * 1024 * 1024;
/// Most records one ScanMap page examines (with a `since` filter most may be skipped),
/// bounding how long a page holds the read lock.
const SCAN_MAX_EXAMINED: usize = 100_000;
/// How long after gaining partitions they are loaded a second time: the previous owner
/// may have acknowledged writes until it learned of the switch, and those reach storage
/// within this delay.
pub const SETTLE_DELAY: Duration = Duration::from_secs(2);
/// First and longest pause between two attempts of a storage load.
const LOAD_BACKOFF_FIRST: Duration = Duration::from_millis(200);
const LOAD_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A sync shard.
#[derive(Debug)]
pub struct Shard {
    node_id: String,
    shard_index: u32,
    shard_count: u32,
    /// The owned partitions, replaced whole by SetPartitions.
    ownership: RwLock<Arc<Ownership>>,
    /// Serializes SetPartitions calls, so versions apply in order.
    switching: tokio::sync::Mutex<()>,
    tombstone_ttl_ms: u64,
    /// No storage, yet writes count as persisted (the null store).
    null_storage: bool,
    operation_timeout: Duration,
    state: RwLock<ShardState>,
    hlc: Mutex<Hlc>,
    feed: Arc<ChangeFeed>,
    topics: TopicRelay,
    persistence: Option<Arc<Persistence>>,
    ready: AtomicBool,
}

/// The partitions a shard owns and the SetPartitions version that set them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    /// Owned partitions.
    pub partitions: PartitionSet,
    /// Version of the last SetPartitions applied (0 = the configured partitions).
    pub version: u64,
}

/// What a SetPartitions call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetPartitionsOutcome {
    /// Partitions newly owned.
    pub gained: u32,
    /// Partitions no longer owned.
    pub dropped: u32,
    /// The ownership version after the call.
    pub version: u64,
    /// False when the version was stale and nothing changed.
    pub applied: bool,
}

impl From<SetPartitionsOutcome> for pb::SetPartitionsResponse {
    fn from(outcome: SetPartitionsOutcome) -> Self {
        pb::SetPartitionsResponse {
            gained: outcome.gained,
            dropped: outcome.dropped,
            version: outcome.version,
            applied: outcome.applied,
        }
    }
}

/// What a GC round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcReport {
    /// Records expired.
    pub expired: usize,
    /// Tombstones pruned.
    pub pruned: usize,
}

impl Shard {
    /// A shard with empty state; `persistence` = None keeps everything in memory.
    pub fn new(config: &ValidatedConfig, persistence: Option<Arc<Persistence>>) -> Self {
        Shard {
            node_id: config.node_id.clone(),
            shard_index: config.shard_index,
            shard_count: config.shard_count,
            ownership: RwLock::new(Arc::new(Ownership {
                partitions: config.partitions.clone(),
                version: 0,
            })),
            switching: tokio::sync::Mutex::new(()),
            tombstone_ttl_ms: config.tombstone_ttl_ms,
            null_storage: config.null_storage,
            operation_timeout: config.operation_timeout,
            state: RwLock::new(ShardState::new()),
            hlc: Mutex::new(Hlc::new(config.node_id.clone())),
            feed: Arc::new(ChangeFeed::new(config.change_feed_buffer)),
            topics: TopicRelay::default(),
            persistence,
            ready: AtomicBool::new(false),
        }
    }

    /// The HLC node id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Index of this shard among the shard count.
    pub fn shard_index(&self) -> u32 {
        self.shard_index
    }

    /// Number of shards in the suite.
    pub fn shard_count(&self) -> u32 {
        self.shard_count
    }

    /// Number of partitions this shard owns now.
    pub fn partition_count(&self) -> usize {
        self.ownership.read().partitions.as_slice().len()
    }

    /// The current ownership (partitions and version).
    pub fn ownership(&self) -> Arc<Ownership> {
        Arc::clone(&self.ownership.read())
    }

    /// The change feed.
    pub fn feed(&self) -> &Arc<ChangeFeed> {
        &self.feed
    }

    /// The topic relay.
    pub fn topics(&self) -> &TopicRelay {
        &self.topics
    }

    /// Whether the start-up load finished.
    pub fn is_ready(&self) -> bool {
        self.ready.load(AtomicOrdering::Acquire)
    }

    /// Marks the start-up load as finished.
    pub fn mark_ready(&self) {
        self.ready.store(true, AtomicOrdering::Release);
    }

    /// Rows waiting for storage (0 when memory-only).
    pub fn pending_rows(&self) -> usize {
        self.persistence.as_ref().map_or(0, |p| p.pending_len())
    }

    fn check_owned(&self, owned: &PartitionSet, key: &HashedKey) -> Result<(), SyncError> {
        let partition = key.partition();
        if owned.contains(partition) {
            Ok(())
        } else {
            Err(SyncError::NotOwner {
                partition,
                key: key.key.clone(),
                node_id: self.node_id.clone(),
            })
        }
    }

    /// Merges a batch, publishes its changes and (with storage) writes every touched
    /// row in one WriteBatch before answering. A storage failure fails the whole call
    /// as retryable, with no op reported persisted.
    pub async fn apply_batch(&self, batch: ApplyBatch) -> Result<Vec<pb::OpResult>, SyncError> {
        if batch.ops.is_empty() {
            return Ok(Vec::new());
        }
        let (changed, prepared) = {
            let mut state = self.state.write();
            // Under the state lock: a SetPartitions dropping a partition waits for this
            // batch, or this batch sees the partition gone.
            let owned = self.ownership();
            for op in &batch.ops {
                self.check_owned(&owned.partitions, &op.key)?;
            }
            if let Some(p) = &self.persistence {
                p.admit()?;
            }
            let mut hlc = self.hlc.lock();
            let mut changes = Vec::new();
            let changed: Vec<bool> = batch
                .ops
                .iter()
                .map(|op| state.apply(&mut hlc, op, &mut changes))
                .collect();
            let stamp = hlc.now().millis;
            self.feed.publish(changes, &batch.origin, stamp);
            // Every touched row is written, changed or not: a retried op that merges as
            // unchanged must still be durable before it is reported so.
            let prepared = self.persistence.as_ref().map(|p| {
                p.prepare(
                    &state,
                    &mut hlc,
                    batch.ops.iter().map(RowId::of),
                    PIGGYBACK_ROWS,
                )
            });
            (changed, prepared)
        };
        let achieved = match (&self.persistence, prepared) {
            (Some(p), Some(prepared)) => {
                p.write(prepared).await?;
                WriteConcern::Persisted
            }
            _ if self.null_storage => WriteConcern::Persisted,
            _ => WriteConcern::Applied,
        };
        let requested = batch.write_concern;
        let (success, error) = if achieved >= requested {
            (true, String::new())
        } else {
            // The wording clients know from core.md §5.9.
            (
                false,
                format!(
                    "Timeout: achieved {}, requested {}",
                    level_name(achieved),
                    level_name(requested)
                ),
            )
        };
        let achieved_level = pb_common::WriteConcern::from(achieved) as i32;
        Ok(batch
            .ops
            .into_iter()
            .zip(changed)
            .map(|(op, changed)| pb::OpResult {
                op_id: op.op_id,
                success,
                changed,
                achieved_level,
                error: error.clone(),
            })
            .collect())
    }

    /// The full state of the requested keys that exist.
    pub fn get_records(&self, req: &GetRecords) -> Result<Vec<pb_common::KeyState>, SyncError> {
        let state = self.state.read();
        let owned = self.ownership();
        for key in &req.keys {
            self.check_owned(&owned.partitions, key)?;
        }
        let found = req.keys.iter().filter_map(|key| match req.kind {
            MapKind::Lww => state
                .lww(&req.map_name)
                .and_then(|m| m.get(&key.key))
                .map(|r| lww_key_state(&key.key, r)),
            MapKind::Or => state
                .or(&req.map_name)
                .and_then(|m| m.get(&key.key))
                .map(|s| or_key_state(&key.key, s)),
        });
        Ok(found.collect())
    }

    /// One page of a map in key order.
    pub fn scan(&self, req: &ScanMap) -> pb::ScanMapResponse {
        let state = self.state.read();
        let after = req.after_key.as_deref();
        let mut records = Vec::new();
        let mut last_key = None;
        let mut done = true;
        match req.kind {
            MapKind::Lww => {
                if let Some(map) = state.lww(&req.map_name) {
                    let mut iter = map.range_after(after);
                    for (examined, (key, record)) in iter.by_ref().enumerate() {
                        last_key = Some(key.clone());
                        if req
                            .since
                            .as_ref()
                            .is_none_or(|since| record.timestamp > *since)
                        {
                            records.push(lww_key_state(key, record));
                        }
                        if records.len() >= req.limit || examined + 1 >= SCAN_MAX_EXAMINED {
                            break;
                        }
                    }
                    done = iter.next().is_none();
                }
            }
            MapKind::Or => {
                if let Some(map) = state.or(&req.map_name) {
                    let mut iter = map.range_after(after);
                    for (key, key_state) in iter.by_ref() {
                        last_key = Some(key.clone());
                        records.push(or_key_state(key, key_state));
                        if records.len() >= req.limit {
                            break;
                        }
                    }
                    done = iter.next().is_none();
                }
            }
        }
        let last_key = last_key
            .or_else(|| req.after_key.clone())
            .unwrap_or_default();
        pb::ScanMapResponse {
            records,
            last_key,
            done,
        }
    }

    /// The current records of the LWW keys changed at or after `since_millis` (see
    /// [`ChangeFeed::lww_keys_changed_since`]); keys this shard no longer owns or holds
    /// are left out. Incomplete when the feed cannot tell, too many keys changed, or
    /// the records would exceed [`CHANGED_SINCE_MAX_BYTES`]. Reads the ring and the
    /// state: call it from a blocking task.
    pub fn changed_since(&self, req: &ChangedSince) -> pb::ChangedSinceResponse {
        let incomplete = pb::ChangedSinceResponse {
            complete: false,
            records: Vec::new(),
        };
        let Some(keys) =
            self.feed
                .lww_keys_changed_since(&req.map_name, req.since_millis, req.limit)
        else {
            return incomplete;
        };
        let state = self.state.read();
        let owned = self.ownership();
        let Some(map) = state.lww(&req.map_name) else {
            return pb::ChangedSinceResponse {
                complete: true,
                records: Vec::new(),
            };
        };
        let mut records = Vec::with_capacity(keys.len());
        let mut bytes = 0;
        for key in keys
            .iter()
            .filter(|key| owned.partitions.contains(partition_of(key)))
        {
            if let Some(record) = map.get(key) {
                let state = lww_key_state(key, record);
                bytes += state.encoded_len();
                if bytes > CHANGED_SINCE_MAX_BYTES {
                    return incomplete;
                }
                records.push(state);
            }
        }
        pb::ChangedSinceResponse {
            complete: true,
            records,
        }
    }

    /// Evaluates a query over the LWW map: live, unexpired records that match, strictly
    /// after `after`, in query order; `matched` counts them before the limit. CPU-bound:
    /// call it from a blocking task.
    pub fn run_query(&self, req: &RunQuery) -> pb::RunQueryResponse {
        let plan = QueryPlan::from_query(&req.query);
        let now = wall_clock_ms();
        let state = self.state.read();
        let Some(map) = state.lww(&req.map_name) else {
            return pb::RunQueryResponse::default();
        };
        let mut rows: Vec<_> = map
            .iter()
            .filter(|(_, r)| !r.is_tombstone() && !r.is_expired(now) && plan.matches(&r.value))
            .map(|(key, record)| (plan.position(key, &record.value), record))
            .filter(|(position, _)| {
                req.after
                    .as_ref()
                    .is_none_or(|after| plan.cmp_positions(position, after) == Ordering::Greater)
            })
            .collect();
        let matched = rows.len() as u64;
        let order = |a: &(topgun_proto::predicate::Position, &LwwRecord),
                     b: &(topgun_proto::predicate::Position, &LwwRecord)| {
            plan.cmp_positions(&a.0, &b.0)
        };
        if req.limit > 0 && req.limit < rows.len() {
            // Only the first `limit` rows need ordering.
            rows.select_nth_unstable_by(req.limit - 1, order);
            rows.truncate(req.limit);
        }
        rows.sort_by(order);
        let rows = rows
            .into_iter()
            .map(|(position, record)| pb::QueryRow {
                key: position.key,
                value: wire::encode_value(&record.value),
            })
            .collect();
        pb::RunQueryResponse { rows, matched }
    }

    /// A Merkle node: hash, child buckets, and every key's state when it is a leaf.
    pub fn merkle_node(&self, req: &MerkleNodeQuery) -> pb::MerkleNodeResponse {
        let state = self.state.read();
        let path: &NodePath = &req.path;
        let is_leaf = path.depth() == 3;
        let (hash, buckets, entries) = match req.kind {
            MapKind::Lww => match state.lww(&req.map_name) {
                None => (0, Default::default(), Vec::new()),
                Some(map) => {
                    let tree = map.tree();
                    let mut entries = Vec::new();
                    if is_leaf {
                        let mut keys: Vec<&str> = tree.leaf_keys(path).collect();
                        keys.sort_unstable();
                        entries = keys
                            .into_iter()
                            .filter_map(|k| map.get(k).map(|r| lww_key_state(k, r)))
                            .collect();
                    }
                    (tree.node_hash(path), tree.buckets(path), entries)
                }
            },
            MapKind::Or => match state.or(&req.map_name) {
                None => (0, Default::default(), Vec::new()),
                Some(map) => {
                    let tree = map.tree();
                    let entries = if is_leaf {
                        map.leaf_keys(path)
                            .into_iter()
                            .filter_map(|k| map.get(k).map(|s| or_key_state(k, s)))
                            .collect()
                    } else {
                        Vec::new()
                    };
                    (tree.node_hash(path), tree.buckets(path), entries)
                }
            },
        };
        pb::MerkleNodeResponse {
            hash,
            buckets: buckets
                .into_iter()
                .map(|(c, h)| (c.to_string(), h))
                .collect(),
            entries,
        }
    }

    /// Every map with its key counts (LWW: records including tombstones; OR: keys with
    /// records or tombstones), per partition.
    pub fn list_maps(&self) -> pb::ListMapsResponse {
        let state = self.state.read();
        let lww = state
            .lww_maps()
            .map(|(name, m)| (name, MapKind::Lww, m.partitions()));
        let or = state
            .or_maps()
            .map(|(name, m)| (name, MapKind::Or, m.partitions()));
        let mut maps: Vec<pb::MapStats> = lww
            .chain(or)
            .map(|(name, kind, counts)| pb::MapStats {
                map_name: name.clone(),
                kind: kind.to_proto() as i32,
                records: counts.total(),
                partitions: counts
                    .by_partition()
                    .iter()
                    .map(|(p, n)| (*p, *n))
                    .collect(),
            })
            .collect();
        maps.sort_by(|a, b| a.map_name.cmp(&b.map_name).then(a.kind.cmp(&b.kind)));
        pb::ListMapsResponse { maps }
    }

    /// Identity, ownership and feed position.
    pub fn info(&self) -> pb::ShardInfoResponse {
        let owned = self.ownership();
        pb::ShardInfoResponse {
            node_id: self.node_id.clone(),
            shard_index: self.shard_index,
            shard_count: self.shard_count,
            partitions: owned.partitions.as_slice().to_vec(),
            ownership_version: owned.version,
            epoch: self.feed.epoch().to_string(),
            last_seq: self.feed.last_seq(),
            storage_addr: self
                .persistence
                .as_ref()
                .map(|p| p.addr().to_string())
                .unwrap_or_default(),
            storage_healthy: self.persistence.as_ref().is_none_or(|p| p.is_healthy()),
        }
    }

    /// Loads the owned partitions from storage, retrying with backoff while storage is
    /// unreachable; returns early only on shutdown. Memory-only shards return at once.
    pub async fn load_from_storage(
        &self,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<u64, SyncError> {
        let Some(persistence) = &self.persistence else {
            return Ok(0);
        };
        let partitions = self.ownership().partitions.clone();
        let mut backoff = LOAD_BACKOFF_FIRST;
        loop {
            let loaded = persistence
                .load(partitions.as_slice(), |page| {
                    self.apply_loaded(page, &partitions)
                })
                .await;
            match loaded {
                Ok(rows) => return Ok(rows),
                Err(err) => {
                    tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "loading partitions from storage failed")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                () = stopped(&mut shutdown) => return Err(SyncError::ShuttingDown),
            }
            backoff = (backoff * 2).min(LOAD_BACKOFF_MAX);
        }
    }

    /// Folds one page of stored rows of `wanted` partitions into the state, skipping
    /// rows of partitions not owned when the page is folded. Reloading a row already
    /// loaded changes nothing, so a load retried after a failure half-way is harmless.
    /// No change is published: loaded rows are already known to the rest of the suite.
    fn apply_loaded(
        &self,
        page: Vec<topgun_proto::grpc::storage::StoredRecord>,
        wanted: &PartitionSet,
    ) {
        // Decoding is the costly part; it needs no lock.
        let rows = decode_page(page, wanted);
        let mut state = self.state.write();
        let owned = self.ownership();
        let mut hlc = self.hlc.lock();
        fold_loaded(
            &mut state,
            &mut hlc,
            rows.into_iter()
                .filter(|row| owned.partitions.contains(row.key().partition())),
        );
        self.feed.mark_gap(hlc.now().millis);
    }

    /// Replaces the owned partitions with `partitions` when `version` is above the
    /// current one (otherwise changes nothing and reports `applied: false`).
    ///
    /// Lost partitions are released at once: ops for them fail NotOwner and their keys
    /// leave memory (their pending rows still reach storage). Gained partitions are
    /// loaded from storage before they are owned, retrying until the operation timeout;
    /// if storage stays unreachable the call fails retryably with the lost partitions
    /// already released and the version unchanged, so the same call can be repeated. A
    /// second load of the gained partitions follows after [`SETTLE_DELAY`].
    pub async fn set_partitions(
        self: &Arc<Self>,
        partitions: PartitionSet,
        version: u64,
    ) -> Result<SetPartitionsOutcome, SyncError> {
        let _switching = self.switching.lock().await;
        let current = self.ownership();
        if version <= current.version {
            return Ok(SetPartitionsOutcome {
                gained: 0,
                dropped: 0,
                version: current.version,
                applied: false,
            });
        }
        let lost: Vec<u32> = current
            .partitions
            .as_slice()
            .iter()
            .copied()
            .filter(|p| !partitions.contains(*p))
            .collect();
        let gained: Vec<u32> = partitions
            .as_slice()
            .iter()
            .copied()
            .filter(|p| !current.partitions.contains(*p))
            .collect();
        if !lost.is_empty() {
            // Released before anything is loaded: their new owner may already serve them.
            let kept = PartitionSet::from_list(
                current
                    .partitions
                    .as_slice()
                    .iter()
                    .copied()
                    .filter(|p| partitions.contains(*p)),
            );
            let keys = self.release(kept, current.version);
            tracing::info!(
                partitions = lost.len(),
                keys,
                "released partitions dropped from memory"
            );
        }
        let loaded = match &self.persistence {
            Some(p) if !gained.is_empty() => self.load_gained(p, &gained).await?,
            _ => Vec::new(),
        };
        let rows = loaded.len();
        {
            let mut state = self.state.write();
            let mut hlc = self.hlc.lock();
            fold_loaded(&mut state, &mut hlc, loaded);
            if !gained.is_empty() {
                // Their changes until now happened elsewhere: this feed cannot list them.
                self.feed.mark_gap(hlc.now().millis);
            }
            if let Some(p) = &self.persistence {
                p.restrict_to(&state, &mut hlc, &partitions);
            }
            *self.ownership.write() = Arc::new(Ownership {
                partitions,
                version,
            });
        }
        tracing::info!(
            version,
            gained = gained.len(),
            dropped = lost.len(),
            rows,
            "partition ownership changed"
        );
        if self.persistence.is_some() && !gained.is_empty() {
            self.schedule_settle_load(gained.clone());
        }
        Ok(SetPartitionsOutcome {
            gained: gained.len() as u32,
            dropped: lost.len() as u32,
            version,
            applied: true,
        })
    }

    /// Owns only `kept` from now on (still at `version`) and forgets every other key;
    /// returns how many keys went.
    fn release(&self, kept: PartitionSet, version: u64) -> usize {
        let mut state = self.state.write();
        let mut hlc = self.hlc.lock();
        if let Some(p) = &self.persistence {
            // Before the drop: pending rows of the released keys are built from them.
            p.restrict_to(&state, &mut hlc, &kept);
        }
        let dropped = state.drop_partitions(|p| !kept.contains(p));
        *self.ownership.write() = Arc::new(Ownership {
            partitions: kept,
            version,
        });
        dropped
    }

    /// Reads every stored row of `partitions`, retrying with backoff until the
    /// operation timeout. The rows are staged, not folded: the partitions become
    /// visible all at once, when they are owned.
    async fn load_gained(
        &self,
        persistence: &Persistence,
        partitions: &[u32],
    ) -> Result<Vec<LoadedRow>, SyncError> {
        let wanted = PartitionSet::from_list(partitions.iter().copied());
        let give_up = Instant::now() + self.operation_timeout;
        let mut backoff = LOAD_BACKOFF_FIRST;
        loop {
            let mut rows = Vec::new();
            let loaded = persistence
                .load(partitions, |page| rows.extend(decode_page(page, &wanted)))
                .await;
            match loaded {
                Ok(_) => return Ok(rows),
                Err(err) if !err.is_retryable() => return Err(err),
                Err(err) if Instant::now() + backoff >= give_up => {
                    return Err(SyncError::StorageUnavailable(format!(
                        "loading {} gained partitions: {err}",
                        partitions.len()
                    )));
                }
                Err(err) => {
                    tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "loading gained partitions failed")
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(LOAD_BACKOFF_MAX);
        }
    }

    /// Loads `partitions` once more after [`SETTLE_DELAY`], merging rows of those still
    /// owned by then. Merges never lose newer data, so this only adds writes the
    /// previous owner acknowledged while it still believed it owned them.
    /// Loads every owned partition from storage once more after [`SETTLE_DELAY`],
    /// merging: after a healed split, writes another owner acknowledged meanwhile exist
    /// only in storage.
    pub fn reload_owned_after_settle(self: &Arc<Self>) {
        if self.persistence.is_some() {
            self.schedule_settle_load(self.ownership().partitions.as_slice().to_vec());
        }
    }

    fn schedule_settle_load(self: &Arc<Self>, partitions: Vec<u32>) {
        let shard = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(SETTLE_DELAY).await;
            let Some(persistence) = &shard.persistence else {
                return;
            };
            let give_up = Instant::now() + shard.operation_timeout;
            let mut backoff = LOAD_BACKOFF_FIRST;
            loop {
                let owned = shard.ownership();
                let still = PartitionSet::from_list(
                    partitions
                        .iter()
                        .copied()
                        .filter(|p| owned.partitions.contains(*p)),
                );
                if still.is_empty() {
                    return;
                }
                let loaded = persistence
                    .load(still.as_slice(), |page| shard.apply_loaded(page, &still))
                    .await;
                match loaded {
                    Ok(rows) => {
                        tracing::debug!(
                            partitions = still.as_slice().len(),
                            rows,
                            "gained partitions reloaded"
                        );
                        return;
                    }
                    Err(err) if Instant::now() + backoff >= give_up => {
                        tracing::warn!(error = %err, partitions = still.as_slice().len(), "second load of gained partitions abandoned");
                        return;
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "second load of gained partitions failed")
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(LOAD_BACKOFF_MAX);
            }
        });
    }

    /// One GC round: expire, prune, publish, persist.
    pub async fn gc_round(self: &Arc<Self>) -> Result<GcReport, SyncError> {
        let this = Arc::clone(self);
        // A sweep walks whole maps under the write lock: keep it off the async workers.
        let (report, prepared) =
            tokio::task::spawn_blocking(move || this.gc_sweep(wall_clock_ms()))
                .await
                .map_err(|e| SyncError::Internal(format!("gc task failed: {e}")))?;
        if let (Some(p), Some(prepared)) = (&self.persistence, prepared) {
            p.write(prepared).await?;
        }
        Ok(report)
    }

    fn gc_sweep(&self, now_ms: u64) -> (GcReport, Option<persistence::PreparedWrite>) {
        let mut state = self.state.write();
        let mut hlc = self.hlc.lock();
        let outcome = gc::sweep(
            &mut state,
            &mut hlc,
            now_ms,
            self.tombstone_ttl_ms,
            &self.node_id,
        );
        let report = GcReport {
            expired: outcome.expired,
            pruned: outcome.pruned,
        };
        // System changes carry an empty origin, so every gateway forwards them.
        let stamp = hlc.now().millis;
        self.feed
            .publish(outcome.changes, &Origin::default(), stamp);
        let prepared = self.persistence.as_ref().map(|p| {
            let mut prepared = p.prepare(&state, &mut hlc, outcome.touched, 0);
            for (id, stamp) in outcome.deletes {
                prepared.push_unretried(persistence::delete_mutation(
                    &id.map_name,
                    &id.key,
                    id.kind,
                    stamp,
                ));
            }
            prepared
        });
        (report, prepared)
    }

    /// Writes up to one chunk of pending rows; returns how many were sent.
    pub async fn flush_pending(&self) -> Result<usize, SyncError> {
        let Some(p) = &self.persistence else {
            return Ok(0);
        };
        if p.pending_len() == 0 {
            return Ok(0);
        }
        let prepared = {
            let state = self.state.read();
            let mut hlc = self.hlc.lock();
            p.prepare(&state, &mut hlc, [], RETRY_CHUNK_ROWS)
        };
        let rows = prepared.len();
        p.write(prepared).await?;
        Ok(rows)
    }

    /// The LWW record of `key` in `map_name` (tests and tools).
    pub fn lww_record(&self, map_name: &str, key: &str) -> Option<LwwRecord> {
        self.state
            .read()
            .lww(map_name)
            .and_then(|m| m.get(key).cloned())
    }

    /// The current HLC reading, advancing the clock.
    pub fn now(&self) -> Timestamp {
        self.hlc.lock().now()
    }
}

/// Decodes one page of stored rows, keeping those of `wanted` partitions.
fn decode_page(
    page: Vec<topgun_proto::grpc::storage::StoredRecord>,
    wanted: &PartitionSet,
) -> Vec<LoadedRow> {
    page.into_iter()
        .filter_map(|row| {
            let (map_name, key) = (row.map_name.clone(), row.key.clone());
            match persistence::decode_row(row) {
                Ok(loaded) => wanted
                    .contains(loaded.key().partition())
                    .then_some(loaded),
                Err(reason) => {
                    tracing::warn!(map = %map_name, key = %key, %reason, "skipping undecodable stored row");
                    None
                }
            }
        })
        .collect()
}

/// Merges loaded rows into the state (never overwriting newer data) and moves the
/// clock past them, so later timestamps from this clock beat every stored row.
fn fold_loaded(state: &mut ShardState, hlc: &mut Hlc, rows: impl IntoIterator<Item = LoadedRow>) {
    for row in rows {
        match row {
            LoadedRow::Lww {
                map_name,
                key,
                record,
            } => {
                let _ = hlc.update(&record.timestamp);
                state.load_lww(&map_name, &key, record);
            }
            LoadedRow::Or {
                map_name,
                key,
                state: key_state,
                stamp,
            } => {
                let _ = hlc.update(&stamp);
                for record in key_state.records.values() {
                    let _ = hlc.update(&record.timestamp);
                }
                state.load_or(&map_name, &key, key_state);
            }
        }
    }
}

fn level_name(level: WriteConcern) -> &'static str {
    match level {
        WriteConcern::FireAndForget => "FIRE_AND_FORGET",
        WriteConcern::Memory => "MEMORY",
        WriteConcern::Applied => "APPLIED",
        WriteConcern::Replicated => "REPLICATED",
        WriteConcern::Persisted => "PERSISTED",
    }
}

fn lww_key_state(key: &str, record: &LwwRecord) -> pb_common::KeyState {
    pb_common::KeyState {
        key: key.to_string(),
        lww: Some(record.into()),
        or_records: Vec::new(),
        or_tombstones: Vec::new(),
    }
}

fn or_key_state(key: &str, state: &crate::crdt::OrKeyState) -> pb_common::KeyState {
    pb_common::KeyState {
        key: key.to_string(),
        lww: None,
        or_records: state.records.values().map(Into::into).collect(),
        or_tombstones: state.tombstones.iter().cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SyncConfig;
    use crate::requests::{Op, OpKind};
    use rmpv::Value;
    use topgun_proto::wire::OrMapRecord;

    fn shard_with(partitions: &[u32]) -> Shard {
        let list: Vec<String> = partitions.iter().map(u32::to_string).collect();
        shard(Some(&list.join(",")))
    }

    fn shard(partitions: Option<&str>) -> Shard {
        let config = SyncConfig {
            partitions: partitions.map(Into::into),
            ..Default::default()
        };
        Shard::new(&config.validate().expect("valid"), None)
    }

    fn put(key: &str, value: Value, millis: u64) -> Op {
        Op {
            op_id: key.to_string(),
            map_name: "m".into(),
            key: HashedKey::new(key),
            kind: OpKind::LwwPut(LwwRecord {
                value,
                timestamp: Timestamp::new(millis, 0, "c"),
                ttl_ms: None,
            }),
        }
    }

    fn or_add(key: &str, tag: &str, millis: u64) -> Op {
        Op {
            op_id: tag.to_string(),
            map_name: "o".into(),
            key: HashedKey::new(key),
            kind: OpKind::OrAdd(OrMapRecord {
                value: Value::from(tag),
                timestamp: Timestamp::new(millis, 0, "c"),
                tag: tag.to_string(),
                ttl_ms: None,
            }),
        }
    }

    fn batch(ops: Vec<Op>, write_concern: WriteConcern) -> ApplyBatch {
        ApplyBatch {
            ops,
            write_concern,
            origin: Origin::default(),
        }
    }

    #[tokio::test]
    async fn the_null_store_reports_persisted_without_a_storage_hop() {
        let config = SyncConfig {
            null_storage: true,
            ..Default::default()
        };
        let shard = Shard::new(&config.validate().expect("valid"), None);
        let results = shard
            .apply_batch(batch(
                vec![put("a", Value::from(1), 1)],
                WriteConcern::Persisted,
            ))
            .await
            .expect("ok");
        assert!(results[0].success, "{:?}", results[0]);
        assert_eq!(
            results[0].achieved_level,
            pb_common::WriteConcern::Persisted as i32
        );
    }

    fn changed(shard: &Shard, since_millis: u64, limit: usize) -> Option<Vec<(String, Value)>> {
        let answer = shard.changed_since(&ChangedSince {
            map_name: "m".into(),
            since_millis,
            limit,
        });
        answer.complete.then(|| {
            answer
                .records
                .into_iter()
                .map(|state| {
                    let record = LwwRecord::try_from(state.lww.expect("lww")).expect("record");
                    (state.key, record.value)
                })
                .collect()
        })
    }

    #[tokio::test]
    async fn changed_since_answers_the_current_records_of_keys_changed_from_then_on() {
        let shard = shard(None);
        // Record timestamps ahead of the wall clock move the shard clock there, so the
        // stamps are known exactly.
        let t = wall_clock_ms() + 60_000;
        apply(
            &shard,
            vec![put("a", Value::from(1), t), put("b", Value::from(1), t)],
        )
        .await
        .expect("ok");
        apply(&shard, vec![put("b", Value::from(2), t + 10)])
            .await
            .expect("ok");
        assert_eq!(
            changed(&shard, t, 10),
            Some(vec![
                ("a".into(), Value::from(1)),
                ("b".into(), Value::from(2))
            ])
        );
        assert_eq!(
            changed(&shard, t + 10, 10),
            Some(vec![("b".into(), Value::from(2))])
        );
        assert_eq!(changed(&shard, t, 1), None, "over the limit");
        assert_eq!(
            changed(&shard, wall_clock_ms() - 60_000, 10),
            None,
            "before the shard started"
        );
    }

    #[tokio::test]
    async fn after_gaining_partitions_changed_since_cannot_answer_for_the_time_before() {
        // "user-1" is partition 120; "a" is owned throughout.
        let shard = Arc::new(shard(Some("0-110")));
        let a_partition = partition_of("a");
        assert!(a_partition <= 110, "a is in partition {a_partition}");
        let t = wall_clock_ms() + 60_000;
        apply(&shard, vec![put("a", Value::from(1), t)])
            .await
            .expect("ok");
        assert!(changed(&shard, t, 10).is_some());
        shard
            .set_partitions(PartitionSet::parse("0-130").expect("valid"), 1)
            .await
            .expect("ok");
        assert_eq!(
            changed(&shard, t, 10),
            None,
            "changes to the gained partitions before the switch were made elsewhere"
        );
        let later = shard.now().millis + 1;
        apply(&shard, vec![put("user-1", Value::from(2), later)])
            .await
            .expect("owned now");
        assert_eq!(
            changed(&shard, later, 10),
            Some(vec![("user-1".into(), Value::from(2))])
        );
    }

    #[tokio::test]
    async fn memory_only_reaches_applied_and_flags_unmet_levels() {
        let shard = shard(None);
        let results = shard
            .apply_batch(batch(
                vec![put("a", Value::from(1), 1)],
                WriteConcern::Applied,
            ))
            .await
            .expect("ok");
        assert!(results[0].success && results[0].changed);
        assert_eq!(
            results[0].achieved_level,
            pb_common::WriteConcern::Applied as i32
        );
        let results = shard
            .apply_batch(batch(
                vec![put("a", Value::from(1), 1)],
                WriteConcern::Persisted,
            ))
            .await
            .expect("ok");
        assert!(!results[0].success && !results[0].changed);
        assert_eq!(
            results[0].error,
            "Timeout: achieved APPLIED, requested PERSISTED"
        );
        assert_eq!(shard.feed().last_seq(), 1, "only the change made an event");
    }

    #[tokio::test]
    async fn foreign_partitions_fail_the_whole_batch() {
        // "user-1" is partition 120.
        let shard = shard(Some("0-110"));
        let err = shard
            .apply_batch(batch(
                vec![
                    put("a", Value::from(1), 1),
                    put("user-1", Value::from(1), 1),
                ],
                WriteConcern::Applied,
            ))
            .await
            .expect_err("foreign");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(err.to_string().contains("partition 120"), "{err}");
        assert!(shard.lww_record("m", "a").is_none(), "nothing applied");
    }

    #[test]
    fn queries_sort_page_and_skip_dead_records() {
        let shard = shard(None);
        let mut state = shard.state.write();
        let mut hlc = shard.hlc.lock();
        let mut sink = Vec::new();
        let doc = |n: i64| Value::Map(vec![(Value::from("n"), Value::from(n))]);
        for (key, n) in [("a", 3), ("b", 1), ("c", 2), ("d", 5)] {
            state.apply(&mut hlc, &put(key, doc(n), 10), &mut sink);
        }
        state.apply(&mut hlc, &put("e", Value::Nil, 10), &mut sink);
        let mut expired = put("f", doc(0), 10);
        if let OpKind::LwwPut(r) = &mut expired.kind {
            r.ttl_ms = Some(1);
        }
        state.apply(&mut hlc, &expired, &mut sink);
        drop((state, hlc));
        let sort = Value::Map(vec![(Value::from("n"), Value::from("desc"))]);
        let query = wire::Query {
            sort: Some(sort),
            ..Default::default()
        };
        let req = RunQuery {
            map_name: "m".into(),
            query: query.clone(),
            limit: 2,
            after: None,
        };
        let res = shard.run_query(&req);
        assert_eq!(res.matched, 4);
        assert_eq!(
            res.rows.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
            vec!["d", "a"]
        );
        let plan = QueryPlan::from_query(&query);
        let after = plan.position("a", &doc(3));
        let res = shard.run_query(&RunQuery {
            after: Some(after),
            ..req
        });
        assert_eq!(res.matched, 2);
        assert_eq!(
            res.rows.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
            vec!["c", "b"]
        );
    }

    async fn apply(shard: &Shard, ops: Vec<Op>) -> Result<Vec<pb::OpResult>, SyncError> {
        shard.apply_batch(batch(ops, WriteConcern::Applied)).await
    }

    fn root(shard: &Shard, map_name: &str, kind: MapKind) -> u32 {
        shard
            .merkle_node(&MerkleNodeQuery {
                map_name: map_name.into(),
                kind,
                path: NodePath::ROOT,
            })
            .hash
    }

    #[tokio::test]
    async fn stale_versions_change_nothing() {
        let shard = Arc::new(shard(Some("0-9")));
        let stale = shard
            .set_partitions(PartitionSet::all(), 0)
            .await
            .expect("ok");
        assert_eq!(
            stale,
            SetPartitionsOutcome {
                gained: 0,
                dropped: 0,
                version: 0,
                applied: false
            }
        );
        assert_eq!(shard.partition_count(), 10);
        let applied = shard
            .set_partitions(PartitionSet::all(), 3)
            .await
            .expect("ok");
        assert_eq!((applied.gained, applied.dropped), (261, 0));
        for version in [3, 2] {
            let outcome = shard
                .set_partitions(PartitionSet::from_list([1]), version)
                .await
                .expect("ok");
            assert!(!outcome.applied);
            assert_eq!(outcome.version, 3);
        }
        let info = shard.info();
        assert_eq!(info.partitions.len(), 271);
        assert_eq!(info.ownership_version, 3);
    }

    #[tokio::test]
    async fn concurrent_calls_apply_in_version_order() {
        let shard = Arc::new(shard(None));
        let (a, b) = tokio::join!(
            shard.set_partitions(PartitionSet::from_list([1, 2]), 2),
            shard.set_partitions(PartitionSet::from_list([1]), 1),
        );
        assert!(a.expect("ok").applied);
        let _ = b.expect("ok");
        let ownership = shard.ownership();
        assert_eq!(ownership.version, 2);
        assert_eq!(ownership.partitions.as_slice(), &[1, 2]);
    }

    #[tokio::test]
    async fn losing_partitions_drops_exactly_their_keys() {
        let shard = Arc::new(shard(None));
        let kept = PartitionSet::parse("0-134").expect("valid");
        let mut ops = Vec::new();
        for i in 0..300u64 {
            let key = format!("key-{i}");
            ops.push(put(&key, Value::from(i), 10 + i));
            ops.push(or_add(&key, &format!("t{i}"), 10 + i));
        }
        // A key left with only a tombstone is listed in its leaf without a tree entry.
        let ghost = (0..)
            .map(|i| format!("ghost-{i}"))
            .find(|k| !kept.contains(HashedKey::new(k.as_str()).partition()))
            .expect("some key is in a lost partition");
        ops.push(Op {
            op_id: "rm".into(),
            map_name: "o".into(),
            key: HashedKey::new(ghost.as_str()),
            kind: OpKind::OrRemove("never-added".into()),
        });
        apply(&shard, ops.clone()).await.expect("all owned");
        let seq = shard.feed().last_seq();

        let outcome = shard.set_partitions(kept.clone(), 1).await.expect("ok");
        assert_eq!(
            outcome,
            SetPartitionsOutcome {
                gained: 0,
                dropped: 136,
                version: 1,
                applied: true
            }
        );
        assert_eq!(shard.feed().last_seq(), seq, "a drop publishes nothing");

        // The same hashes and counts as a shard that only ever held the kept keys.
        let fresh = shard_with(kept.as_slice());
        let kept_ops: Vec<Op> = ops
            .iter()
            .filter(|op| kept.contains(op.key.partition()))
            .cloned()
            .collect();
        assert!(kept_ops.len() < ops.len() && !kept_ops.is_empty());
        apply(&fresh, kept_ops).await.expect("owned");
        assert_eq!(
            root(&shard, "m", MapKind::Lww),
            root(&fresh, "m", MapKind::Lww)
        );
        assert_eq!(
            root(&shard, "o", MapKind::Or),
            root(&fresh, "o", MapKind::Or)
        );
        assert_eq!(shard.list_maps(), fresh.list_maps());
        for op in &ops {
            let present = shard.lww_record("m", &op.key.key).is_some()
                || shard
                    .state
                    .read()
                    .or("o")
                    .and_then(|m| m.get(&op.key.key))
                    .is_some();
            assert_eq!(present, kept.contains(op.key.partition()), "{}", op.key.key);
        }
        let ghost_leaf = shard.merkle_node(&MerkleNodeQuery {
            map_name: "o".into(),
            kind: MapKind::Or,
            path: NodePath::leaf_of(HashedKey::new(ghost.as_str()).hash),
        });
        assert!(ghost_leaf.entries.is_empty());

        // Ops and reads for a lost partition are refused; kept ones still work.
        let lost = ops
            .iter()
            .find(|op| !kept.contains(op.key.partition()))
            .expect("some key is lost");
        let err = apply(&shard, vec![put(&lost.key.key, Value::from(1), 1_000)])
            .await
            .expect_err("not owned");
        assert!(matches!(err, SyncError::NotOwner { .. }), "{err}");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        let read = GetRecords {
            map_name: "m".into(),
            kind: MapKind::Lww,
            keys: vec![lost.key.clone()],
        };
        assert!(matches!(
            shard.get_records(&read),
            Err(SyncError::NotOwner { .. })
        ));
        let kept_key = ops
            .iter()
            .find(|op| kept.contains(op.key.partition()))
            .expect("some key is kept");
        apply(&shard, vec![put(&kept_key.key.key, Value::from(1), 1_000)])
            .await
            .expect("owned");
        let info = shard.info();
        assert_eq!(info.partitions, kept.as_slice());
        assert_eq!(info.ownership_version, 1);
    }

    #[tokio::test]
    async fn memory_only_shards_serve_gained_partitions_at_once() {
        // "user-1" is partition 120.
        let shard = Arc::new(shard(Some("0-110")));
        let write = || put("user-1", Value::from(1), 1);
        let err = apply(&shard, vec![write()]).await.expect_err("foreign");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        let outcome = shard
            .set_partitions(PartitionSet::parse("100-130").expect("valid"), 1)
            .await
            .expect("ok");
        assert_eq!((outcome.gained, outcome.dropped), (20, 100));
        let results = apply(&shard, vec![write()]).await.expect("owned now");
        assert!(results[0].success && results[0].changed);
        assert_eq!(shard.partition_count(), 31);
    }

    #[tokio::test]
    async fn gains_fail_retryably_while_storage_is_down() {
        let config = SyncConfig {
            partitions: Some("0-9".into()),
            default_operation_timeout_ms: 300,
            ..Default::default()
        };
        let persistence =
            Persistence::connect("http://127.0.0.1:9", None, Duration::from_millis(100))
                .expect("valid address");
        let shard = Arc::new(Shard::new(
            &config.validate().expect("valid"),
            Some(Arc::new(persistence)),
        ));
        let err = shard
            .set_partitions(PartitionSet::parse("5-20").expect("valid"), 1)
            .await
            .expect_err("nothing listens on port 9");
        assert!(err.is_retryable(), "{err}");
        // The lost partitions are released; the gain and the version wait for a retry.
        let ownership = shard.ownership();
        assert_eq!(ownership.version, 0);
        assert_eq!(ownership.partitions.as_slice(), &[5, 6, 7, 8, 9]);
    }
}
