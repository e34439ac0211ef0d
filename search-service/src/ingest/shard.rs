//! Ingestion from one sync shard: bootstrap by scanning every indexed map, then tail
//! the change feed, resuming by (epoch, seq); rescan when the resume point is lost,
//! the epoch changes or the indexed-map set grows; retry with backoff when the shard
//! is unreachable.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic::{Code, Status};
use topgun_proto::grpc::common::MapKind;
use topgun_proto::grpc::sync::{
    ChangeBatch, ChangeEvent, EventType, GetRecordsRequest, ListMapsRequest, ScanMapRequest,
    ShardInfoRequest, SubscribeChangesRequest,
};
use topgun_proto::hlc::wall_clock_ms;
use topgun_proto::local_feed;

use super::client::{call, request, SyncClient, CALL_TIMEOUT};
use super::convert::{key_state_update, lww_update, or_update};
use super::ShardProgress;
use crate::document::DocUpdate;
use crate::engine::SearchEngine;
use crate::error::SearchError;
use crate::indexer::Origin;

/// Keys per ScanMap page.
const SCAN_PAGE: u32 = 1000;
/// Keys per GetRecords call when refreshing OR-Map keys.
const FETCH_CHUNK: usize = 500;
/// First and longest wait before retrying an unreachable shard.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Where the change feed continues.
#[derive(Debug, Clone)]
struct Resume {
    epoch: String,
    next_seq: u64,
}

/// Why tailing stopped.
enum TailEnd {
    /// The service is shutting down.
    Stopped,
    /// The resume point is gone (or must be re-established): scan again.
    Rescan(String),
    /// The connection failed; resume from where we are after a pause.
    Lost(Status),
}

/// Ingestion state of one shard.
pub(crate) struct ShardIngest {
    /// The follower's shard index, which tags the documents it writes.
    pub index: usize,
    pub client: SyncClient,
    pub engine: SearchEngine,
    pub progress: Arc<ShardProgress>,
    pub stop: watch::Receiver<bool>,
    pub rescans: watch::Receiver<u64>,
    /// Generation of the last completed scan.
    pub generation: u64,
    /// Last generation number handed out; each scan attempt gets a fresh one so a
    /// failed attempt's marks never count as seen by a later attempt.
    pub last_attempt: u64,
}

