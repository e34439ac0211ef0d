//! The indexer thread: applies updates to the per-map indexes, commits them in batches,
//! and after each commit tells live searches what changed (§2.5).
//!
//! One thread owns every write so ingestion never blocks the async runtime, updates of
//! a key are applied in arrival order, and live-search events follow commit order.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tonic::Status;

use crate::document::{DocUpdate, Provenance};
use crate::engine::{MapState, Shared};
use crate::live::{classify, Delivery, LiveChange, LiveRegistry};

/// Where a batch of updates came from, for the shard bookkeeping.
pub(crate) struct Origin {
    /// Index of the shard follower (unique per follower, never reused).
    pub shard: usize,
    /// The shard's current scan generation.
    pub generation: u64,
    /// Set to `seq` once the batch is committed (the shard's indexed position).
    pub committed: Option<(Arc<AtomicU64>, u64)>,
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
    /// Commit now and report back.
    Flush(oneshot::Sender<()>),
    /// Commit and exit.
    Stop,
}

/// Commit batching of the indexer.
pub(crate) struct Settings {
    pub commit_interval: Duration,
    pub max_pending_docs: usize,
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

    fn has_work(&self) -> bool {
        !self.dirty.is_empty() || !self.committed.is_empty() || !self.waiters.is_empty()
    }
}

/// The indexer thread's main loop; returns when told to stop or when every engine
/// handle is gone.
pub(crate) fn run(shared: &Shared, commands: &Receiver<Command>, settings: &Settings) {
    let mut pending = Pending::default();
    // Commits are at least `commit_interval` apart. A change arriving after a quiet
    // spell is committed at once (after whatever is already queued), so sparse writes
    // are searchable in milliseconds; under load, changes batch up for one interval.
    let mut last_commit = Instant::now()
        .checked_sub(settings.commit_interval)
        .unwrap_or_else(Instant::now);
    loop {
        let command = match pending.since {
            None => commands.recv().ok(),
            Some(since) => {
                let due = since.max(last_commit + settings.commit_interval);
                match commands.recv_timeout(due.saturating_duration_since(Instant::now())) {
                    Ok(command) => Some(command),
                    Err(RecvTimeoutError::Timeout) => {
                        commit(shared, &mut pending);
                        last_commit = Instant::now();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => None,
                }
            }
        };
        match command {
            Some(Command::Apply { updates, origin }) => {
                apply(shared, &mut pending, updates, origin.as_ref());
                if let Some(Origin {
                    committed: Some(mark),
                    ..
                }) = origin
                {
                    pending.since.get_or_insert_with(Instant::now);
                    pending.committed.push(mark);
                }
                if pending.changes >= settings.max_pending_docs {
                    commit(shared, &mut pending);
                    last_commit = Instant::now();
                }
            }
            Some(Command::EndScan { shard, generation }) => {
                sweep(shared, &mut pending, shard, generation)
            }
            Some(Command::Unindex) => {
                commit(shared, &mut pending);
                unindex(shared);
            }
            Some(Command::Flush(done)) => {
                pending.waiters.push(done);
                commit(shared, &mut pending);
                last_commit = Instant::now();
            }
            Some(Command::Stop) | None => {
                commit(shared, &mut pending);
                tracing::debug!("indexer stopped");
                return;
            }
        }
    }
}

/// What a changed document means for the index.
enum IndexAction {
    Upsert(String),
    Delete,
}

fn apply(shared: &Shared, pending: &mut Pending, updates: Vec<DocUpdate>, origin: Option<&Origin>) {
    let provenance = origin.map(|o| Provenance {
        shard: o.shard,
        generation: o.generation,
    });
    // Updates arrive grouped by map, so remember the last map looked up.
    let mut current: Option<(String, Arc<MapState>)> = None;
    for update in updates {
        let state = match &current {
            Some((name, state)) if name == update.map() => state.clone(),
            _ => match shared.get_or_create(update.map()) {
                Ok(Some(state)) => {
                    current = Some((update.map().to_string(), state.clone()));
                    state
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
            let action = doc.apply(&update, provenance).then(|| {
                if doc.is_live() {
                    IndexAction::Upsert(doc.text())
                } else {
                    IndexAction::Delete
                }
            });
            if doc.is_empty() {
                docs.remove(key);
            }
            action
        };
        // Outside the values lock: adding a document can wait for tantivy's queue.
        match action {
            None => continue,
            Some(IndexAction::Upsert(text)) => {
                if let Err(error) = state.text.upsert(key, &text) {
                    tracing::error!(map = update.map(), key, %error, "indexing failed");
                    continue;
                }
            }
            Some(IndexAction::Delete) => state.text.delete(key),
        }
        pending.mark(update.map(), key);
    }
}

fn sweep(shared: &Shared, pending: &mut Pending, shard: usize, generation: u64) {
    let maps: Vec<(String, Arc<MapState>)> = shared
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
            !doc.is_empty()
        });
        for key in gone {
            state.text.delete(&key);
            pending.mark(&name, &key);
            swept += 1;
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

/// Commits every dirty map, then publishes live-search changes, indexed positions and
/// flush acknowledgements, in that order.
fn commit(shared: &Shared, pending: &mut Pending) {
    if !pending.has_work() {
        pending.since = None;
        return;
    }
    let work = std::mem::take(pending);
    let started = Instant::now();
    let mut documents = 0usize;
    for (map, keys) in work.dirty {
        let Some(state) = shared.get(&map) else {
            continue;
        };
        // The registry lock is held across commit and notification so a live search
        // being registered sees either the old index and every change, or the new one.
        let mut registry = state.live.lock();
        if let Err(error) = state.text.commit() {
            tracing::error!(map, %error, "commit failed");
            continue;
        }
        shared.commits.fetch_add(1, Ordering::Relaxed);
        documents += keys.len();
        if !registry.is_empty() {
            notify(shared, &state, &mut registry, &keys);
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
