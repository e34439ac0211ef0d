//! The indexer thread: applies updates to the per-map indexes, commits them in batches,
//! and after each commit tells live searches what changed (§2.5).
//!
//! One thread owns every write so ingestion never blocks the async runtime, updates of
//! a key are applied in arrival order, and live-search events follow commit order.
//!
//! Indexing is lazy, as upstream's (§2.1), without its full rebuilds: only maps that
//! someone watches (a live search, or one being set up) are indexed as writes arrive
//! and committed every `commit_interval`. Writes to any other map only update the
//! values held for results and leave their key in a per-map buffer; the buffer goes
//! into tantivy in one bulk commit when the map is read (a one-shot search, a new live
//! search), when the change stream pauses for `IDLE_INDEXING_DELAY`, when the buffers
//! grow past `max_buffered_docs`, and on a full flush or stop. A write burst nobody
//! reads thus costs no tantivy work while it lasts, and a busy map becomes one segment
//! per read or pause instead of one per 50 ms.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tonic::Status;

use crate::document::{DocState, DocUpdate, Provenance};
use crate::engine::{MapState, Shared};
use crate::live::{classify, Delivery, LiveChange, LiveRegistry};

/// Where a batch of updates came from, for the shard bookkeeping.
pub(crate) struct Origin {
    /// Index of the shard follower (unique per follower, never reused).
    pub shard: usize,
    /// The shard's current scan generation.
    pub generation: u64,
    /// Set to `seq` once the batch is indexed (the shard's indexed position): committed,
    /// or buffered, since a buffered update is flushed before any read of its map.
    pub committed: Option<(Arc<AtomicU64>, u64)>,
}

/// What a [`Command::Flush`] makes searchable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FlushScope {
    /// What watched maps have pending; buffers stay (they already count as indexed).
    Pending,
    /// The buffer of one map (and anything else it has pending, unless it is watched:
    /// a live map keeps its commit rhythm), before a read of that map.
    Map(String),
    /// Everything, buffers included.
    All,
}

/// Work for the indexer thread.
pub(crate) enum Command {
    /// Index these updates.
    Apply {
        updates: Vec<DocUpdate>,
        origin: Option<Origin>,
    },
    /// A full scan of a shard finished: sweep what it did not see.
    EndScan { shard: usize, generation: u64 },
    /// The indexed-map set shrank: drop the indexes of excluded maps.
    Unindex,
    /// Commit `scope` now and report back.
    Flush {
        scope: FlushScope,
        done: oneshot::Sender<()>,
    },
    /// Commit everything, buffers included, and exit.
    Stop,
}

impl Command {
    /// Whether the command can add to the buffers: the engine counts those in flight,
    /// so a search can tell that nothing it must wait for is queued.
    pub fn may_buffer(&self) -> bool {
        matches!(self, Command::Apply { .. } | Command::EndScan { .. })
    }
}

/// Commit batching of the indexer.
pub(crate) struct Settings {
    pub commit_interval: Duration,
    pub max_pending_docs: usize,
    pub max_buffered_docs: usize,
}

/// What the next commit must publish.
#[derive(Default)]
struct Pending {
    /// Keys changed per map since the last commit.
    dirty: HashMap<String, BTreeSet<String>>,
    changes: usize,
    committed: Vec<(Arc<AtomicU64>, u64)>,
    waiters: Vec<oneshot::Sender<()>>,
    /// When the oldest pending change arrived.
    since: Option<Instant>,
}

impl Pending {
    fn mark(&mut self, map: &str, key: &str) {
        self.since.get_or_insert_with(Instant::now);
        self.changes += 1;
        match self.dirty.get_mut(map) {
            Some(keys) => {
                keys.insert(key.to_string());
            }
            None => {
                self.dirty
                    .insert(map.to_string(), BTreeSet::from([key.to_string()]));
            }
        }
    }

    /// Takes the keys pending for `map` out of the next commit.
    fn take_map(&mut self, map: &str) -> BTreeSet<String> {
        let keys = self.dirty.remove(map).unwrap_or_default();
        self.changes = self.changes.saturating_sub(keys.len());
        keys
    }

