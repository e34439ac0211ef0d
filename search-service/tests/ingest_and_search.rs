//! End to end: a real in-process sync shard (memory only) feeds a real search service;
//! records are written through the shard's ApplyBatch RPC and read back through the
//! search service's gRPC API. Everything is eventually consistent, so every check polls
//! with a deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use rmpv::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use topgun_proto::grpc::common::{LwwRecord, OrRecord, WriteConcern};
use topgun_proto::grpc::search::search_service_client::SearchServiceClient;
use topgun_proto::grpc::search::{
    search_event, ChangeType, IndexStatusRequest, SearchChange, SearchEvent, SearchRequest,
    SearchResponse,
};
use topgun_proto::grpc::sync::sync_service_client::SyncServiceClient;
use topgun_proto::grpc::sync::{op, ApplyBatchRequest, LwwRemove, Op};
use topgun_proto::hlc::Hlc;
use topgun_proto::wire::{decode_value, encode_value};
use topgun_search::SearchConfig;

/// Longest wait for anything eventually consistent.
const PATIENCE: Duration = Duration::from_secs(15);

/// A running service: its address and how to stop it.
struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(PATIENCE, self.task).await;
    }
}

async fn spawn_service<F, E>(serve: impl FnOnce(TcpListener, oneshot::Receiver<()>) -> F) -> Running
where
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel();
    let run = serve(listener, stopped);
    let task = tokio::spawn(async move {
        if let Err(error) = run.await {
            panic!("service failed: {error}");
        }
    });
    Running {
        addr,
        stop: Some(stop),
        task,
    }
}

async fn start_sync() -> Running {
    spawn_service(|listener, stopped| {
        topgun_sync::serve_with_listener(listener, topgun_sync::SyncConfig::default(), async {
            let _ = stopped.await;
        })
    })
    .await
}

async fn start_search(sync: SocketAddr) -> Running {
    let config = SearchConfig {
        sync_addrs: vec![format!("http://{sync}")],
        commit_interval_ms: 20,
        ..SearchConfig::default()
    };
    spawn_service(|listener, stopped| {
        topgun_search::serve_with_listener(listener, config, async {
            let _ = stopped.await;
        })
    })
    .await
}

/// Polls `check` until it returns `Some`, or panics with `what` after [`PATIENCE`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn channel(addr: SocketAddr) -> Channel {
    eventually("a connection", || async move {
        Channel::from_shared(format!("http://{addr}"))
            .ok()?
            .connect()
            .await
            .ok()
    })
    .await
}

/// Writes through the shard, like a gateway would.
struct Writer {
    client: SyncServiceClient<Channel>,
    clock: Hlc,
}

impl Writer {
    async fn new(sync: SocketAddr) -> Self {
        Writer {
            client: SyncServiceClient::new(channel(sync).await),
            clock: Hlc::new("test-writer"),
        }
    }

    async fn apply(&mut self, ops: Vec<Op>) {
        let request = ApplyBatchRequest {
            ops,
            write_concern: WriteConcern::Applied as i32,
            origin: None,
        };
        // The shard refuses writes until it has loaded; retry until it takes them.
        let client = &self.client;
        eventually("the shard to accept the batch", || {
            let request = request.clone();
            let mut client = client.clone();
            async move {
                let response = client.apply_batch(request).await.ok()?.into_inner();
                response.results.iter().all(|r| r.success).then_some(())
            }
        })
        .await;
    }

    fn put_op(&mut self, map: &str, key: &str, value: Value) -> Op {
        Op {
            op_id: String::new(),
            map_name: map.into(),
            key: key.into(),
            kind: Some(op::Kind::LwwPut(LwwRecord {
                value: encode_value(&value),
                timestamp: Some((&self.clock.now()).into()),
                ttl_ms: None,
            })),
        }
    }

    async fn put(&mut self, map: &str, key: &str, title: &str) {
        let op = self.put_op(map, key, doc(title));
        self.apply(vec![op]).await;
    }

    async fn remove(&mut self, map: &str, key: &str) {
        let op = Op {
            op_id: String::new(),
            map_name: map.into(),
            key: key.into(),
            kind: Some(op::Kind::LwwRemove(LwwRemove {})),
        };
        self.apply(vec![op]).await;
    }

