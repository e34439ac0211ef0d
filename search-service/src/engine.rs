//! The search engine: one index per map, one-shot and live search, and the handle the
//! ingestion feeds. All tantivy work runs off the async runtime — writes and commits on
//! the indexer thread ([`crate::indexer`]), searches on `spawn_blocking`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::{oneshot, watch};
use topgun_proto::grpc::search::{search_event, SearchEvent, SearchHit as PbHit, SearchResponse};

use crate::document::{DocState, DocUpdate};
use crate::error::SearchError;
use crate::indexer::{self, Command, FlushScope, Origin};
use crate::live::{self, Joining, LiveRegistry, LiveSearch, NewSubscription};
use crate::maps::{map_folder, IndexedMaps};
use crate::text::matched_terms;
use crate::text_index::TextIndex;

/// Results returned when a request does not say how many (§2.3).
pub const DEFAULT_LIMIT: usize = 10;
/// Default minimum time between two commits: a change after a quiet spell is committed
/// at once, changes under load wait at most this long to become searchable.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_millis(50);
/// Pending documents that force a commit before the interval is over, so a bulk load
/// does not build one huge uncommitted segment.
pub const DEFAULT_MAX_PENDING_DOCS: usize = 20_000;
/// Buffered keys of maps nobody watches, over all maps, past which the largest buffers
/// are indexed without waiting for a search or a pause, so memory stays bounded. A
/// pending key costs its name in memory and ≈5 µs when it is finally indexed, so this
/// also bounds the first search after a long write burst (≈5 s at the default).
pub const DEFAULT_MAX_BUFFERED_DOCS: usize = 1_000_000;
/// Buffered keys are indexed once no change has arrived for this long: the work moves
/// to the pauses between write bursts instead of the first search after them.
pub const IDLE_INDEXING_DELAY: Duration = Duration::from_secs(1);
/// Events queued per live-search subscriber before it counts as too slow and is dropped.
pub const DEFAULT_SUBSCRIBER_BUFFER: usize = 1024;
/// Commands queued to the indexer thread; a full queue makes ingestion wait.
const COMMAND_QUEUE: usize = 64;

/// Settings of a [`SearchEngine`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Folder holding one sub-folder per map index; `None` keeps indexes in memory.
    pub index_dir: Option<PathBuf>,
    /// Maps to index.
    pub indexed_maps: IndexedMaps,
    /// See [`DEFAULT_COMMIT_INTERVAL`].
    pub commit_interval: Duration,
    /// See [`DEFAULT_MAX_PENDING_DOCS`].
    pub max_pending_docs: usize,
    /// See [`DEFAULT_MAX_BUFFERED_DOCS`].
    pub max_buffered_docs: usize,
    /// See [`DEFAULT_SUBSCRIBER_BUFFER`].
    pub subscriber_buffer: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            index_dir: None,
            indexed_maps: IndexedMaps::All,
            commit_interval: DEFAULT_COMMIT_INTERVAL,
            max_pending_docs: DEFAULT_MAX_PENDING_DOCS,
            max_buffered_docs: DEFAULT_MAX_BUFFERED_DOCS,
            subscriber_buffer: DEFAULT_SUBSCRIBER_BUFFER,
        }
    }
}

/// A search request, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    /// Map to search.
    pub map: String,
    /// Query text in tantivy's grammar (§2.2).
    pub query: String,
    /// Maximum results (of the initial snapshot, for a live search).
    pub limit: usize,
    /// Results below this score are dropped, after the top `limit` were taken.
    pub min_score: f64,
}

impl SearchQuery {
    /// A query with the protocol defaults: limit 10, no minimum score.
    pub fn new(map: impl Into<String>, query: impl Into<String>) -> Self {
        SearchQuery {
            map: map.into(),
            query: query.into(),
            limit: DEFAULT_LIMIT,
            min_score: 0.0,
        }
    }
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// Record key.
    pub key: String,
    /// MsgPack of the record's current value; `None` if it vanished since indexing.
    pub value: Option<Vec<u8>>,
    /// BM25 score.
    pub score: f32,
    /// The query's terms (§2.2), the same for every hit.
    pub matched_terms: Vec<String>,
}

impl From<SearchHit> for PbHit {
    fn from(hit: SearchHit) -> Self {
        PbHit {
            key: hit.key,
            value: hit.value.unwrap_or_else(|| crate::NIL_MSGPACK.to_vec()),
            score: f64::from(hit.score),
            matched_terms: hit.matched_terms,
        }
    }
}

/// Counters of a running engine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Documents with a value over all maps: what searches see, since a search first
    /// indexes what its map has buffered (live maps: as of their next commit).
    pub documents: u64,
    /// Maps with an index.
    pub maps: usize,
    /// Open live searches.
    pub subscriptions: usize,
    /// Live searches dropped because their subscriber could not keep up.
    pub dropped_subscribers: u64,
    /// Commits made.
    pub commits: u64,
}

/// One map: its index, the values results carry, and its live searches.
pub(crate) struct MapState {
    pub text: TextIndex,
    pub docs: RwLock<HashMap<String, DocState>>,
    /// Keys of `docs` that have a value (kept by the indexer), so counting documents
    /// needs neither a searcher nor the map's buffered writes indexed.
    pub documents: AtomicU64,
    /// Keys written since the map was last indexed (kept by the indexer); zero for a
    /// map someone watches.
    pub buffered: AtomicUsize,
    pub live: Arc<Mutex<LiveRegistry>>,
}