impl ShardIngest {
    /// Runs until shutdown.
    pub async fn run(mut self) {
        let mut resume: Option<Resume> = None;
        let mut backoff = BACKOFF_MIN;
        loop {
            if *self.stop.borrow() {
                return;
            }
            let mut position = match resume.take() {
                Some(position) => position,
                None => match self.scan().await {
                    Ok(position) => position,
                    Err(error) => {
                        tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "shard scan failed");
                        self.progress.connected.store(false, Ordering::Relaxed);
                        if !self.pause(&mut backoff).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            match self.tail(&mut position, &mut backoff).await {
                TailEnd::Stopped => return,
                TailEnd::Rescan(reason) => {
                    tracing::info!(%reason, "rescanning shard");
                }
                TailEnd::Lost(status) => {
                    tracing::warn!(code = ?status.code(), message = status.message(), retry_in_ms = backoff.as_millis() as u64, "change feed lost");
                    self.progress.connected.store(false, Ordering::Relaxed);
                    resume = Some(position);
                    if !self.pause(&mut backoff).await {
                        return;
                    }
                }
            }
        }
    }

    /// Waits `backoff` (doubling it for next time); false when shutdown came first.
    async fn pause(&mut self, backoff: &mut Duration) -> bool {
        let wait = *backoff;
        *backoff = (*backoff * 2).min(BACKOFF_MAX);
        tokio::select! {
            () = tokio::time::sleep(wait) => true,
            _ = self.stop.wait_for(|stopped| *stopped) => false,
        }
    }

    /// Full scan of every indexed map, then a sweep of what the scan did not see.
    /// Returns the feed position right after the state the scan started from.
    async fn scan(&mut self) -> Result<Resume, SearchError> {
        self.last_attempt += 1;
        let generation = self.last_attempt;
        // Any rescan request so far is covered by this scan.
        self.rescans.borrow_and_update();
        // Position first, data second: events after `last_seq` may already be in the
        // scan, and replaying them is harmless (idempotent by key and timestamp).
        let info = call(self.client.shard_info(request(ShardInfoRequest {})))
            .await
            .map_err(|status| shard_error("ShardInfo", status))?;
        self.progress.connected.store(true, Ordering::Relaxed);
        let maps = call(self.client.list_maps(request(ListMapsRequest {})))
            .await
            .map_err(|status| shard_error("ListMaps", status))?
            .maps;
        let mut records = 0usize;
        for stats in maps {
            if !self.engine.is_indexed(&stats.map_name) {
                continue;
            }
            let kind = MapKind::try_from(stats.kind).unwrap_or(MapKind::Lww);
            records += self.scan_map(&stats.map_name, kind, generation).await?;
        }
        self.engine.end_scan(self.index, generation).await?;
        // Watched maps commit the scan; other maps keep it buffered, which counts as
        // indexed (their next read indexes it first).
        self.engine.commit_pending().await?;
        self.generation = generation;
        self.progress
            .committed_seq
            .store(info.last_seq, Ordering::Relaxed);
        self.progress
            .head_seq
            .store(info.last_seq, Ordering::Relaxed);
        *self.progress.epoch.lock() = info.epoch.clone();
        self.progress.scans.fetch_add(1, Ordering::Relaxed);
        if !self.progress.ready.swap(true, Ordering::Relaxed) {
            self.progress.ready_tx.send_modify(|_| {});
        }
        tracing::info!(records, epoch = %info.epoch, last_seq = info.last_seq, "shard scanned");
        Ok(Resume {
            epoch: info.epoch,
            next_seq: info.last_seq + 1,
        })
    }

    /// Pages through one map; returns the number of records seen.
    async fn scan_map(
        &mut self,
        map: &str,
        kind: MapKind,
        generation: u64,
    ) -> Result<usize, SearchError> {
        let mut after: Option<String> = None;
        let mut seen = 0usize;
        loop {
            let page = call(self.client.scan_map(request(ScanMapRequest {
                map_name: map.to_string(),
                kind: kind as i32,
                after_key: after.clone(),
                limit: SCAN_PAGE,
                since: None,
            })))
            .await
            .map_err(|status| shard_error("ScanMap", status))?;
            seen += page.records.len();
            let now = wall_clock_ms();
            let empty = page.records.is_empty();
            let updates = page
                .records
                .into_iter()
                .filter_map(|state| key_state_update(map, kind, state, now))
                .collect();
            let origin = Origin {
                shard: self.index,
                generation,
                committed: None,
            };
            self.engine.apply_from(updates, Some(origin)).await?;
            // A page that does not advance would loop forever: treat it as the end.
            if page.done || empty || after.as_deref() == Some(page.last_key.as_str()) {
                return Ok(seen);
            }
            after = Some(page.last_key);
        }
    }

    /// Follows the change feed from `position` until it fails or a rescan is needed.
    async fn tail(&mut self, position: &mut Resume, backoff: &mut Duration) -> TailEnd {
        let subscribe = SubscribeChangesRequest {
            map_names: Vec::new(),
            from_seq: position.next_seq,
            epoch: position.epoch.clone(),
        };
        let client = &mut self.client;
        let opened = tokio::time::timeout(
            CALL_TIMEOUT,
            local_feed::subscribe(&self.progress.addr, subscribe, |r| {
                client.subscribe_changes(r)
            }),
        )
        .await;
        let mut stream = match opened {
            Ok(Ok(stream)) => stream,
            Ok(Err(status)) if status.code() == Code::OutOfRange => {
                return TailEnd::Rescan(status.message().to_string())
            }
            Ok(Err(status)) => return TailEnd::Lost(status),
            Err(_) => {
                return TailEnd::Lost(Status::deadline_exceeded(
                    "SubscribeChanges did not open in time",
                ))
            }
        };
        self.progress.connected.store(true, Ordering::Relaxed);
        loop {
            let message = tokio::select! {
                _ = self.stop.wait_for(|stopped| *stopped) => return TailEnd::Stopped,
                changed = self.rescans.changed() => {
                    if changed.is_ok() {
                        return TailEnd::Rescan("indexed maps changed".into());
                    }
                    // The engine is gone; shutdown follows.
                    return TailEnd::Stopped;
                }
                message = stream.message() => message,
            };
            let batch = match message {
                Ok(Some(batch)) => batch,
                Ok(None) => return TailEnd::Lost(Status::unavailable("change feed ended")),
                Err(status) if status.code() == Code::OutOfRange => {
                    return TailEnd::Rescan(status.message().to_string())
                }
                Err(status) => return TailEnd::Lost(status),
            };
            // Receiving data proves the shard is back: reset the retry pause.
            *backoff = BACKOFF_MIN;
            if batch.epoch != position.epoch {
                return TailEnd::Rescan(format!("shard epoch changed to {}", batch.epoch));
            }
            match self.ingest(batch, position).await {
                Ok(None) => {}
                Ok(Some(end)) => return end,
                Err(SearchError::Stopped) => return TailEnd::Stopped,
                Err(error) => return TailEnd::Lost(Status::unavailable(error.to_string())),
            }
        }
    }

    /// Indexes one batch of events and advances `position` past it.
    async fn ingest(
        &mut self,
        batch: ChangeBatch,
        position: &mut Resume,
    ) -> Result<Option<TailEnd>, SearchError> {
        if batch.events.is_empty() {
            return Ok(None);
        }
        let now = wall_clock_ms();
        let mut next = position.next_seq;
        let mut updates = Vec::new();
        // OR-Map events carry one add or one removed tag; the key's full state is fetched
        // once per batch instead.
        let mut or_keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for event in batch.events {
            if event.seq < next {
                continue; // Already indexed (a replay after resuming).
            }
            if event.seq > next {
                return Ok(Some(TailEnd::Rescan(format!(
                    "change feed skipped from {next} to {}",
                    event.seq
                ))));
            }
            next = event.seq + 1;
            if !self.engine.is_indexed(&event.map_name) {
                continue;
            }
            self.collect(event, now, &mut updates, &mut or_keys);
        }
        for (map, keys) in or_keys {
            let keys: Vec<String> = keys.into_iter().collect();
            for chunk in keys.chunks(FETCH_CHUNK) {
                match self.fetch_or_keys(&map, chunk, now).await {
                    Ok(fetched) => updates.extend(fetched),
                    Err(status) => return Ok(Some(TailEnd::Lost(status))),
                }
            }
        }
        let last = next - 1;
        let origin = Origin {
            shard: self.index,
            generation: self.generation,
            committed: Some((self.progress.committed_seq.clone(), last)),
        };
        self.engine.apply_from(updates, Some(origin)).await?;
        self.progress.head_seq.fetch_max(last, Ordering::Relaxed);
        position.next_seq = next;
        Ok(None)
    }

    fn collect(
        &self,
        event: ChangeEvent,
        now: u64,
        updates: &mut Vec<DocUpdate>,
        or_keys: &mut BTreeMap<String, BTreeSet<String>>,
    ) {
        match EventType::try_from(event.event_type) {
            Ok(EventType::Put | EventType::Remove) => match event.record {
                Some(record) => {
                    updates.extend(lww_update(&event.map_name, &event.key, record, now))
                }
                None => {
                    tracing::warn!(map = %event.map_name, key = %event.key, "lww event without record ignored")
                }
            },
            Ok(EventType::OrAdd | EventType::OrRemove) => {
                or_keys.entry(event.map_name).or_default().insert(event.key);
            }
            Err(_) => tracing::warn!(
                event_type = event.event_type,
                "unknown change event type ignored"
            ),
        }
    }

    /// The current state of OR-Map `keys`; keys the shard no longer has come back empty.
    async fn fetch_or_keys(
        &mut self,
        map: &str,
        keys: &[String],
        now: u64,
    ) -> Result<Vec<DocUpdate>, Status> {
        let response = call(self.client.get_records(request(GetRecordsRequest {
            map_name: map.to_string(),
            kind: MapKind::Or as i32,
            keys: keys.to_vec(),
        })))
        .await?;
        let mut missing: BTreeSet<&str> = keys.iter().map(String::as_str).collect();
        let mut updates = Vec::with_capacity(keys.len());
        for state in response.records {
            missing.remove(state.key.as_str());
            updates.push(or_update(map, &state.key, state.or_records, now));
        }
        updates.extend(
            missing
                .into_iter()
                .map(|key| or_update(map, key, Vec::new(), now)),
        );
        Ok(updates)
    }
}

fn shard_error(call: &'static str, status: Status) -> SearchError {
    SearchError::Shard {
        call,
        code: status.code(),
        message: status.message().to_string(),
    }
}
