//! Write-through persistence to the storage service, and the start-up load.
//!
//! Rows are built from the current in-memory state of a key, never from the op that
//! changed it, so a row written late is still the newest state. Rows that could not be
//! written wait in a bounded pending set and are retried by every later batch and by a
//! background task: without that, a client's retry of a failed batch would merge as
//! "unchanged" and its data would never reach storage. When the shard gives up a
//! partition, its pending rows are frozen first (the state they would be rebuilt from is
//! dropped) and keep flushing; the storage guard keeps the newest row either way.

use crate::config::PartitionSet;
use crate::crdt::OrKeyState;
use crate::error::SyncError;
use crate::requests::{HashedKey, MapKind};
use crate::state::{RowId, ShardState};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use topgun_proto::grpc::common as pb_common;
use topgun_proto::grpc::storage as pb;
use topgun_proto::grpc::storage::storage_service_client::StorageServiceClient;
use topgun_proto::hlc::{Hlc, Timestamp};
use topgun_proto::internal_auth::TokenAttach;
use topgun_proto::partition::partition_of;
use topgun_proto::wire::{self, LwwRecord, OrMapRecord};

/// Rows allowed to wait for storage; beyond it new writes are refused (UNAVAILABLE)
/// instead of growing memory that is not durable.
pub const PENDING_LIMIT: usize = 100_000;
/// Pending rows an ApplyBatch carries along with its own, keeping its WriteBatch small.
pub const PIGGYBACK_ROWS: usize = 256;
/// Pending rows the background retry writes per call.
pub const RETRY_CHUNK_ROWS: usize = 1_000;
/// Rows per LoadMap page.
const LOAD_PAGE_SIZE: u32 = 500;
/// Longest a start-up LoadMap stream may run, and longest between two of its pages.
const LOAD_DEADLINE: Duration = Duration::from_secs(600);
const LOAD_PAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Large OR keys make large rows; storage-bound messages may exceed tonic's 4 MiB default.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Attaches the internal token to every storage call.
#[derive(Debug, Clone)]
pub struct AttachToken(TokenAttach);

impl Interceptor for AttachToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        (self.0.interceptor())(request)
    }
}

/// The storage client type.
pub type StorageClient = StorageServiceClient<InterceptedService<Channel, AttachToken>>;

/// The MsgPack body of an OR row: the key's live records and its tombstones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrRow {
    /// Live records, sorted by tag.
    #[serde(default)]
    pub records: Vec<OrMapRecord>,
    /// Tombstoned tags.
    #[serde(default)]
    pub tombstones: Vec<String>,
}

/// A storage write built under the state lock, sent after it is released.
#[derive(Debug, Default)]
pub struct PreparedWrite {
    /// Rows retried on failure, each with its mutation.
    rows: Vec<(RowId, pb::Mutation)>,
    unretried: Vec<pb::Mutation>,
}

impl PreparedWrite {
    /// Adds mutations that are not retried on failure (GC deletes: the next sweep after
    /// a restart prunes the same rows again).
    pub fn push_unretried(&mut self, mutation: pb::Mutation) {
        self.unretried.push(mutation);
    }

    /// Number of mutations.
    pub fn len(&self) -> usize {
        self.rows.len() + self.unretried.len()
    }

    /// True when there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.unretried.is_empty()
    }
}

/// Rows waiting for storage.
#[derive(Debug, Default)]
struct Pending {
    /// Rows of owned partitions, rebuilt from the state when sent so they carry the
    /// newest state of their key.
    rows: HashSet<RowId>,
    /// Rows of partitions given up since, frozen when they were: their state is gone.
    detached: HashMap<RowId, pb::Mutation>,
    /// The partitions whose rows may be rebuilt from the state; `None` = all.
    owned: Option<PartitionSet>,
}

impl Pending {
    fn len(&self) -> usize {
        self.rows.len() + self.detached.len()
    }