    fn has_work(&self) -> bool {
        !self.dirty.is_empty() || !self.committed.is_empty() || !self.waiters.is_empty()
    }
}

/// Keys of one unwatched map whose searchable content changed since they were last
/// written to tantivy. Only the key is kept: the values held for results already
/// have the latest state, so the last update of a key wins when the buffer is written
/// (upsert if the key has a value then, delete otherwise).
struct Buffer {
    state: Arc<MapState>,
    keys: HashSet<String>,
}

/// The buffers of all unwatched maps.
#[derive(Default)]
struct Buffers {
    maps: HashMap<String, Buffer>,
    /// Keys over all buffers.
    keys: usize,
}

impl Buffers {
    fn insert(&mut self, map: &str, state: &Arc<MapState>, key: &str) {
        let buffer = match self.maps.get_mut(map) {
            Some(buffer) => buffer,
            None => self.maps.entry(map.to_string()).or_insert_with(|| Buffer {
                state: state.clone(),
                keys: HashSet::new(),
            }),
        };
        if !buffer.keys.contains(key) {
            buffer.keys.insert(key.to_string());
            buffer.state.buffered.fetch_add(1, Ordering::SeqCst);
            self.keys += 1;
        }
    }

    /// Takes the buffer of `map` out. Its map's `buffered` count stays until the caller
    /// has indexed the keys, so searches keep waiting for the indexer until then.
    fn take(&mut self, map: &str) -> Option<Buffer> {
        let buffer = self.maps.remove(map)?;
        self.keys -= buffer.keys.len();
        Some(buffer)
    }

    /// The map with the most buffered keys.
    fn largest(&self) -> Option<String> {
        self.maps
            .iter()
            .max_by_key(|(_, buffer)| buffer.keys.len())
            .map(|(map, _)| map.clone())
    }
}

/// True when someone watches the map, so its writes are indexed as they come.
fn is_watched(state: &MapState) -> bool {
    state.live.lock().is_watched()
}

/// Nice value of the indexer thread: indexing is background work, and request handling
/// should win the CPU when both compete.
const INDEXER_NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority to [`INDEXER_NICE`]. The tantivy
/// worker threads it starts (at every commit) inherit it. Best effort: without the
/// permission or off Linux the priority stays as it is.
pub(crate) fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), INDEXER_NICE) {
            tracing::debug!(error = %e, "could not lower the indexer thread's priority");
        }
    }
}