    async fn or_add(&mut self, map: &str, key: &str, value: &str, tag: &str) {
        let op = Op {
            op_id: String::new(),
            map_name: map.into(),
            key: key.into(),
            kind: Some(op::Kind::OrAdd(OrRecord {
                value: encode_value(&Value::from(value)),
                timestamp: Some((&self.clock.now()).into()),
                tag: tag.into(),
                ttl_ms: None,
            })),
        };
        self.apply(vec![op]).await;
    }

    async fn or_remove(&mut self, map: &str, key: &str, tag: &str) {
        let op = Op {
            op_id: String::new(),
            map_name: map.into(),
            key: key.into(),
            kind: Some(op::Kind::OrRemoveTag(tag.into())),
        };
        self.apply(vec![op]).await;
    }
}

fn doc(title: &str) -> Value {
    Value::Map(vec![
        (Value::from("title"), Value::from(title)),
        (Value::from("views"), Value::from(7)),
    ])
}

fn title(value: &[u8]) -> String {
    let value = decode_value(value).expect("msgpack value");
    value["title"].as_str().unwrap_or_default().to_string()
}

fn search_request(map: &str, query: &str) -> SearchRequest {
    SearchRequest {
        map_name: map.into(),
        query: query.into(),
        limit: 0,
        min_score: None,
    }
}

async fn search(
    client: &SearchServiceClient<Channel>,
    map: &str,
    query: &str,
) -> Option<SearchResponse> {
    let mut client = client.clone();
    let mut request = tonic::Request::new(search_request(map, query));
    request.set_timeout(Duration::from_secs(5));
    Some(client.search(request).await.ok()?.into_inner())
}

fn keys(response: &SearchResponse) -> Vec<&str> {
    response.hits.iter().map(|h| h.key.as_str()).collect()
}

/// Waits until searching `query` returns exactly `expected` keys, in that order.
async fn wait_for_keys(
    client: &SearchServiceClient<Channel>,
    map: &str,
    query: &str,
    expected: &[&str],
) -> SearchResponse {
    eventually(
        &format!("'{query}' in {map} to return {expected:?}"),
        || async move {
            let response = search(client, map, query).await?;
            (keys(&response) == expected).then_some(response)
        },
    )
    .await
}

/// Subscribes to `query` in `map`; returns the stream and the initial results, which
/// must be its first event.
async fn subscribe(
    client: &SearchServiceClient<Channel>,
    map: &str,
    query: &str,
) -> (tonic::Streaming<SearchEvent>, SearchResponse) {
    let mut live = client
        .clone()
        .subscribe_search(search_request(map, query))
        .await
        .expect("subscribe")
        .into_inner();
    let first = live.next().await.expect("an event").expect("ok");
    let Some(search_event::Kind::Initial(initial)) = first.kind else {
        panic!("the initial results come first");
    };
    (live, initial)
}