    fn is_owned(&self, id: &RowId) -> bool {
        self.owned
            .as_ref()
            .is_none_or(|owned| owned.contains(partition_of(&id.key)))
    }

    /// Keeps `mutation` frozen unless a newer row of the same key already is.
    fn detach(&mut self, id: RowId, mutation: pb::Mutation) {
        match self.detached.get_mut(&id) {
            Some(kept) if mutation_stamp(kept) >= mutation_stamp(&mutation) => {}
            Some(kept) => *kept = mutation,
            None => {
                self.detached.insert(id, mutation);
            }
        }
    }
}

/// The storage side of a shard.
#[derive(Debug)]
pub struct Persistence {
    client: StorageClient,
    addr: String,
    /// Outcome of the last storage call, for ShardInfo and cluster status.
    healthy: std::sync::atomic::AtomicBool,
    pending: Mutex<Pending>,
    call_timeout: Duration,
}

impl Persistence {
    /// A lazily connecting client for `addr`; nothing is contacted until the first call,
    /// so a shard starts while storage is still coming up.
    pub fn connect(
        addr: &str,
        token: Option<&str>,
        call_timeout: Duration,
    ) -> Result<Self, SyncError> {
        let endpoint = Endpoint::from_shared(addr.to_string())
            .map_err(|e| SyncError::Config(format!("STORAGE_ADDR {addr:?}: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let endpoint =
            topgun_proto::internal_tls::client_endpoint(endpoint).map_err(SyncError::Config)?;
        let attach = TokenAttach::new(token).map_err(SyncError::Config)?;
        let client =
            StorageServiceClient::with_interceptor(endpoint.connect_lazy(), AttachToken(attach))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Persistence {
            client,
            addr: addr.to_string(),
            healthy: std::sync::atomic::AtomicBool::new(true),
            pending: Mutex::new(Pending::default()),
            call_timeout,
        })
    }

    /// Refuses new writes while too many rows wait for storage.
    pub fn admit(&self) -> Result<(), SyncError> {
        let waiting = self.pending_len();
        if waiting >= PENDING_LIMIT {
            return Err(SyncError::StorageUnavailable(format!(
                "{waiting} changes are waiting for storage; new writes are refused until it recovers"
            )));
        }
        Ok(())
    }

    /// Rows waiting for a retry.
    pub fn pending_len(&self) -> usize {
        self.pending.lock().len()
    }

    /// Builds the write for `own` rows plus up to `piggyback` pending ones. Must be
    /// called under the state lock: OR rows are stamped with `hlc.now()` there, so a
    /// later state of a key always carries a later timestamp and wins the storage guard.
    pub fn prepare(
        &self,
        state: &ShardState,
        hlc: &mut Hlc,
        own: impl IntoIterator<Item = RowId>,
        piggyback: usize,
    ) -> PreparedWrite {
        let mut seen = HashSet::new();
        let mut ids: Vec<RowId> = own
            .into_iter()
            .filter(|id| seen.insert(id.clone()))
            .collect();
        let mut frozen = Vec::new();
        {
            let mut pending = self.pending.lock();
            for id in &ids {
                // Written now; a failure puts it back.
                pending.rows.remove(id);
            }
            let extra: Vec<RowId> = pending.rows.iter().take(piggyback).cloned().collect();
            let room = piggyback - extra.len();
            for id in extra {
                pending.rows.remove(&id);
                ids.push(id);
            }
            let thawed: Vec<RowId> = pending.detached.keys().take(room).cloned().collect();
            for id in thawed {
                if let Some(mutation) = pending.detached.remove(&id) {
                    frozen.push((id, mutation));
                }
            }
        }
        let mut rows: Vec<(RowId, pb::Mutation)> = ids
            .into_iter()
            .filter_map(|id| row_mutation(state, hlc, &id).map(|m| (id, m)))
            .collect();
        rows.extend(frozen);
        PreparedWrite {
            rows,
            unretried: Vec::new(),
        }
    }

    /// Restricts the rows rebuilt from the state to the `owned` partitions. Pending rows
    /// of other partitions are frozen now, from `state`, and rows of theirs that fail
    /// later stay frozen. Call it under the state lock, before the partitions' keys are
    /// dropped from `state`.
    pub fn restrict_to(&self, state: &ShardState, hlc: &mut Hlc, owned: &PartitionSet) {
        let mut pending = self.pending.lock();
        pending.owned = Some(owned.clone());
        let leaving: Vec<RowId> = pending
            .rows
            .iter()
            .filter(|id| !owned.contains(partition_of(&id.key)))
            .cloned()
            .collect();
        for id in leaving {
            pending.rows.remove(&id);
            // An LWW key already pruned has nothing left to write.
            if let Some(mutation) = row_mutation(state, hlc, &id) {
                pending.detach(id, mutation);
            }
        }
    }

    /// Sends a prepared write. The call runs in its own task, so a caller that gives up
    /// (deadline, disconnect) cannot cancel it half-way and lose its rows: on failure
    /// they return to the pending set.
    pub async fn write(self: &Arc<Self>, prepared: PreparedWrite) -> Result<(), SyncError> {
        if prepared.is_empty() {
            return Ok(());
        }
        let this = Arc::clone(self);
        let task = tokio::spawn(async move {
            let PreparedWrite { rows, unretried } = prepared;
            let mut mutations: Vec<pb::Mutation> = rows.iter().map(|(_, m)| m.clone()).collect();
            mutations.extend(unretried);
            let result = this.send(mutations).await;
            match &result {
                Ok(()) => {}
                Err(SyncError::StorageRejected(reason)) => {
                    // Input validation should make this impossible; retrying a rejected
                    // row forever would block every later write, so it is dropped loudly.
                    tracing::error!(%reason, rows = rows.len(), "storage rejected rows; they stay in memory only");
                }
                Err(_) => this.requeue(rows),
            }
            result
        });
        task.await
            .map_err(|e| SyncError::Internal(format!("storage write task failed: {e}")))?
    }

    /// Puts the rows of a failed write back: by id while their partition is owned (the
    /// state rebuilds them), frozen as sent once it is not (the state dropped them).
    fn requeue(&self, rows: Vec<(RowId, pb::Mutation)>) {
        let mut pending = self.pending.lock();
        for (id, mutation) in rows {
            if pending.is_owned(&id) {
                pending.rows.insert(id);
            } else {
                pending.detach(id, mutation);
            }
        }
    }

    async fn send(&self, mutations: Vec<pb::Mutation>) -> Result<(), SyncError> {
        let mut request = Request::new(pb::WriteBatchRequest { mutations });
        request.set_timeout(self.call_timeout);
        let mut client = self.client.clone();
        let result =
            match tokio::time::timeout(self.call_timeout, client.write_batch(request)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(status)) => Err(storage_error(status)),
                Err(_) => Err(SyncError::StorageUnavailable(format!(
                    "WriteBatch timed out after {} ms",
                    self.call_timeout.as_millis()
                ))),
            };
        self.healthy
            .store(result.is_ok(), std::sync::atomic::Ordering::Relaxed);
        result
    }

    /// The storage service address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether the last storage write succeeded.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Streams every stored row of `partitions`, calling `on_page` per page.
    pub async fn load(
        &self,
        partitions: &[u32],
        mut on_page: impl FnMut(Vec<pb::StoredRecord>),
    ) -> Result<u64, SyncError> {
        let mut request = Request::new(pb::LoadMapRequest {
            map_name: String::new(),
            partitions: partitions.to_vec(),
            page_size: LOAD_PAGE_SIZE,
        });
        request.set_timeout(LOAD_DEADLINE);
        let mut client = self.client.clone();
        let mut stream =
            match tokio::time::timeout(self.call_timeout, client.load_map(request)).await {
                Ok(Ok(response)) => response.into_inner(),
                Ok(Err(status)) => return Err(storage_error(status)),
                Err(_) => {
                    return Err(SyncError::StorageUnavailable(
                        "LoadMap did not answer in time".into(),
                    ))
                }
            };
        let mut rows = 0u64;
        loop {
            match tokio::time::timeout(LOAD_PAGE_TIMEOUT, stream.message()).await {
                Ok(Ok(Some(page))) => {
                    rows += page.records.len() as u64;
                    on_page(page.records);
                }
                Ok(Ok(None)) => return Ok(rows),
                Ok(Err(status)) => return Err(storage_error(status)),
                Err(_) => return Err(SyncError::StorageUnavailable("LoadMap stalled".into())),
            }
        }
    }
}

/// The timestamp the storage guard compares for a mutation.
fn mutation_stamp(mutation: &pb::Mutation) -> Option<Timestamp> {
    let stamp = match &mutation.kind {
        Some(pb::mutation::Kind::Upsert(row)) => row.timestamp.clone(),
        Some(pb::mutation::Kind::Delete(target)) => target.not_newer_than.clone(),
        None => None,
    };
    stamp.map(Timestamp::from)
}

fn storage_error(status: Status) -> SyncError {
    match status.code() {
        Code::InvalidArgument => SyncError::StorageRejected(status.message().to_string()),
        code => SyncError::StorageUnavailable(format!("{code:?}: {}", status.message())),
    }
}

/// The mutation that makes storage hold the current state of `id`: an upsert of its
/// row, a delete for an OR key left with nothing, nothing for an LWW key that is gone
/// (pruned; GC deletes its row itself).
fn row_mutation(state: &ShardState, hlc: &mut Hlc, id: &RowId) -> Option<pb::Mutation> {
    let key = HashedKey::new(id.key.clone());
    let row = match id.kind {
        MapKind::Lww => lww_row(&id.map_name, &key, state.lww(&id.map_name)?.get(&id.key)?),
        MapKind::Or => match state.or(&id.map_name).and_then(|m| m.get(&id.key)) {
            Some(key_state) => or_row(&id.map_name, &key, key_state, hlc.now()),
            None => {
                return Some(delete_mutation(
                    &id.map_name,
                    &id.key,
                    MapKind::Or,
                    hlc.now(),
                ));
            }
        },
    };
    Some(pb::Mutation {
        kind: Some(pb::mutation::Kind::Upsert(row)),
    })
}

/// A delete that only removes a row not newer than `not_newer_than`.
pub fn delete_mutation(
    map_name: &str,
    key: &str,
    kind: MapKind,
    not_newer_than: Timestamp,
) -> pb::Mutation {
    pb::Mutation {
        kind: Some(pb::mutation::Kind::Delete(pb::RecordRef {
            map_name: map_name.to_string(),
            key: key.to_string(),
            kind: record_kind(kind) as i32,
            not_newer_than: Some((&not_newer_than).into()),
        })),
    }
}

fn record_kind(kind: MapKind) -> pb::RecordKind {
    match kind {
        MapKind::Lww => pb::RecordKind::Lww,
        MapKind::Or => pb::RecordKind::Or,
    }
}

/// The durable row of an LWW record: its timestamp is the record's, so the storage
/// guard applies the same rule as the merge.
pub fn lww_row(map_name: &str, key: &HashedKey, record: &LwwRecord) -> pb::StoredRecord {
    let expires_at_ms = match record.ttl_ms {
        Some(ttl) if ttl > 0 => record.timestamp.millis.saturating_add(ttl),
        _ => 0,
    };
    pb::StoredRecord {
        map_name: map_name.to_string(),
        key: key.key.clone(),
        partition: key.partition(),
        kind: pb::RecordKind::Lww as i32,
        value: wire::encode_value(&record.value),
        timestamp: Some((&record.timestamp).into()),
        tombstone: record.is_tombstone(),
        ttl_ms: record.ttl_ms,
        expires_at_ms,
    }
}

/// The durable row of an OR key, stamped with a fresh shard timestamp.
pub fn or_row(
    map_name: &str,
    key: &HashedKey,
    state: &OrKeyState,
    stamp: Timestamp,
) -> pb::StoredRecord {
    let body = OrRow {
        records: state.records.values().cloned().collect(),
        tombstones: state.tombstones.iter().cloned().collect(),
    };
    pb::StoredRecord {
        map_name: map_name.to_string(),
        key: key.key.clone(),
        partition: key.partition(),
        kind: pb::RecordKind::Or as i32,
        value: wire::encode_body(&body),
        timestamp: Some(pb_common::Timestamp::from(&stamp)),
        tombstone: state.records.is_empty(),
        ttl_ms: None,
        expires_at_ms: 0,
    }
}

/// A stored row, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadedRow {
    /// An LWW record.
    Lww {
        /// Map.
        map_name: String,
        /// Key.
        key: HashedKey,
        /// Record.
        record: LwwRecord,
    },
    /// An OR key state.
    Or {
        /// Map.
        map_name: String,
        /// Key.
        key: HashedKey,
        /// Records and tombstones.
        state: OrKeyState,
        /// Row timestamp (a shard HLC reading).
        stamp: Timestamp,
    },
}

