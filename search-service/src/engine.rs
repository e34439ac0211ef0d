//! The search engine: one index per map, one-shot and live search, and the handle the
//! ingestion feeds. All tantivy work runs off the async runtime — writes and commits on
//! the indexer thread ([`crate::indexer`]), searches on `spawn_blocking`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::{oneshot, watch};
use topgun_proto::grpc::search::{search_event, SearchEvent, SearchHit as PbHit, SearchResponse};

use crate::document::{DocState, DocUpdate};
use crate::error::SearchError;
use crate::indexer::{self, Command, Origin};
use crate::live::{self, LiveRegistry, LiveSearch, NewSubscription};
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
    /// Indexed documents over all maps (as of the last commits).
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
        let searcher = self.text.searcher();
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
        });
        let (commands, receiver) = sync_channel(COMMAND_QUEUE);
        let settings = indexer::Settings {
            commit_interval: config.commit_interval,
            max_pending_docs: config.max_pending_docs.max(1),
        };
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("search-indexer".into())
            .spawn(move || indexer::run(&thread_shared, &receiver, &settings))
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

    /// Commits everything queued so far; returns once it is searchable.
    pub async fn flush(&self) -> Result<(), SearchError> {
        let (done, wait) = oneshot::channel();
        self.send(Command::Flush(done)).await?;
        wait.await.map_err(|_| SearchError::Stopped)
    }

    /// One-shot search (§2.3). A map without an index, an unparsable query or an
    /// unknown field gives zero hits.
    pub async fn search(&self, query: SearchQuery) -> Result<Vec<SearchHit>, SearchError> {
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
        tokio::task::spawn_blocking(move || {
            let Some(state) = shared.get_or_create(&query.map)? else {
                return Ok(LiveSearch::finished(initial_event(Vec::new())));
            };
            // Holding the registry lock keeps commits of this map out until the
            // subscription is registered: every later commit's changes reach it, and
            // none that the snapshot already reflects are missed.
            let mut registry = state.live.lock();
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
            Ok(live::register(
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
            ))
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
            documents: maps.values().map(|m| m.text.num_docs()).sum(),
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