/// The indexer thread's main loop; returns when told to stop or when every engine
/// handle is gone.
pub(crate) fn run(shared: &Shared, commands: &Receiver<Command>, settings: &Settings) {
    let mut indexer = Indexer {
        shared,
        settings,
        pending: Pending::default(),
        buffers: Buffers::default(),
        // Commits are at least `commit_interval` apart. A change arriving after a quiet
        // spell is committed at once (after whatever is already queued), so sparse
        // writes are searchable in milliseconds; under load, changes batch up for one
        // interval.
        last_commit: Instant::now()
            .checked_sub(settings.commit_interval)
            .unwrap_or_else(Instant::now),
    };
    loop {
        let command = match indexer.pending.since {
            // Buffered keys are indexed in the first pause of the change stream.
            None if indexer.buffers.keys > 0 => {
                match commands.recv_timeout(crate::engine::IDLE_INDEXING_DELAY) {
                    Ok(command) => Some(command),
                    Err(RecvTimeoutError::Timeout) => {
                        indexer.unbuffer_all();
                        indexer.commit();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => None,
                }
            }
            None => commands.recv().ok(),
            Some(since) => {
                let due = since.max(indexer.last_commit + settings.commit_interval);
                match commands.recv_timeout(due.saturating_duration_since(Instant::now())) {
                    Ok(command) => Some(command),
                    Err(RecvTimeoutError::Timeout) => {
                        indexer.commit();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => None,
                }
            }
        };
        match command {
            Some(Command::Apply { updates, origin }) => {
                indexer.apply(updates, origin.as_ref());
                if let Some(Origin {
                    committed: Some(mark),
                    ..
                }) = origin
                {
                    indexer.indexed_up_to(mark);
                }
                if indexer.pending.changes >= settings.max_pending_docs {
                    indexer.commit();
                }
                indexer.spill_if_full();
                shared.queued.fetch_sub(1, Ordering::SeqCst);
            }
            Some(Command::EndScan { shard, generation }) => {
                indexer.sweep(shard, generation);
                indexer.spill_if_full();
                shared.queued.fetch_sub(1, Ordering::SeqCst);
            }
            Some(Command::Unindex) => {
                indexer.commit();
                unindex(shared);
                // Buffers of maps whose index is gone go with it.
                let buffers = &mut indexer.buffers;
                buffers.maps.retain(|map, buffer| {
                    let kept = shared
                        .get(map)
                        .is_some_and(|state| Arc::ptr_eq(&state, &buffer.state));
                    if !kept {
                        buffers.keys -= buffer.keys.len();
                        buffer.state.buffered.store(0, Ordering::SeqCst);
                    }
                    kept
                });
            }
            Some(Command::Flush { scope, done }) => match scope {
                FlushScope::Pending => {
                    indexer.pending.waiters.push(done);
                    indexer.commit();
                }
                FlushScope::Map(map) => {
                    indexer.flush_map(&map, false);
                    let _ = done.send(());
                }
                FlushScope::All => {
                    indexer.unbuffer_all();
                    indexer.pending.waiters.push(done);
                    indexer.commit();
                }
            },
            Some(Command::Stop) | None => {
                indexer.unbuffer_all();
                indexer.commit();
                tracing::debug!("indexer stopped");
                return;
            }
        }
    }
}

/// Keys whose index operations are prepared under one hold of a map's values lock
/// when a buffer is written: bounds both the memory of the prepared texts and how long
/// readers of the values wait.
const WRITE_CHUNK: usize = 1024;

/// What a changed document means for the index.
enum IndexAction {
    /// The key has no document yet: add one.
    Add(String),
    /// Replace the key's document.
    Replace(String),
    Delete,
    /// Not live and not in the index: nothing to do.
    Nothing,
}

impl IndexAction {
    /// The operation that brings the key's index entry in line with `doc`, which is
    /// recorded as done.
    fn for_doc(doc: &mut DocState) -> Self {
        if doc.is_live() {
            let text = doc.text();
            let action = if doc.in_index() {
                IndexAction::Replace(text)
            } else {
                IndexAction::Add(text)
            };
            doc.set_in_index(true);
            action
        } else if doc.in_index() {
            doc.set_in_index(false);
            IndexAction::Delete
        } else {
            IndexAction::Nothing
        }
    }

    /// Performs the operation on `state`'s index; false if tantivy refused it.
    fn perform(self, map: &str, key: &str, state: &MapState) -> bool {
        let added = match self {
            IndexAction::Add(text) => state.text.add(key, &text),
            IndexAction::Replace(text) => state.text.upsert(key, &text),
            IndexAction::Delete => {
                state.text.delete(key);
                Ok(())
            }
            IndexAction::Nothing => Ok(()),
        };
        if let Err(error) = &added {
            tracing::error!(map, key, %error, "indexing failed");
        }
        added.is_ok()
    }
}

/// The indexer thread's state.
struct Indexer<'a> {
    shared: &'a Shared,
    settings: &'a Settings,
    pending: Pending,
    buffers: Buffers,
    last_commit: Instant,
}

impl Indexer<'_> {
    fn apply(&mut self, updates: Vec<DocUpdate>, origin: Option<&Origin>) {
        let provenance = origin.map(|o| Provenance {
            shard: o.shard,
            generation: o.generation,
        });
        // Updates arrive grouped by map, so remember the last map looked up, and
        // whether it is watched. A subscription starting meanwhile flushes the map
        // through a command queued behind this one, so nothing buffered here is lost.
        let mut current: Option<(String, Arc<MapState>, bool)> = None;
        for update in updates {
            let (state, watched) = match &current {
                Some((name, state, watched)) if name == update.map() => (state.clone(), *watched),
                _ => match self.shared.get_or_create(update.map()) {
                    Ok(Some(state)) => {
                        let watched = is_watched(&state);
                        if watched {
                            // Buffered writes go first, so a key's writes reach tantivy
                            // in order.
                            self.unbuffer(update.map());
                        }
                        current = Some((update.map().to_string(), state.clone(), watched));
                        (state, watched)
                    }
                    // Not indexed (any more): the update is not for us.
                    Ok(None) => continue,
                    Err(error) => {
                        tracing::error!(map = update.map(), %error, "cannot open map index, update dropped");
                        continue;
                    }
                },
            };
            let key = update.key();
            let action = {
                let mut docs = state.docs.write();
                let doc = docs.entry(key.to_string()).or_default();
                let was_live = doc.is_live();
                let changed = doc.apply(&update, provenance);
                let live = doc.is_live();
                let action = (changed && watched).then(|| IndexAction::for_doc(doc));
                if doc.is_forgettable() {
                    docs.remove(key);
                }
                count_documents(&state, was_live, live);
                if !changed {
                    continue;
                }
                action
            };
            // Outside the values lock: adding a document can wait for tantivy's queue.
            match action {
                // Unwatched: the text is made when the buffer is written.
                None => self.buffers.insert(update.map(), &state, key),
                Some(action) => {
                    if action.perform(update.map(), key, &state) {
                        self.pending.mark(update.map(), key);
                    }
                }
            }
        }
    }

    /// Publishes a shard position once everything before it is indexed: at once if no
    /// commit is outstanding (the batch was buffered, or changed nothing), else with
    /// the next commit.
    fn indexed_up_to(&mut self, (cell, seq): (Arc<AtomicU64>, u64)) {
        if self.pending.dirty.is_empty() && self.pending.committed.is_empty() {
            cell.fetch_max(seq, Ordering::Relaxed);
        } else {
            self.pending.since.get_or_insert_with(Instant::now);
            self.pending.committed.push((cell, seq));
        }
    }

    fn sweep(&mut self, shard: usize, generation: u64) {
        let maps: Vec<(String, Arc<MapState>)> = self
            .shared
            .maps
            .read()
            .iter()
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect();
        let mut swept = 0usize;
        for (name, state) in maps {
            let mut gone = Vec::new();
            state.docs.write().retain(|key, doc| {
                if doc.sweep(shard, generation) {
                    gone.push(key.clone());
                }
                !doc.is_forgettable()
            });
            if gone.is_empty() {
                continue;
            }
            state
                .documents
                .fetch_sub(gone.len() as u64, Ordering::Relaxed);
            swept += gone.len();
            if !is_watched(&state) {
                // The keys no longer have a value: writing the buffer deletes them.
                for key in gone {
                    self.buffers.insert(&name, &state, &key);
                }
                continue;
            }
            self.unbuffer(&name);
            let actions: Vec<(String, IndexAction)> = {
                let mut docs = state.docs.write();
                gone.into_iter()
                    .map(|key| {
                        let Some(doc) = docs.get_mut(&key) else {
                            return (key, IndexAction::Nothing);
                        };
                        let action = IndexAction::for_doc(doc);
                        if doc.is_forgettable() {
                            docs.remove(&key);
                        }
                        (key, action)
                    })
                    .collect()
            };
            for (key, action) in actions {
                action.perform(&name, &key, &state);
                self.pending.mark(&name, &key);
            }
        }
        if swept > 0 {
            tracing::info!(
                shard,
                generation,
                swept,
                "removed documents the shard no longer holds"
            );
        }
    }

    /// Writes the buffer of `map` to tantivy; its keys join the next commit.
    fn unbuffer(&mut self, map: &str) {
        if let Some(buffer) = self.buffers.take(map) {
            write_buffer(map, &buffer);
            for key in &buffer.keys {
                self.pending.mark(map, key);
            }
            // Only reached for a map about to be committed: a watched map (its reads do
            // not wait for commits) or every map right before a full flush.
            buffer.state.buffered.store(0, Ordering::SeqCst);
        }
    }

    /// Writes every buffer to tantivy; the keys join the next commit.
    fn unbuffer_all(&mut self) {
        let maps: Vec<String> = self.buffers.maps.keys().cloned().collect();
        for map in maps {
            self.unbuffer(&map);
        }
    }

    /// Makes `map` current before a read: writes its buffer and commits the map alone,
    /// so other maps keep their rhythm. A watched map without a buffer is left alone
    /// (live maps commit every interval, as before); `force` commits its pending keys
    /// anyway.
    fn flush_map(&mut self, map: &str, force: bool) {
        let buffer = self.buffers.take(map);
        let state = match &buffer {
            Some(buffer) => buffer.state.clone(),
            None => match self.shared.get(map) {
                Some(state) => state,
                None => return,
            },
        };
        let has_pending = self.pending.dirty.contains_key(map);
        if buffer.is_none() && !(has_pending && (force || !is_watched(&state))) {
            return;
        }
        let mut keys = self.pending.take_map(map);
        if let Some(buffer) = buffer {
            write_buffer(map, &buffer);
            keys.extend(buffer.keys);
        }
        commit_map(self.shared, map, &state, &keys);
        state.buffered.store(0, Ordering::SeqCst);
    }

    /// Flushes the largest buffers in bulk once all buffers together pass
    /// `max_buffered_docs`, down to half of it, so a map written a lot and never read
    /// neither grows without bound nor commits on every further write.
    fn spill_if_full(&mut self) {
        if self.buffers.keys <= self.settings.max_buffered_docs {
            return;
        }
        let target = self.settings.max_buffered_docs / 2;
        while self.buffers.keys > target {
            let Some(map) = self.buffers.largest() else {
                break;
            };
            tracing::debug!(map, buffered = self.buffers.keys, "buffers full, flushing");
            self.flush_map(&map, true);
        }
    }

    /// Commits every dirty map, then publishes live-search changes, indexed positions
    /// and flush acknowledgements, in that order.
    fn commit(&mut self) {
        self.last_commit = Instant::now();
        let pending = &mut self.pending;
        if !pending.has_work() {
            pending.since = None;
            return;
        }
        let work = std::mem::take(pending);
        let started = Instant::now();
        let mut documents = 0usize;
        for (map, keys) in work.dirty {
            let Some(state) = self.shared.get(&map) else {
                continue;
            };
            if commit_map(self.shared, &map, &state, &keys) {
                documents += keys.len();
            }
        }
        for (cell, seq) in work.committed {
            cell.fetch_max(seq, Ordering::Relaxed);
        }
        for waiter in work.waiters {
            let _ = waiter.send(());
        }
        if documents > 0 {
            tracing::trace!(
                documents,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "committed"
            );
        }
    }
}