impl MapState {
    /// Turns (key, score) pairs into hits with current values, dropping scores below
    /// `min_score`.
    fn hits(&self, top: Vec<(String, f32)>, query: &SearchQuery) -> Vec<SearchHit> {
        let terms = matched_terms(&query.query);
        let docs = self.docs.read();
        top.into_iter()
            .filter(|(_, score)| f64::from(*score) >= query.min_score)
            .map(|(key, score)| SearchHit {
                value: docs.get(&key).and_then(|d| d.value()).map(<[u8]>::to_vec),
                key,
                score,
                matched_terms: terms.clone(),
            })
            .collect()
    }

    /// Top hits of `query` over the last commit. Blocking.
    fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, tantivy::TantivyError> {
        let Some(parsed) = self.text.parse(&query.query) else {
            return Ok(Vec::new());
        };
        let searcher = self.text.merged_searcher();
        let top = self.text.top(&searcher, parsed.as_ref(), query.limit)?;
        Ok(self.hits(top, query))
    }
}

/// State shared by the engine handles and the indexer thread.
pub(crate) struct Shared {
    pub maps: RwLock<HashMap<String, Arc<MapState>>>,
    pub indexed: RwLock<IndexedMaps>,
    pub index_dir: Option<PathBuf>,
    pub subscriber_buffer: usize,
    pub dropped_subscribers: AtomicU64,
    pub commits: AtomicU64,
    /// Commands sent to the indexer that can buffer writes (apply, end of scan) and
    /// that it has not finished yet.
    pub queued: AtomicUsize,
}

impl Shared {
    /// The state of `map`, if it has an index.
    pub fn get(&self, map: &str) -> Option<Arc<MapState>> {
        self.maps.read().get(map).cloned()
    }

    /// The state of `map`, creating an empty index for it; `None` when the map is not
    /// indexed. Blocking (a folder-backed index touches the disk).
    pub fn get_or_create(&self, map: &str) -> Result<Option<Arc<MapState>>, SearchError> {
        if let Some(state) = self.get(map) {
            return Ok(Some(state));
        }
        let mut maps = self.maps.write();
        // Checked under the maps lock, the same lock un-indexing takes, so a map that
        // was just excluded cannot be re-created behind its back.
        if !self.indexed.read().contains(map) {
            return Ok(None);
        }
        if let Some(state) = maps.get(map) {
            return Ok(Some(state.clone()));
        }
        let text = match &self.index_dir {
            None => TextIndex::in_ram().map_err(|source| SearchError::Index {
                map: map.to_string(),
                source,
            })?,
            Some(root) => {
                let path = map_folder(root, map);
                TextIndex::in_dir(&path).map_err(|source| SearchError::Folder { path, source })?
            }
        };
        let state = Arc::new(MapState {
            text,
            docs: RwLock::default(),
            documents: AtomicU64::new(0),
            buffered: AtomicUsize::new(0),
            live: Arc::default(),
        });
        maps.insert(map.to_string(), state.clone());
        tracing::debug!(map, "map index created");
        Ok(Some(state))
    }
}

/// Handle to the search engine; clones share one engine. The indexer thread stops
/// once [`SearchEngine::shutdown`] is called or every handle is dropped.
#[derive(Clone)]
pub struct SearchEngine {
    shared: Arc<Shared>,
    commands: SyncSender<Command>,
    indexed_changes: watch::Sender<u64>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl std::fmt::Debug for SearchEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchEngine").finish_non_exhaustive()
    }
}

impl SearchEngine {
    /// Starts an engine and its indexer thread.
    pub fn start(config: EngineConfig) -> Result<Self, SearchError> {
        if let Some(root) = &config.index_dir {
            std::fs::create_dir_all(root).map_err(|source| SearchError::Folder {
                path: root.clone(),
                source,
            })?;
        }
        let shared = Arc::new(Shared {
            maps: RwLock::default(),
            indexed: RwLock::new(config.indexed_maps.clone()),
            index_dir: config.index_dir.clone(),
            subscriber_buffer: config.subscriber_buffer.max(1),
            dropped_subscribers: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
        });
        let (commands, receiver) = sync_channel(COMMAND_QUEUE);
        let settings = indexer::Settings {
            commit_interval: config.commit_interval,
            max_pending_docs: config.max_pending_docs.max(1),
            max_buffered_docs: config.max_buffered_docs.max(1),
        };
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("search-indexer".into())
            .spawn(move || {
                indexer::lower_priority();
                indexer::run(&thread_shared, &receiver, &settings)
            })
            .map_err(|source| SearchError::Io {
                context: "cannot start the indexer thread".into(),
                source,
            })?;
        let (indexed_changes, _) = watch::channel(0);
        Ok(SearchEngine {
            shared,
            commands,
            indexed_changes,
            thread: Arc::new(Mutex::new(Some(thread))),
        })
    }

    async fn send(&self, command: Command) -> Result<(), SearchError> {
        let counted = command.may_buffer();
        if counted {
            self.shared.queued.fetch_add(1, Ordering::SeqCst);
        }
        let sent = self.send_counted(command).await;
        if counted && sent.is_err() {
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
        }
        sent
    }