async fn next_change(stream: &mut tonic::Streaming<SearchEvent>) -> SearchChange {
    let event = tokio::time::timeout(PATIENCE, stream.next())
        .await
        .expect("a live search event in time")
        .expect("stream open")
        .expect("not an error");
    match event.kind {
        Some(search_event::Kind::Change(change)) => change,
        other => panic!("expected a change, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_bootstrapped_and_tailed_records_in_score_order() {
    let sync = start_sync().await;
    let mut writer = Writer::new(sync.addr).await;
    // Written before the search service exists: found through the bootstrap scan.
    writer
        .put("articles", "a1", "Intro to machine learning")
        .await;
    writer
        .put("articles", "a2", "Machine learning for machine builders")
        .await;
    writer.put("articles", "a3", "Cooking pasta").await;
    writer.put("notes", "n1", "machine shop").await;

    let search_service = start_search(sync.addr).await;
    let client = SearchServiceClient::new(channel(search_service.addr).await);
    let response = wait_for_keys(&client, "articles", "machine learning", &["a2", "a1"]).await;
    assert!(response.hits[0].score > response.hits[1].score);
    assert_eq!(title(&response.hits[1].value), "Intro to machine learning");
    assert_eq!(response.hits[0].matched_terms, vec!["machine", "learning"]);

    // Written while running: found through the change feed, ranked by BM25.
    writer
        .put(
            "articles",
            "a4",
            "machine learning machine learning machine learning",
        )
        .await;
    let response =
        wait_for_keys(&client, "articles", "machine learning", &["a4", "a2", "a1"]).await;
    assert_eq!(
        title(&response.hits[0].value),
        "machine learning machine learning machine learning"
    );

    // A removed record disappears.
    writer.remove("articles", "a2").await;
    wait_for_keys(&client, "articles", "machine learning", &["a4", "a1"]).await;

    // OR-Map keys are searchable by all their entries' values, and lose removed ones.
    writer.or_add("tags", "t1", "red apple", "tag-1").await;
    writer.or_add("tags", "t1", "green pear", "tag-2").await;
    let response = wait_for_keys(&client, "tags", "pear", &["t1"]).await;
    let value = decode_value(&response.hits[0].value).expect("msgpack");
    assert_eq!(
        value,
        Value::Array(vec![Value::from("red apple"), Value::from("green pear")])
    );
    writer.or_remove("tags", "t1", "tag-2").await;
    wait_for_keys(&client, "tags", "pear", &[]).await;
    wait_for_keys(&client, "tags", "apple", &["t1"]).await;

    // Nonexistent maps, syntax errors and unknown fields: zero results, no error.
    let empty = search(&client, "missing", "machine")
        .await
        .expect("search ok");
    assert!(empty.hits.is_empty());
    assert!(search(&client, "articles", "title:machine")
        .await
        .expect("ok")
        .hits
        .is_empty());
    assert!(search(&client, "articles", "machine AND (")
        .await
        .expect("ok")
        .hits
        .is_empty());

    let status = eventually("no lag", || {
        let mut status_client = client.clone();
        async move {
            let status = status_client
                .index_status(IndexStatusRequest {})
                .await
                .ok()?
                .into_inner();
            (status.shards.len() == 1 && status.shards[0].lag_events == 0).then_some(status)
        }
    })
    .await;
    // a1, a3, a4, n1, t1.
    assert_eq!(status.documents, 5);
    assert!(status.shards[0].last_seq > 0);

    search_service.stop().await;
    sync.stop().await;
}

/// Waits until the replica has every event of its shard and counts `documents`.
async fn wait_indexed(client: &SearchServiceClient<Channel>, documents: u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let status = client
            .clone()
            .index_status(IndexStatusRequest {})
            .await
            .ok()
            .map(|r| r.into_inner());
        if status.as_ref().is_some_and(|status| {
            status.documents == documents
                && status.shards.len() == 1
                && status.shards[0].lag_events == 0
        }) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {documents} documents and no lag: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_unsearched_maps_are_found_by_the_next_search_and_subscription() {
    let sync = start_sync().await;
    let search_service = start_search(sync.addr).await;
    let client = SearchServiceClient::new(channel(search_service.addr).await);
    let mut writer = Writer::new(sync.addr).await;
    // Nobody searches these maps while they are written: the replica buffers the
    // writes instead of indexing them, last write of a key winning.
    // (Delete-then-write is covered by the engine's tests: here the shard would stamp
    // the delete with its own clock, which the writer's next put may not beat.)
    writer.put("quiet", "q1", "lazy fox").await;
    writer.put("quiet", "q2", "lazy dog").await;
    writer.remove("quiet", "q2").await;
    writer.put("quiet", "q3", "lazy cat").await;
    writer.put("quiet", "q1", "lazy red fox").await;
    writer.put("watched", "w1", "wireless mouse").await;
    // Caught up (buffered counts as indexed) ...
    wait_indexed(&client, 3).await;
    // ... so the very next search sees every write, without polling.
    let response = search(&client, "quiet", "lazy").await.expect("search");
    let mut found = keys(&response);
    found.sort_unstable();
    assert_eq!(found, vec!["q1", "q3"]);
    let response = search(&client, "quiet", "red").await.expect("search");
    assert_eq!(keys(&response), vec!["q1"]);
    assert_eq!(title(&response.hits[0].value), "lazy red fox");

    // A subscription's initial results include what was buffered; later writes are
    // live events.
    let (mut live, initial) = subscribe(&client, "watched", "wireless").await;
    assert_eq!(keys(&initial), vec!["w1"]);
    writer.put("watched", "w2", "wireless keyboard").await;
    let enter = next_change(&mut live).await;
    assert_eq!(
        (enter.key.as_str(), enter.change_type),
        ("w2", ChangeType::Enter as i32)
    );

    search_service.stop().await;
    sync.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_search_sees_enter_update_and_leave() {
    let sync = start_sync().await;
    let mut writer = Writer::new(sync.addr).await;
    writer.put("products", "p1", "wireless mouse").await;
    let search_service = start_search(sync.addr).await;
    let client = SearchServiceClient::new(channel(search_service.addr).await);
    wait_for_keys(&client, "products", "wireless", &["p1"]).await;

    let (mut live, initial) = subscribe(&client, "products", "wireless").await;
    assert_eq!(keys(&initial), vec!["p1"]);

    // p2 starts without the term, then gains it: ENTER.
    writer.put("products", "p2", "usb keyboard").await;
    writer.put("products", "p2", "wireless keyboard").await;
    let enter = next_change(&mut live).await;
    assert_eq!(
        (enter.key.as_str(), enter.change_type),
        ("p2", ChangeType::Enter as i32)
    );
    assert_eq!(title(&enter.value), "wireless keyboard");
    assert_eq!(enter.matched_terms, vec!["wireless"]);

    // More of the term: UPDATE with a new score.
    writer
        .put("products", "p2", "wireless wireless wireless keyboard")
        .await;
    let update = next_change(&mut live).await;
    assert_eq!(
        (update.key.as_str(), update.change_type),
        ("p2", ChangeType::Update as i32)
    );
    assert_ne!(update.score, enter.score);

    // The term goes away: LEAVE, score 0, no terms, nil value.
    writer.put("products", "p2", "wired keyboard").await;
    let leave = next_change(&mut live).await;
    assert_eq!(
        (leave.key.as_str(), leave.change_type),
        ("p2", ChangeType::Leave as i32)
    );
    assert_eq!((leave.score, leave.matched_terms.len()), (0.0, 0));
    assert_eq!(decode_value(&leave.value).expect("msgpack"), Value::Nil);

    // Removing a record in the result set: LEAVE.
    writer.remove("products", "p1").await;
    let removed = next_change(&mut live).await;
    assert_eq!(
        (removed.key.as_str(), removed.change_type),
        ("p1", ChangeType::Leave as i32)
    );

    search_service.stop().await;
    sync.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_search_service_catches_up_by_itself() {
    let sync = start_sync().await;
    let mut writer = Writer::new(sync.addr).await;
    writer.put("docs", "d1", "alpha").await;
    writer.put("docs", "d2", "alpha beta").await;

    let first = start_search(sync.addr).await;
    let client = SearchServiceClient::new(channel(first.addr).await);
    wait_for_keys(&client, "docs", "alpha", &["d1", "d2"]).await;
    first.stop().await;

    // Changes while no search service runs.
    writer.remove("docs", "d1").await;
    writer.put("docs", "d3", "alpha alpha gamma").await;
    writer.put("docs", "d2", "beta only").await;

    let second = start_search(sync.addr).await;
    let client = SearchServiceClient::new(channel(second.addr).await);
    wait_for_keys(&client, "docs", "alpha", &["d3"]).await;
    wait_for_keys(&client, "docs", "beta", &["d2"]).await;

    // And it keeps following the feed afterwards.
    writer.put("docs", "d4", "alpha").await;
    wait_for_keys(&client, "docs", "alpha", &["d4", "d3"]).await;

    second.stop().await;
    sync.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_service_survives_a_shard_restart() {
    let sync = start_sync().await;
    let sync_addr = sync.addr;
    let mut writer = Writer::new(sync_addr).await;
    writer.put("docs", "old", "before restart").await;
    let search_service = start_search(sync_addr).await;
    let client = SearchServiceClient::new(channel(search_service.addr).await);
    wait_for_keys(&client, "docs", "restart", &["old"]).await;

    // The shard restarts on the same port with empty memory: a new epoch. The search
    // service must notice, rescan, and drop what the shard no longer has.
    sync.stop().await;
    let listener = eventually("the shard's port to be free", || async move {
        TcpListener::bind(sync_addr).await.ok()
    })
    .await;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ =
            topgun_sync::serve_with_listener(listener, topgun_sync::SyncConfig::default(), async {
                let _ = stopped.await;
            })
            .await;
    });
    let mut writer = Writer::new(sync_addr).await;
    writer.put("docs", "new", "after restart").await;
    wait_for_keys(&client, "docs", "restart", &["new"]).await;

    search_service.stop().await;
    let _ = stop.send(());
    let _ = tokio::time::timeout(PATIENCE, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_serving_after_bootstrap_and_the_internal_token_is_enforced() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use topgun_proto::internal_auth::TokenAttach;

    const TOKEN: &str = "s3cret";
    let sync = spawn_service(|listener, stopped| {
        let config = topgun_sync::SyncConfig {
            internal_token: Some(TOKEN.into()),
            ..topgun_sync::SyncConfig::default()
        };
        topgun_sync::serve_with_listener(listener, config, async {
            let _ = stopped.await;
        })
    })
    .await;
    let config = SearchConfig {
        sync_addrs: vec![format!("http://{}", sync.addr)],
        internal_token: Some(TOKEN.into()),
        ..SearchConfig::default()
    };
    let search_service = spawn_service(|listener, stopped| {
        topgun_search::serve_with_listener(listener, config, async {
            let _ = stopped.await;
        })
    })
    .await;
    let channel = channel(search_service.addr).await;

    // SERVING only once the shard (which needs the token too) has been scanned.
    let health = HealthClient::new(channel.clone());
    eventually("SERVING", || {
        let mut health = health.clone();
        async move {
            let request = HealthCheckRequest {
                service: "topgun.search.v1.SearchService".into(),
            };
            let status = health.check(request).await.ok()?.into_inner().status;
            (status == ServingStatus::Serving as i32).then_some(())
        }
    })
    .await;

    let mut anonymous = SearchServiceClient::new(channel.clone());
    let refused = anonymous
        .search(search_request("m", "x"))
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let attach = TokenAttach::new(Some(TOKEN)).expect("ascii token");
    let mut member = SearchServiceClient::with_interceptor(channel, attach.interceptor());
    assert!(member.search(search_request("m", "x")).await.is_ok());

    search_service.stop().await;
    sync.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maps_added_to_the_indexed_set_at_runtime_are_scanned() {
    use topgun_search::{IndexedMaps, SearchEngine};

    let sync = start_sync().await;
    let mut writer = Writer::new(sync.addr).await;
    writer.put("kept", "k1", "shared word").await;
    writer.put("later", "l1", "shared word").await;

    let config = SearchConfig {
        sync_addrs: vec![format!("http://{}", sync.addr)],
        maps: "kept".into(),
        commit_interval_ms: 20,
        ..SearchConfig::default()
    };
    let engine = SearchEngine::start(config.engine_config()).expect("engine");
    let handle = engine.clone();
    let search_service = spawn_service(|listener, stopped| {
        topgun_search::serve_engine(listener, config, engine, async {
            let _ = stopped.await;
        })
    })
    .await;
    let client = SearchServiceClient::new(channel(search_service.addr).await);
    wait_for_keys(&client, "kept", "shared", &["k1"]).await;
    assert!(search(&client, "later", "shared")
        .await
        .expect("ok")
        .hits
        .is_empty());

    handle
        .set_indexed_maps(IndexedMaps::All)
        .await
        .expect("widen");
    wait_for_keys(&client, "later", "shared", &["l1"]).await;
    // And the feed keeps it current.
    writer.put("later", "l2", "shared shared").await;
    wait_for_keys(&client, "later", "shared", &["l2", "l1"]).await;

    handle
        .set_indexed_maps(IndexedMaps::parse("later"))
        .await
        .expect("narrow");
    wait_for_keys(&client, "kept", "shared", &[]).await;

    search_service.stop().await;
    sync.stop().await;
}

/// The shard addresses the replica reports in IndexStatus, in order.
async fn followed_shards(client: &SearchServiceClient<Channel>) -> Option<Vec<String>> {
    let mut client = client.clone();
    let status = client
        .index_status(IndexStatusRequest {})
        .await
        .ok()?
        .into_inner();
    Some(status.shards.into_iter().map(|s| s.shard).collect())
}

/// Waits until searching `query` returns exactly the keys `expected`, in any order.
async fn wait_for_key_set(
    client: &SearchServiceClient<Channel>,
    map: &str,
    query: &str,
    expected: &[&str],
) {
    let mut expected: Vec<&str> = expected.to_vec();
    expected.sort_unstable();
    let expected = &expected;
    eventually(
        &format!("'{query}' in {map} to return {expected:?}"),
        || async move {
            let response = search(client, map, query).await?;
            let mut found = keys(&response);
            found.sort_unstable();
            (found == *expected).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_follows_shards_added_and_removed_at_runtime() {
    let (sync1, sync2) = (start_sync().await, start_sync().await);
    let (url1, url2) = (
        format!("http://{}", sync1.addr),
        format!("http://{}", sync2.addr),
    );
    let mut writer1 = Writer::new(sync1.addr).await;
    let mut writer2 = Writer::new(sync2.addr).await;
    writer1.put("docs", "a1", "alpha one").await;
    writer2.put("docs", "b1", "alpha two").await;

    let (addrs_tx, addrs_rx) = tokio::sync::watch::channel(vec![url1.clone()]);
    let config = SearchConfig {
        sync_addrs: vec![url1.clone()],
        sync_addrs_updates: Some(addrs_rx),
        commit_interval_ms: 20,
        ..SearchConfig::default()
    };
    let search_service = spawn_service(|listener, stopped| {
        topgun_search::serve_with_listener(listener, config, async {
            let _ = stopped.await;
        })
    })
    .await;
    let client = SearchServiceClient::new(channel(search_service.addr).await);

    // Shard 1 only: shard 2's record is unknown.
    wait_for_key_set(&client, "docs", "alpha", &["a1"]).await;
    assert_eq!(
        followed_shards(&client).await.expect("status"),
        vec![url1.clone()]
    );

    // Shard 2 joins: its existing records are scanned and its new ones tailed.
    addrs_tx
        .send(vec![url1.clone(), url2.clone()])
        .expect("replica listens");
    wait_for_key_set(&client, "docs", "alpha", &["a1", "b1"]).await;
    writer2.put("docs", "b2", "alpha three").await;
    wait_for_key_set(&client, "docs", "alpha", &["a1", "b1", "b2"]).await;
    assert_eq!(
        followed_shards(&client).await.expect("status"),
        vec![url1.clone(), url2.clone()]
    );

    // Shard 1 leaves: its follower stops and its lag entry goes, the documents it
    // indexed stay, and shard 2 keeps being followed.
    addrs_tx.send(vec![url2.clone()]).expect("replica listens");
    eventually("only shard 2 to be followed", || {
        let client = &client;
        let url2 = &url2;
        async move { (followed_shards(client).await? == vec![url2.clone()]).then_some(()) }
    })
    .await;
    writer1.put("docs", "a2", "alpha after leaving").await;
    writer2.put("docs", "b3", "alpha four").await;
    wait_for_key_set(&client, "docs", "alpha", &["a1", "b1", "b2", "b3"]).await;
    // b3 was written after a2 and is searchable, so a2 would be too if shard 1 were
    // still followed.
    wait_for_key_set(&client, "docs", "leaving", &[]).await;
    wait_for_keys(&client, "docs", "one", &["a1"]).await;

    search_service.stop().await;
    sync1.stop().await;
    sync2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_covers_exactly_the_current_followers() {
    use topgun_search::ingest::Ingestor;
    use topgun_search::SearchEngine;

    let sync = start_sync().await;
    let url = format!("http://{}", sync.addr);
    let engine = SearchEngine::start(SearchConfig::default().engine_config()).expect("engine");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let ingest =
        Ingestor::start(&engine, std::slice::from_ref(&url), None, stop_rx).expect("valid address");
    tokio::time::timeout(PATIENCE, ingest.wait_ready())
        .await
        .expect("shard scanned in time");

    // A shard nobody answers at: not ready while it is followed.
    let unreachable = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        format!("http://{addr}")
    };
    ingest.set_addrs(&[url.clone(), unreachable.clone()]).await;
    assert!(!ingest.is_ready());
    let addrs: Vec<String> = ingest.progress().iter().map(|p| p.addr.clone()).collect();
    assert_eq!(addrs, vec![url.clone(), unreachable.clone()]);
    let waiting = tokio::spawn({
        let ingest = ingest.clone();
        async move { ingest.wait_ready().await }
    });

    // Dropping it ends its follower (mid-retry) and makes the replica ready again; an
    // invalid address is skipped.
    ingest
        .set_addrs(&[" ".into(), url.clone(), "not a url".into()])
        .await;
    assert!(ingest.is_ready());
    tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("wait_ready sees the removal")
        .expect("no panic");
    let lags = ingest.lags().await;
    assert_eq!(lags.len(), 1);
    assert_eq!(lags[0].shard, url);

    let _ = stop_tx.send(true);
    engine.shutdown().await;
    sync.stop().await;
}