/// Keeps a map's count of documents with a value in step with one key's change.
fn count_documents(state: &MapState, was_live: bool, live: bool) {
    match (was_live, live) {
        (false, true) => {
            state.documents.fetch_add(1, Ordering::Relaxed);
        }
        (true, false) => {
            state.documents.fetch_sub(1, Ordering::Relaxed);
        }
        _ => {}
    }
}

/// Writes the buffered keys of `map` to tantivy as the values held now say: the last
/// write of each key wins.
fn write_buffer(map: &str, buffer: &Buffer) {
    let started = Instant::now();
    let state = &buffer.state;
    // In key order: tantivy then builds the segment's key dictionary and document store
    // in order, which makes the commit several times cheaper than in hash order.
    let mut keys: Vec<&String> = buffer.keys.iter().collect();
    keys.sort_unstable();
    for chunk in keys.chunks(WRITE_CHUNK) {
        let actions: Vec<(&String, IndexAction)> = {
            let mut docs = state.docs.write();
            chunk
                .iter()
                .map(|&key| {
                    // A key without an entry has no document: entries are only dropped
                    // once their document is deleted.
                    let Some(doc) = docs.get_mut(key) else {
                        return (key, IndexAction::Nothing);
                    };
                    let action = IndexAction::for_doc(doc);
                    if doc.is_forgettable() {
                        docs.remove(key);
                    }
                    (key, action)
                })
                .collect()
        };
        // Outside the values lock: adding a document can wait for tantivy's queue.
        for (key, action) in actions {
            action.perform(map, key, state);
        }
    }
    tracing::debug!(
        map,
        keys = buffer.keys.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "buffered writes indexed"
    );
}