    async fn send_counted(&self, command: Command) -> Result<(), SearchError> {
        match self.commands.try_send(command) {
            Ok(()) => Ok(()),
            Err(TrySendError::Disconnected(_)) => Err(SearchError::Stopped),
            // The indexer is behind: wait for room off the runtime, which also makes
            // the producer (a shard's ingestion) slow down.
            Err(TrySendError::Full(command)) => {
                let commands = self.commands.clone();
                tokio::task::spawn_blocking(move || commands.send(command))
                    .await
                    .map_err(|e| SearchError::Task(e.to_string()))?
                    .map_err(|_| SearchError::Stopped)
            }
        }
    }

    /// Queues `updates` for indexing; they become searchable with the next commit.
    pub async fn apply(&self, updates: Vec<DocUpdate>) -> Result<(), SearchError> {
        self.apply_from(updates, None).await
    }

    pub(crate) async fn apply_from(
        &self,
        updates: Vec<DocUpdate>,
        origin: Option<Origin>,
    ) -> Result<(), SearchError> {
        if updates.is_empty() && origin.is_none() {
            return Ok(());
        }
        self.send(Command::Apply { updates, origin }).await
    }

    /// Removes every document of `shard` that scan `generation` did not confirm.
    pub(crate) async fn end_scan(&self, shard: usize, generation: u64) -> Result<(), SearchError> {
        self.send(Command::EndScan { shard, generation }).await
    }

    /// Commits everything queued so far, including the buffered writes of maps nobody
    /// searched; returns once it is all in the indexes.
    pub async fn flush(&self) -> Result<(), SearchError> {
        self.flush_scope(FlushScope::All).await
    }

    /// Commits what watched maps have pending; buffered writes stay buffered (they
    /// already count as indexed: any read of their map indexes them first).
    pub(crate) async fn commit_pending(&self) -> Result<(), SearchError> {
        self.flush_scope(FlushScope::Pending).await
    }

    /// Before a one-shot read of `map`: indexes and commits its buffered writes, and
    /// those of everything queued before, so the read sees them.
    async fn flush_map(&self, map: &str) -> Result<(), SearchError> {
        if !self.must_flush(map) {
            return Ok(());
        }
        self.flush_map_now(map).await
    }

    /// [`Self::flush_map`] without the shortcut: always waits for the indexer to have
    /// handled everything queued before.
    async fn flush_map_now(&self, map: &str) -> Result<(), SearchError> {
        match self.flush_scope(FlushScope::Map(map.to_string())).await {
            // The indexer indexed every buffer when it stopped: reads go on as they are.
            Err(SearchError::Stopped) => Ok(()),
            other => other,
        }
    }

    /// Whether a read of `map` must wait for the indexer: not when nothing is buffered
    /// for it and nothing queued can buffer more (or it is watched, so its writes are
    /// not buffered and a read does not wait for them, as before). Spares searches the
    /// round trip through the indexer whenever it cannot change their result.
    fn must_flush(&self, map: &str) -> bool {
        // The queue first: once it reads empty, every buffer change made before is
        // visible (the indexer counts a command done after its buffer changes).
        let idle = self.shared.queued.load(Ordering::SeqCst) == 0;
        match self.shared.get(map) {
            None => !idle,
            Some(state) => {
                state.buffered.load(Ordering::SeqCst) > 0
                    || (!idle && !state.live.lock().is_watched())
            }
        }
    }

    async fn flush_scope(&self, scope: FlushScope) -> Result<(), SearchError> {
        let (done, wait) = oneshot::channel();
        self.send(Command::Flush { scope, done }).await?;
        wait.await.map_err(|_| SearchError::Stopped)
    }