impl LoadedRow {
    /// The row's key.
    pub fn key(&self) -> &HashedKey {
        match self {
            LoadedRow::Lww { key, .. } | LoadedRow::Or { key, .. } => key,
        }
    }
}

/// Decodes a row read back from storage.
pub fn decode_row(row: pb::StoredRecord) -> Result<LoadedRow, String> {
    let stamp = row
        .timestamp
        .map(Timestamp::from)
        .ok_or("row without timestamp")?;
    let key = HashedKey::new(row.key);
    match pb::RecordKind::try_from(row.kind) {
        Ok(pb::RecordKind::Lww) => {
            let value = if row.value.is_empty() {
                rmpv::Value::Nil
            } else {
                wire::decode_value(&row.value)?
            };
            let record = LwwRecord {
                value,
                timestamp: stamp,
                ttl_ms: row.ttl_ms,
            };
            Ok(LoadedRow::Lww {
                map_name: row.map_name,
                key,
                record,
            })
        }
        Ok(pb::RecordKind::Or) => {
            let body: OrRow = wire::decode_body(&row.value)?;
            let state = OrKeyState {
                records: body
                    .records
                    .into_iter()
                    .map(|r| (r.tag.clone(), r))
                    .collect(),
                tombstones: body.tombstones.into_iter().collect(),
            };
            Ok(LoadedRow::Or {
                map_name: row.map_name,
                key,
                state,
                stamp,
            })
        }
        Err(_) => Err(format!("unknown record kind {}", row.kind)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::requests::{Op, OpKind};
    use rmpv::Value;

    #[test]
    fn rows_round_trip() {
        let key = HashedKey::new("k");
        let record = LwwRecord {
            value: Value::Map(vec![(Value::from("bin"), Value::Binary(vec![1, 2]))]),
            timestamp: Timestamp::new(1_000, 2, "c"),
            ttl_ms: Some(50),
        };
        let row = lww_row("m", &key, &record);
        assert_eq!(row.expires_at_ms, 1_050);
        assert!(!row.tombstone);
        assert_eq!(row.partition, key.partition());
        assert_eq!(
            decode_row(row),
            Ok(LoadedRow::Lww {
                map_name: "m".into(),
                key: key.clone(),
                record
            })
        );

        let mut state = OrKeyState::default();
        let rec = OrMapRecord {
            value: Value::Binary(vec![9]),
            timestamp: Timestamp::new(5, 0, "c"),
            tag: "5:0:c".into(),
            ttl_ms: Some(7),
        };
        state.records.insert(rec.tag.clone(), rec);
        state.tombstones.insert("1:0:c".into());
        let stamp = Timestamp::new(9, 9, "sync-0");
        let row = or_row("m", &key, &state, stamp.clone());
        assert_eq!(
            decode_row(row),
            Ok(LoadedRow::Or {
                map_name: "m".into(),
                key,
                state,
                stamp
            })
        );
    }

    /// Persistence towards a storage address nothing listens on (port 9, "discard").
    fn unreachable_storage() -> Arc<Persistence> {
        let persistence =
            Persistence::connect("http://127.0.0.1:9", None, Duration::from_millis(200))
                .expect("valid address");
        Arc::new(persistence)
    }

    #[tokio::test]
    async fn pending_rows_are_carried_by_later_writes() {
        let persistence = unreachable_storage();
        let mut state = ShardState::new();
        let mut hlc = Hlc::new("s");
        let op = Op {
            op_id: String::new(),
            map_name: "m".into(),
            key: HashedKey::new("k"),
            kind: OpKind::OrRemove("t".into()),
        };
        state.apply(&mut hlc, &op, &mut Vec::new());
        let prepared = persistence.prepare(&state, &mut hlc, [RowId::of(&op)], PIGGYBACK_ROWS);
        assert_eq!(prepared.len(), 1);
        let err = persistence
            .write(prepared)
            .await
            .expect_err("nothing listens on port 9");
        assert!(err.is_retryable(), "{err}");
        assert_eq!(persistence.pending_len(), 1);
        // The next write takes the pending row along.
        let again = persistence.prepare(&state, &mut hlc, [], PIGGYBACK_ROWS);
        assert_eq!(again.len(), 1);
        assert_eq!(persistence.pending_len(), 0);
    }

    #[tokio::test]
    async fn rows_of_released_partitions_stay_pending_as_they_were() {
        let persistence = unreachable_storage();
        let mut state = ShardState::new();
        let mut hlc = Hlc::new("s");
        let op = Op {
            op_id: String::new(),
            map_name: "m".into(),
            key: HashedKey::new("k"),
            kind: OpKind::OrAdd(OrMapRecord {
                value: Value::from(1),
                timestamp: Timestamp::new(5, 0, "c"),
                tag: "5:0:c".into(),
                ttl_ms: None,
            }),
        };
        state.apply(&mut hlc, &op, &mut Vec::new());
        let prepared = persistence.prepare(&state, &mut hlc, [RowId::of(&op)], 0);
        persistence
            .write(prepared)
            .await
            .expect_err("nothing listens");
        assert_eq!(persistence.pending_len(), 1);

        // The shard gives the key's partition up: its row is frozen, then the key dropped.
        let lost = partition_of("k");
        let kept = PartitionSet::from_list((0..271).filter(|p| *p != lost));
        persistence.restrict_to(&state, &mut hlc, &kept);
        state.drop_partitions(|p| p == lost);
        assert_eq!(persistence.pending_len(), 1);
        // Sent as the upsert it was, not as the delete an absent OR key would make.
        let again = persistence.prepare(&state, &mut hlc, [], PIGGYBACK_ROWS);
        assert_eq!(again.len(), 1);
        assert!(matches!(
            again.rows[0].1.kind,
            Some(pb::mutation::Kind::Upsert(_))
        ));
        assert_eq!(persistence.pending_len(), 0);
        // A failed send keeps it frozen.
        persistence.write(again).await.expect_err("nothing listens");
        assert_eq!(persistence.pending_len(), 1);
        let last = persistence.prepare(&state, &mut hlc, [], PIGGYBACK_ROWS);
        assert!(matches!(
            last.rows[0].1.kind,
            Some(pb::mutation::Kind::Upsert(_))
        ));
    }
}