/// Commits one map and sends its live searches their events for `keys`. Returns
/// whether the commit succeeded.
fn commit_map(shared: &Shared, map: &str, state: &MapState, keys: &BTreeSet<String>) -> bool {
    // The registry lock is held across commit and notification so a live search being
    // registered sees either the old index and every change, or the new one.
    let mut registry = state.live.lock();
    if let Err(error) = state.text.commit() {
        tracing::error!(map, %error, "commit failed");
        return false;
    }
    shared.commits.fetch_add(1, Ordering::Relaxed);
    if !registry.is_empty() {
        notify(shared, state, &mut registry, keys);
    }
    true
}

/// Sends each live search of `state` its ENTER / UPDATE / LEAVE events for `keys`.
fn notify(shared: &Shared, state: &MapState, registry: &mut LiveRegistry, keys: &BTreeSet<String>) {
    let searcher = state.text.searcher();
    let docs = state.docs.read();
    registry.subs_mut().retain_mut(|sub| {
        let scores = match &sub.query {
            None => HashMap::new(),
            Some(query) => match state.text.score_keys(
                &searcher,
                query.as_ref(),
                keys.iter().map(String::as_str),
            ) {
                Ok(scores) => scores,
                Err(error) => {
                    // Sending LEAVEs on an internal error would be a lie; skip the round.
                    tracing::error!(%error, "live search scoring failed");
                    return true;
                }
            },
        };
        for key in keys {
            let Some(change) = classify(
                sub.cache.contains(key),
                scores.get(key).copied(),
                sub.min_score,
            ) else {
                continue;
            };
            if change == LiveChange::Leave {
                sub.cache.remove(key);
            } else {
                sub.cache.insert(key.clone());
            }
            let value = docs.get(key).and_then(|doc| doc.value());
            match sub.offer(change.to_event(key, value, &sub.terms)) {
                Delivery::Sent => {}
                Delivery::Closed => return false,
                Delivery::Overflow => {
                    shared.dropped_subscribers.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("live search subscriber too slow, dropped");
                    sub.end_with(Status::resource_exhausted(
                        "live search subscriber could not keep up with changes; subscribe again",
                    ));
                    return false;
                }
            }
        }
        true
    });
}

/// Drops the indexes of maps that are no longer indexed, ending their live searches.
fn unindex(shared: &Shared) {
    let removed: Vec<(String, Arc<MapState>)> = {
        let mut maps = shared.maps.write();
        let indexed = shared.indexed.read();
        let names: Vec<String> = maps
            .keys()
            .filter(|m| !indexed.contains(m))
            .cloned()
            .collect();
        names
            .into_iter()
            .filter_map(|name| maps.remove(&name).map(|state| (name, state)))
            .collect()
    };
    for (map, state) in removed {
        let mut registry = state.live.lock();
        for sub in registry.subs_mut().iter() {
            // The map is cleared as far as its subscribers are concerned (§2.5).
            for key in &sub.cache {
                if sub.offer(LiveChange::Leave.to_event(key, None, &[])) != Delivery::Sent {
                    break;
                }
            }
            sub.end_with(Status::failed_precondition(format!(
                "map '{map}' is no longer indexed"
            )));
        }
        registry.subs_mut().clear();
        tracing::info!(map, "map no longer indexed, index dropped");
    }
}