    /// One-shot search (§2.3). A map without an index, an unparsable query or an
    /// unknown field gives zero hits. Sees every update queued before it: the map's
    /// buffered writes are indexed first.
    pub async fn search(&self, query: SearchQuery) -> Result<Vec<SearchHit>, SearchError> {
        self.flush_map(&query.map).await?;
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let Some(state) = shared.get(&query.map) else {
                return Ok(Vec::new());
            };
            state.search(&query).map_err(|source| SearchError::Index {
                map: query.map.clone(),
                source,
            })
        })
        .await
        .map_err(|e| SearchError::Task(e.to_string()))?
    }

    /// Starts a live search (§2.5): the stream yields the initial top-`limit` results,
    /// then a change each time a write makes a document enter, stay in (UPDATE) or
    /// leave the result set.
    pub async fn subscribe(&self, query: SearchQuery) -> Result<LiveSearch, SearchError> {
        let shared = self.shared.clone();
        let map = query.map.clone();
        let opened = tokio::task::spawn_blocking(move || {
            // Marked watched first: from here on the indexer indexes the map's writes
            // as they come, and the flush below indexes what it buffered before.
            Ok::<_, SearchError>(
                shared
                    .get_or_create(&map)?
                    .map(|state| (Joining::start(&state.live), state)),
            )
        })
        .await
        .map_err(|e| SearchError::Task(e.to_string()))??;
        let Some((joining, state)) = opened else {
            return Ok(LiveSearch::finished(initial_event(Vec::new())));
        };
        // Always through the indexer: the map counts as watched already, but a write
        // it was buffering while the mark was set must be in the snapshot.
        self.flush_map_now(&query.map).await?;
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            // Holding the registry lock keeps commits of this map out until the
            // subscription is registered: every later commit's changes reach it, and
            // none that the snapshot already reflects are missed.
            let mut registry = state.live.lock();
            // Un-indexed meanwhile: its subscriptions were ended, so is this one.
            if !shared
                .get(&query.map)
                .is_some_and(|current| Arc::ptr_eq(&current, &state))
            {
                return Ok(LiveSearch::finished(initial_event(Vec::new())));
            }
            let parsed = state.text.parse(&query.query);
            let hits = match &parsed {
                Some(parsed) => {
                    let searcher = state.text.searcher();
                    let top = state
                        .text
                        .top(&searcher, parsed.as_ref(), query.limit)
                        .map_err(|source| SearchError::Index {
                            map: query.map.clone(),
                            source,
                        })?;
                    state.hits(top, &query)
                }
                None => Vec::new(),
            };
            let cache: HashSet<String> = hits.iter().map(|hit| hit.key.clone()).collect();
            let live = live::register(
                &state.live,
                &mut registry,
                NewSubscription {
                    query: parsed,
                    terms: matched_terms(&query.query),
                    min_score: query.min_score,
                    cache,
                    initial: initial_event(hits),
                    buffer: shared.subscriber_buffer,
                },
            );
            // The subscription now keeps the map watched.
            drop(registry);
            drop(joining);
            Ok(live)
        })
        .await
        .map_err(|e| SearchError::Task(e.to_string()))?
    }

    /// The maps currently indexed.
    pub fn indexed_maps(&self) -> IndexedMaps {
        self.shared.indexed.read().clone()
    }

    /// Whether `map` is indexed.
    pub fn is_indexed(&self, map: &str) -> bool {
        self.shared.indexed.read().contains(map)
    }

    /// Changes which maps are indexed, at runtime. Maps that leave the set lose their
    /// index; their live searches get LEAVE for every result and then end with
    /// FAILED_PRECONDITION. Maps that join it are filled by a rescan of every shard.
    pub async fn set_indexed_maps(&self, maps: IndexedMaps) -> Result<(), SearchError> {
        let previous = std::mem::replace(&mut *self.shared.indexed.write(), maps.clone());
        if !previous.is_subset_of(&maps) {
            self.send(Command::Unindex).await?;
        }
        if !maps.is_subset_of(&previous) {
            // The ingestion watches this counter and rescans.
            self.indexed_changes.send_modify(|n| *n += 1);
        }
        Ok(())
    }

    /// Notified each time the indexed set gains maps that need a rescan.
    pub(crate) fn watch_indexed_changes(&self) -> watch::Receiver<u64> {
        self.indexed_changes.subscribe()
    }

    /// Ends every live search with `status` (after the events already queued), so a
    /// draining server is not held open by endless streams.
    pub fn end_live_searches(&self, status: &tonic::Status) {
        let maps: Vec<Arc<MapState>> = self.shared.maps.read().values().cloned().collect();
        for state in maps {
            let mut registry = state.live.lock();
            for sub in registry.subs_mut().iter() {
                sub.end_with(status.clone());
            }
            registry.subs_mut().clear();
        }
    }

    /// Current counters.
    pub fn stats(&self) -> EngineStats {
        let maps = self.shared.maps.read();
        EngineStats {
            documents: maps
                .values()
                .map(|m| m.documents.load(Ordering::Relaxed))
                .sum(),
            maps: maps.len(),
            subscriptions: maps.values().map(|m| m.live.lock().len()).sum(),
            dropped_subscribers: self.shared.dropped_subscribers.load(Ordering::Relaxed),
            commits: self.shared.commits.load(Ordering::Relaxed),
        }
    }

    /// Commits what is pending and stops the indexer thread; later calls fail with
    /// [`SearchError::Stopped`].
    pub async fn shutdown(&self) {
        let _ = self.send(Command::Stop).await;
        let thread = self.thread.lock().take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// The first event of a live search.
fn initial_event(hits: Vec<SearchHit>) -> SearchEvent {
    SearchEvent {
        kind: Some(search_event::Kind::Initial(SearchResponse {
            hits: hits.into_iter().map(PbHit::from).collect(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use rmpv::Value;
    use topgun_proto::grpc::search::{ChangeType, SearchChange};
    use topgun_proto::hlc::Timestamp;
    use topgun_proto::wire::{decode_value, encode_value};

    fn put(map: &str, key: &str, millis: u64, title: Option<&str>) -> DocUpdate {
        DocUpdate::Lww {
            map: map.into(),
            key: key.into(),
            timestamp: Timestamp::new(millis, 0, "test"),
            value: title
                .map(|t| encode_value(&Value::Map(vec![(Value::from("title"), Value::from(t))]))),
        }
    }

    fn title_of(value: &[u8]) -> String {
        let value = decode_value(value).expect("msgpack");
        value["title"].as_str().unwrap_or_default().to_string()
    }

    async fn engine_with(updates: Vec<DocUpdate>) -> SearchEngine {
        let engine = SearchEngine::start(EngineConfig::default()).expect("start");
        engine.apply(updates).await.expect("apply");
        engine.flush().await.expect("flush");
        engine
    }

    #[tokio::test]
    async fn search_returns_values_in_score_order() {
        let engine = engine_with(vec![
            put("articles", "a1", 1, Some("Intro to machine learning")),
            put(
                "articles",
                "a2",
                1,
                Some("Machine learning, machine learning everywhere"),
            ),
            put("articles", "a3", 1, Some("Cooking pasta")),
            put("other", "o1", 1, Some("machine")),
        ])
        .await;
        let hits = engine
            .search(SearchQuery::new("articles", "Machine LEARNING"))
            .await
            .expect("search");
        let keys: Vec<&str> = hits.iter().map(|h| h.key.as_str()).collect();
        assert_eq!(keys, vec!["a2", "a1"]);
        assert!(hits[0].score > hits[1].score);
        assert_eq!(
            title_of(hits[1].value.as_deref().expect("value")),
            "Intro to machine learning"
        );
        assert_eq!(hits[0].matched_terms, vec!["machine", "learning"]);
        assert!(engine
            .search(SearchQuery::new("missing", "machine"))
            .await
            .expect("search")
            .is_empty());
        assert!(engine
            .search(SearchQuery::new("articles", "title:machine"))
            .await
            .expect("ok")
            .is_empty());
        assert_eq!(engine.stats().documents, 4);
        engine.shutdown().await;
    }

    #[tokio::test]
    async fn min_score_applies_after_the_limit() {
        let engine = engine_with(vec![
            put("m", "strong", 1, Some("rust rust rust")),
            put(
                "m",
                "weak",
                1,
                Some("rust and a lot of other words in this long title"),
            ),
        ])
        .await;
        let all = engine
            .search(SearchQuery::new("m", "rust"))
            .await
            .expect("search");
        assert_eq!(all.len(), 2);
        let threshold = f64::from(all[0].score + all[1].score) / 2.0;
        let query = SearchQuery {
            min_score: threshold,
            ..SearchQuery::new("m", "rust")
        };
        let kept = engine.search(query.clone()).await.expect("search");
        assert_eq!(
            kept.iter().map(|h| h.key.as_str()).collect::<Vec<_>>(),
            vec!["strong"]
        );
        // limit 1 takes the best first; the minimum then removes nothing more.
        let one = engine
            .search(SearchQuery { limit: 1, ..query })
            .await
            .expect("search");
        assert_eq!(one.len(), 1);
        engine.shutdown().await;
    }

    #[tokio::test]
    async fn removed_records_leave_the_index_and_stale_writes_are_ignored() {
        let engine = engine_with(vec![put("m", "k", 5, Some("ephemeral note"))]).await;
        engine
            .apply(vec![put("m", "k", 6, None)])
            .await
            .expect("remove");
        engine.flush().await.expect("flush");
        assert!(engine
            .search(SearchQuery::new("m", "ephemeral"))
            .await
            .expect("search")
            .is_empty());
        // A delayed older put must not resurrect the record.
        engine
            .apply(vec![put("m", "k", 4, Some("ephemeral again"))])
            .await
            .expect("apply");
        engine.flush().await.expect("flush");
        assert!(engine
            .search(SearchQuery::new("m", "ephemeral"))
            .await
            .expect("search")
            .is_empty());
        assert_eq!(engine.stats().documents, 0);
        engine.shutdown().await;
    }

    async fn next_change(stream: &mut LiveSearch) -> SearchChange {
        let event = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("an event in time")
            .expect("stream open")
            .expect("not an error");
        match event.kind {
            Some(search_event::Kind::Change(change)) => change,
            other => panic!("expected a change, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn live_search_enter_update_leave() {
        let engine = engine_with(vec![put("p", "p1", 1, Some("wireless mouse"))]).await;
        let query = SearchQuery::new("p", "wireless");
        let mut stream = engine.subscribe(query).await.expect("subscribe");
        let Some(Ok(SearchEvent {
            kind: Some(search_event::Kind::Initial(initial)),
        })) = stream.next().await
        else {
            panic!("initial results first");
        };
        assert_eq!(initial.hits.len(), 1);
        assert_eq!(initial.hits[0].key, "p1");

        // A new matching document enters.
        engine
            .apply(vec![put("p", "p2", 1, Some("wireless keyboard"))])
            .await
            .expect("apply");
        let enter = next_change(&mut stream).await;
        assert_eq!(
            (enter.key.as_str(), enter.change_type),
            ("p2", ChangeType::Enter as i32)
        );
        assert_eq!(title_of(&enter.value), "wireless keyboard");
        assert!(enter.score > 0.0);
        assert_eq!(enter.matched_terms, vec!["wireless"]);

        // A write to a still-matching document is an UPDATE.
        engine
            .apply(vec![put("p", "p1", 2, Some("wireless wireless mouse"))])
            .await
            .expect("apply");
        let update = next_change(&mut stream).await;
        assert_eq!(
            (update.key.as_str(), update.change_type),
            ("p1", ChangeType::Update as i32)
        );

        // Writing the term away is a LEAVE; so is removing the record.
        engine
            .apply(vec![put("p", "p1", 3, Some("bluetooth mouse"))])
            .await
            .expect("apply");
        let leave = next_change(&mut stream).await;
        assert_eq!(
            (leave.key.as_str(), leave.change_type),
            ("p1", ChangeType::Leave as i32)
        );
        assert_eq!((leave.score, leave.matched_terms.len()), (0.0, 0));
        assert_eq!(leave.value, crate::NIL_MSGPACK);
        engine
            .apply(vec![put("p", "p2", 2, None)])
            .await
            .expect("apply");
        let removed = next_change(&mut stream).await;
        assert_eq!(
            (removed.key.as_str(), removed.change_type),
            ("p2", ChangeType::Leave as i32)
        );

        // Writes that never matched send nothing; the next matching one does.
        engine
            .apply(vec![put("p", "p3", 1, Some("usb cable"))])
            .await
            .expect("apply");
        engine
            .apply(vec![put("p", "p4", 1, Some("wireless charger"))])
            .await
            .expect("apply");
        let enter = next_change(&mut stream).await;
        assert_eq!(enter.key, "p4");

        assert_eq!(engine.stats().subscriptions, 1);
        drop(stream);
        assert_eq!(engine.stats().subscriptions, 0);
        engine.shutdown().await;
    }

    #[tokio::test]
    async fn live_search_on_a_new_map_and_min_score() {
        let engine = SearchEngine::start(EngineConfig::default()).expect("start");
        let query = SearchQuery {
            min_score: 1e9,
            ..SearchQuery::new("fresh", "hello")
        };
        let mut strict = engine.subscribe(query).await.expect("subscribe");
        let mut open = engine
            .subscribe(SearchQuery::new("fresh", "hello"))
            .await
            .expect("subscribe");
        assert!(matches!(strict.next().await, Some(Ok(_))));
        assert!(matches!(open.next().await, Some(Ok(_))));
        engine
            .apply(vec![put("fresh", "k", 1, Some("hello"))])
            .await
            .expect("apply");
        assert_eq!(
            next_change(&mut open).await.change_type,
            ChangeType::Enter as i32
        );
        engine.flush().await.expect("flush");
        let nothing = tokio::time::timeout(Duration::from_millis(200), strict.next()).await;
        assert!(nothing.is_err(), "below minScore: no event");
        engine.shutdown().await;
    }

    #[tokio::test]
    async fn unindexing_a_map_ends_its_live_searches() {
        let engine = engine_with(vec![
            put("a", "k", 1, Some("hello")),
            put("b", "k", 1, Some("hello")),
        ])
        .await;
        let mut stream = engine
            .subscribe(SearchQuery::new("a", "hello"))
            .await
            .expect("subscribe");
        assert!(matches!(stream.next().await, Some(Ok(_))));
        engine
            .set_indexed_maps(IndexedMaps::parse("b"))
            .await
            .expect("set");
        let leave = next_change(&mut stream).await;
        assert_eq!(leave.change_type, ChangeType::Leave as i32);
        let end = stream
            .next()
            .await
            .and_then(Result::err)
            .expect("ends with a status");
        assert_eq!(end.code(), tonic::Code::FailedPrecondition);
        assert!(engine
            .search(SearchQuery::new("a", "hello"))
            .await
            .expect("search")
            .is_empty());
        assert_eq!(
            engine
                .search(SearchQuery::new("b", "hello"))
                .await
                .expect("search")
                .len(),
            1
        );
        // Writes to an excluded map are ignored.
        engine
            .apply(vec![put("a", "k2", 1, Some("hello"))])
            .await
            .expect("apply");
        engine.flush().await.expect("flush");
        assert!(engine
            .search(SearchQuery::new("a", "hello"))
            .await
            .expect("search")
            .is_empty());
        engine.shutdown().await;
        assert!(matches!(engine.flush().await, Err(SearchError::Stopped)));
    }

    /// Documents in the map's tantivy index as of its last commit.
    fn committed_docs(engine: &SearchEngine, map: &str) -> u64 {
        engine
            .shared
            .get(map)
            .map_or(0, |state| state.text.num_docs())
    }

    async fn keys_of(engine: &SearchEngine, map: &str, query: &str) -> Vec<String> {
        let mut keys: Vec<String> = engine
            .search(SearchQuery::new(map, query))
            .await
            .expect("search")
            .into_iter()
            .map(|hit| hit.key)
            .collect();
        keys.sort();
        keys
    }

    #[tokio::test]
    async fn writes_to_an_unwatched_map_wait_for_a_search_and_the_last_one_wins() {
        let engine = SearchEngine::start(EngineConfig::default()).expect("start");
        engine
            .apply(vec![
                put("m", "k1", 1, Some("alpha first")),
                put("m", "k2", 1, Some("alpha second")),
            ])
            .await
            .expect("apply");
        // The indexer has the writes (this barrier commits watched maps only) ...
        engine.commit_pending().await.expect("barrier");
        assert_eq!(engine.stats().documents, 2, "buffered writes count");
        // ... but nothing went to tantivy.
        assert_eq!(committed_docs(&engine, "m"), 0);
        assert_eq!(engine.stats().commits, 0);
        assert_eq!(keys_of(&engine, "m", "alpha").await, vec!["k1", "k2"]);
        assert_eq!(
            (committed_docs(&engine, "m"), engine.stats().commits),
            (2, 1)
        );
        // Nothing buffered or queued: the next search need not wait for the indexer.
        assert!(!engine.must_flush("m"));
        assert!(!engine.must_flush("missing"));

        engine
            .apply(vec![
                // Indexed key, deleted then written again: present, new text.
                put("m", "k1", 2, None),
                put("m", "k1", 3, Some("alpha again")),
                // Indexed key, written then deleted: absent.
                put("m", "k2", 2, Some("alpha changed")),
                put("m", "k2", 3, None),
                // Never indexed, written then deleted: absent.
                put("m", "k3", 1, Some("alpha new")),
                put("m", "k3", 2, None),
                // Never indexed, deleted then written: present.
                put("m", "k4", 1, None),
                put("m", "k4", 2, Some("alpha fresh")),
            ])
            .await
            .expect("apply");
        engine.commit_pending().await.expect("barrier");
        assert!(engine.must_flush("m"));
        assert_eq!(
            (committed_docs(&engine, "m"), engine.stats().commits),
            (2, 1)
        );
        assert_eq!(engine.stats().documents, 2);
        assert_eq!(keys_of(&engine, "m", "alpha").await, vec!["k1", "k4"]);
        assert!(keys_of(&engine, "m", "first changed new").await.is_empty());
        let hits = engine
            .search(SearchQuery::new("m", "again"))
            .await
            .expect("search");
        assert_eq!(
            title_of(hits[0].value.as_deref().expect("value")),
            "alpha again"
        );
        // One commit for the whole buffer; searching again commits nothing.
        assert_eq!(
            (committed_docs(&engine, "m"), engine.stats().commits),
            (2, 2)
        );
        engine.shutdown().await;
    }

    #[tokio::test]
    async fn a_search_flushes_only_its_own_map() {
        let engine = SearchEngine::start(EngineConfig::default()).expect("start");
        engine
            .apply(vec![
                put("a", "k", 1, Some("hello")),
                put("b", "k", 1, Some("hello")),
            ])
            .await
            .expect("apply");
        assert_eq!(keys_of(&engine, "a", "hello").await, vec!["k"]);
        assert_eq!(committed_docs(&engine, "a"), 1);
        assert_eq!(committed_docs(&engine, "b"), 0);
        // Shutting down indexes what is left; searches still answer afterwards.
        engine.shutdown().await;
        assert_eq!(committed_docs(&engine, "b"), 1);
        assert_eq!(keys_of(&engine, "b", "hello").await, vec!["k"]);
    }

    #[tokio::test]
    async fn subscribing_indexes_buffered_writes_into_the_initial_results() {
        let engine = SearchEngine::start(EngineConfig::default()).expect("start");
        engine
            .apply(vec![
                put("p", "p1", 1, Some("wireless mouse")),
                put("p", "p2", 1, Some("wireless keyboard")),
                put("p", "p3", 1, Some("usb cable")),
            ])
            .await
            .expect("apply");
        engine.commit_pending().await.expect("barrier");
        assert_eq!(committed_docs(&engine, "p"), 0);

        let mut stream = engine
            .subscribe(SearchQuery::new("p", "wireless"))
            .await
            .expect("subscribe");
        let Some(Ok(SearchEvent {
            kind: Some(search_event::Kind::Initial(initial)),
        })) = stream.next().await
        else {
            panic!("initial results first");
        };
        let mut initial: Vec<&str> = initial.hits.iter().map(|h| h.key.as_str()).collect();
        initial.sort_unstable();
        assert_eq!(initial, vec!["p1", "p2"]);

        // Watched now: writes are indexed as they come and reported live.
        engine
            .apply(vec![put("p", "p3", 2, Some("wireless cable"))])
            .await
            .expect("apply");
        let enter = next_change(&mut stream).await;
        assert_eq!(
            (enter.key.as_str(), enter.change_type),
            ("p3", ChangeType::Enter as i32)
        );
        assert_eq!(committed_docs(&engine, "p"), 3);

        // Nobody watches any more: writes are buffered again.
        drop(stream);
        engine
            .apply(vec![put("p", "p4", 1, Some("wireless hub"))])
            .await
            .expect("apply");
        engine.commit_pending().await.expect("barrier");
        assert_eq!(committed_docs(&engine, "p"), 3);
        assert_eq!(
            keys_of(&engine, "p", "wireless").await,
            vec!["p1", "p2", "p3", "p4"]
        );
        engine.shutdown().await;
    }

    #[tokio::test]
    async fn too_many_buffered_writes_flush_the_largest_map() {
        let config = EngineConfig {
            max_buffered_docs: 10,
            ..EngineConfig::default()
        };
        let engine = SearchEngine::start(config).expect("start");
        let small = (0..3).map(|i| put("small", &format!("s{i}"), 1, Some("word")));
        engine.apply(small.collect()).await.expect("apply");
        let big = (0..8).map(|i| put("big", &format!("b{i}"), 1, Some("word")));
        engine.apply(big.collect()).await.expect("apply");
        engine.commit_pending().await.expect("barrier");
        // 11 buffered > 10: the largest map went in, in one commit, the other waits.
        assert_eq!(committed_docs(&engine, "big"), 8);
        assert_eq!(committed_docs(&engine, "small"), 0);
        assert_eq!(engine.stats().commits, 1);
        // Rewriting buffered keys does not grow the buffers.
        for round in 2..6 {
            let again = (0..3).map(|i| put("small", &format!("s{i}"), round, Some("word")));
            engine.apply(again.collect()).await.expect("apply");
        }
        engine.commit_pending().await.expect("barrier");
        assert_eq!(engine.stats().commits, 1);
        assert_eq!(keys_of(&engine, "small", "word").await.len(), 3);
        engine.shutdown().await;
    }

    #[tokio::test]
    async fn buffered_writes_are_indexed_once_the_change_stream_pauses() {
        let engine = SearchEngine::start(EngineConfig::default()).expect("start");
        let writes = (0..5).map(|i| put("quiet", &format!("q{i}"), 1, Some("word")));
        engine.apply(writes.collect()).await.expect("apply");
        engine.commit_pending().await.expect("barrier");
        assert_eq!(committed_docs(&engine, "quiet"), 0, "still buffered");
        tokio::time::sleep(IDLE_INDEXING_DELAY + Duration::from_millis(500)).await;
        assert_eq!(committed_docs(&engine, "quiet"), 5, "indexed in the pause");
        assert_eq!(engine.stats().commits, 1);
        engine.shutdown().await;
    }

    #[tokio::test]
    async fn a_scan_sweep_reaches_buffered_and_indexed_keys() {
        let engine = SearchEngine::start(EngineConfig::default()).expect("start");
        let scan = |generation: u64, keys: &[&str]| {
            let updates = keys
                .iter()
                .map(|key| put("m", key, 1, Some("swept maybe")))
                .collect();
            let origin = Origin {
                shard: 0,
                generation,
                committed: None,
            };
            (updates, Some(origin))
        };
        let (updates, origin) = scan(1, &["a", "b", "c"]);
        engine.apply_from(updates, origin).await.expect("scan 1");
        engine.end_scan(0, 1).await.expect("end scan 1");
        assert_eq!(keys_of(&engine, "m", "swept").await, vec!["a", "b", "c"]);

        // Scan 2 sees a and d: b and c (indexed) go, and so does e, written by the
        // shard between the scans but only buffered.
        engine
            .apply_from(
                vec![put("m", "e", 1, Some("swept maybe"))],
                Some(Origin {
                    shard: 0,
                    generation: 1,
                    committed: None,
                }),
            )
            .await
            .expect("tail");
        let (updates, origin) = scan(2, &["a", "d"]);
        engine.apply_from(updates, origin).await.expect("scan 2");
        engine.end_scan(0, 2).await.expect("end scan 2");
        engine.commit_pending().await.expect("barrier");
        assert_eq!(committed_docs(&engine, "m"), 3, "the sweep is buffered too");
        assert_eq!(engine.stats().documents, 2);
        assert_eq!(keys_of(&engine, "m", "swept").await, vec!["a", "d"]);
        assert_eq!(committed_docs(&engine, "m"), 2);

        // A swept key written again replaces nothing twice.
        let (updates, origin) = scan(2, &["c"]);
        engine
            .apply_from(updates, origin)
            .await
            .expect("write c again");
        assert_eq!(keys_of(&engine, "m", "swept").await, vec!["a", "c", "d"]);
        assert_eq!(committed_docs(&engine, "m"), 3);
        engine.shutdown().await;
    }

    fn or_put(map: &str, key: &str, values: &[&str]) -> DocUpdate {
        DocUpdate::Or {
            map: map.into(),
            key: key.into(),
            values: values
                .iter()
                .map(|v| encode_value(&Value::from(*v)))
                .collect(),
        }
    }

    #[tokio::test]
    async fn an_emptied_and_refilled_key_keeps_one_document() {
        let engine = SearchEngine::start(EngineConfig::default()).expect("start");
        // An OR-Map key without entries is forgotten, unless its document still has
        // to be deleted: refilling it must replace that document, not add a second.
        for (round, watched) in [(1, false), (2, true)] {
            let map = format!("m{round}");
            let live = if watched {
                Some(
                    engine
                        .subscribe(SearchQuery::new(&map, "hello"))
                        .await
                        .expect("subscribe"),
                )
            } else {
                None
            };
            engine
                .apply(vec![or_put(&map, "k", &["hello"])])
                .await
                .expect("apply");
            engine.flush().await.expect("flush");
            engine
                .apply(vec![
                    or_put(&map, "k", &[]),
                    or_put(&map, "k", &["hello again"]),
                ])
                .await
                .expect("apply");
            engine.flush().await.expect("flush");
            assert_eq!(keys_of(&engine, &map, "hello").await, vec!["k"], "{map}");
            assert_eq!(committed_docs(&engine, &map), 1, "{map}");
            engine
                .apply(vec![or_put(&map, "k", &[])])
                .await
                .expect("apply");
            // (A live map's writes wait for their batch even for a search.)
            engine.flush().await.expect("flush");
            assert!(keys_of(&engine, &map, "hello").await.is_empty(), "{map}");
            assert_eq!(committed_docs(&engine, &map), 0, "{map}");
            drop(live);
        }
        engine.shutdown().await;
    }

    #[tokio::test]
    async fn unindexing_a_map_drops_its_buffered_writes() {
        let engine = SearchEngine::start(EngineConfig::default()).expect("start");
        engine
            .apply(vec![put("x", "k1", 1, Some("hello"))])
            .await
            .expect("apply");
        engine
            .set_indexed_maps(IndexedMaps::parse("y"))
            .await
            .expect("exclude x");
        assert!(keys_of(&engine, "x", "hello").await.is_empty());
        engine
            .set_indexed_maps(IndexedMaps::All)
            .await
            .expect("include x");
        engine
            .apply(vec![put("x", "k2", 1, Some("hello"))])
            .await
            .expect("apply");
        // A fresh index: only what was written since (the ingestion rescans the rest).
        assert_eq!(keys_of(&engine, "x", "hello").await, vec!["k2"]);
        assert_eq!(engine.stats().documents, 1);
        engine.shutdown().await;
    }

    #[tokio::test]
    async fn folder_backed_indexes_work_like_memory_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = EngineConfig {
            index_dir: Some(dir.path().to_path_buf()),
            ..EngineConfig::default()
        };
        let engine = SearchEngine::start(config).expect("start");
        engine
            .apply(vec![put("m/../x", "k", 1, Some("on disk"))])
            .await
            .expect("apply");
        engine.flush().await.expect("flush");
        assert_eq!(
            engine
                .search(SearchQuery::new("m/../x", "disk"))
                .await
                .expect("search")
                .len(),
            1
        );
        assert!(dir.path().join("map-m%2F%2E%2E%2Fx").is_dir());
        engine.shutdown().await;
    }
}
