//! One integration-test binary for the storage crate: the same DataStore suite against
//! PostgreSQL, SQLite and the null store, plus the gRPC service over real loopback TCP.
//!
//! PostgreSQL tests use `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! and FAIL when it is unreachable: a skipped database test would hide a broken setup.
//! Each uses a fresh table named `t_<uuid>` and drops it at the end.

use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgPool};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use tokio_stream::StreamExt;
use topgun_proto::grpc::common as pb_common;
use topgun_proto::grpc::storage as pb;
use topgun_proto::grpc::storage::storage_service_client::StorageServiceClient;
use topgun_proto::hlc::Timestamp;
use topgun_proto::internal_auth::TokenAttach;
use topgun_storage::datastores::{DataStore, NullDataStore, PostgresDataStore, SqliteDataStore};
use topgun_storage::model::{MapCursor, Mutation, Record, RecordKind, RecordRef};
use topgun_storage::StorageError;

// ---------------------------------------------------------------------------------------
// Fixtures

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

async fn pg_pool() -> PgPool {
    PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&database_url())
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {} is required: {e}", database_url()))
}

fn unique_table() -> String {
    format!("t_{}", uuid::Uuid::new_v4().simple())
}

/// A PostgreSQL store on its own table, dropped by [`PgFixture::drop_table`].
struct PgFixture {
    pool: PgPool,
    table: String,
    store: PostgresDataStore,
}

impl PgFixture {
    async fn new() -> Self {
        let pool = pg_pool().await;
        let table = unique_table();
        let store = PostgresDataStore::new(pool.clone(), Some(table.clone())).expect("valid name");
        store.initialize().await.expect("initialize");
        PgFixture { pool, table, store }
    }

    async fn drop_table(self) {
        sqlx::query(AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS {}",
            self.table
        )))
        .execute(&self.pool)
        .await
        .expect("drop table");
    }
}

async fn sqlite_store(dir: &TempDir) -> SqliteDataStore {
    let store = SqliteDataStore::open(dir.path(), None, 4, Duration::from_secs(5))
        .await
        .expect("open sqlite");
    store.initialize().await.expect("initialize");
    store
}

fn record(map: &str, key: &str, millis: u64, counter: u64, node: &str, value: &str) -> Record {
    Record {
        map_name: map.into(),
        key: key.into(),
        partition: topgun_proto::partition::partition_of(key),
        kind: RecordKind::Lww,
        value: value.as_bytes().to_vec(),
        timestamp: Timestamp::new(millis, counter, node),
        tombstone: false,
        ttl_ms: None,
        expires_at_ms: 0,
    }
}

fn up(r: Record) -> Mutation {
    Mutation::Upsert(r)
}

fn del(map: &str, key: &str, not_newer_than: Option<Timestamp>) -> Mutation {
    Mutation::Delete(RecordRef {
        map_name: map.into(),
        key: key.into(),
        kind: RecordKind::Lww,
        not_newer_than,
    })
}

async fn load_one(store: &dyn DataStore, map: &str, key: &str) -> Option<Record> {
    let mut found = store
        .load_keys(map, RecordKind::Lww, &[key.to_string()])
        .await
        .expect("load");
    assert!(found.len() <= 1);
    found.pop()
}

async fn load_all(
    store: &dyn DataStore,
    map: Option<&str>,
    partitions: &[u32],
    page: u32,
) -> Vec<Record> {
    let mut all = Vec::new();
    let mut cursor: Option<MapCursor> = None;
    loop {
        let batch = store
            .load_map(map, partitions, cursor.as_ref(), page)
            .await
            .expect("load_map");
        let last = batch.len() < page as usize;
        cursor = batch.last().map(MapCursor::after);
        all.extend(batch);
        if last {
            return all;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The shared suite: each function runs against any durable store.

async fn suite_upsert_load_delete_list(store: &dyn DataStore) {
    store
        .initialize()
        .await
        .expect("second initialize is harmless");
    let written = store
        .write_batch(vec![
            up(record("users", "alice", 10, 0, "n1", "a1")),
            up(record("users", "bob", 10, 1, "n1", "b1")),
            up(record("todos", "t1", 11, 0, "n2", "t1")),
            up(Record {
                kind: RecordKind::Or,
                ..record("users", "alice", 5, 0, "n1", "or-state")
            }),
        ])
        .await
        .expect("write");
    assert_eq!(written, 4);

    let alice = load_one(store, "users", "alice")
        .await
        .expect("alice stored");
    assert_eq!(alice, record("users", "alice", 10, 0, "n1", "a1"));
    let or = store
        .load_keys("users", RecordKind::Or, &["alice".into()])
        .await
        .expect("load or");
    assert_eq!(or.len(), 1, "OR data of the same map is a separate row");
    assert_eq!(or[0].value, b"or-state");

    let found = store
        .load_keys(
            "users",
            RecordKind::Lww,
            &["bob".into(), "nobody".into(), "alice".into()],
        )
        .await
        .expect("load keys");
    let keys: Vec<_> = found.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["alice", "bob"], "missing keys are simply absent");

    let maps = store.list_maps().await.expect("list");
    let maps: Vec<_> = maps
        .iter()
        .map(|m| (m.map_name.as_str(), m.kind, m.records))
        .collect();
    assert_eq!(
        maps,
        [
            ("todos", RecordKind::Lww, 1),
            ("users", RecordKind::Lww, 2),
            ("users", RecordKind::Or, 1)
        ]
    );

    // A newer upsert replaces, keeping one row per key; a tombstone is a row too.
    let tomb = Record {
        tombstone: true,
        value: vec![0xc0],
        ..record("users", "bob", 12, 0, "n1", "")
    };
    assert_eq!(
        store
            .write_batch(vec![up(tomb.clone())])
            .await
            .expect("tombstone"),
        1
    );
    assert_eq!(load_one(store, "users", "bob").await, Some(tomb));

    // Unguarded delete removes; deleting an absent row writes nothing.
    assert_eq!(
        store
            .write_batch(vec![del("todos", "t1", None)])
            .await
            .expect("delete"),
        1
    );
    assert_eq!(load_one(store, "todos", "t1").await, None);
    assert_eq!(
        store
            .write_batch(vec![del("todos", "t1", None)])
            .await
            .expect("delete"),
        0
    );

    // Guarded delete: only when the stored timestamp is not newer than the bound.
    let older = Some(Timestamp::new(9, 0, "n1"));
    assert_eq!(
        store
            .write_batch(vec![del("users", "alice", older)])
            .await
            .expect("guarded"),
        0
    );
    assert!(
        load_one(store, "users", "alice").await.is_some(),
        "newer row survives"
    );
    let same = Some(Timestamp::new(10, 0, "n1"));
    assert_eq!(
        store
            .write_batch(vec![del("users", "alice", same)])
            .await
            .expect("guarded"),
        1
    );
    assert_eq!(load_one(store, "users", "alice").await, None);

    // Order inside a batch is kept: delete then re-insert leaves the row.
    let batch = vec![
        up(record("seq", "k", 1, 0, "n", "v1")),
        del("seq", "k", None),
        up(record("seq", "k", 2, 0, "n", "v2")),
    ];
    assert_eq!(store.write_batch(batch).await.expect("mixed"), 3);
    assert_eq!(
        load_one(store, "seq", "k").await.map(|r| r.value),
        Some(b"v2".to_vec())
    );
    assert_eq!(store.write_batch(Vec::new()).await.expect("empty batch"), 0);
}

async fn suite_lww_guard(store: &dyn DataStore) {
    let newer = vec![
        up(record("m", "a", 200, 0, "n1", "new-a")),
        up(record("m", "b", 200, 5, "n1", "new-b")),
        up(record("m", "c", 200, 5, "n2", "new-c")),
    ];
    let older = vec![
        up(record("m", "a", 100, 9, "n9", "old-a")), // older millis
        up(record("m", "b", 200, 4, "n9", "old-b")), // same millis, older counter
        up(record("m", "c", 200, 5, "n1", "old-c")), // same millis+counter, smaller node id
        up(record("m", "d", 1, 0, "n1", "new-d")),   // fresh key still goes in
    ];
    assert_eq!(store.write_batch(newer).await.expect("newer"), 3);
    assert_eq!(
        store.write_batch(older).await.expect("older"),
        1,
        "only the fresh key is written"
    );
    for (key, value) in [
        ("a", "new-a"),
        ("b", "new-b"),
        ("c", "new-c"),
        ("d", "new-d"),
    ] {
        let got = load_one(store, "m", key).await.expect("present");
        assert_eq!(got.value, value.as_bytes(), "key {key}");
    }
    // An equal timestamp does not replace (strictly greater only).
    let equal = record("m", "a", 200, 0, "n1", "equal-a");
    assert_eq!(store.write_batch(vec![up(equal)]).await.expect("equal"), 0);
    assert_eq!(
        load_one(store, "m", "a").await.map(|r| r.value),
        Some(b"new-a".to_vec())
    );

    // Node ids compare by bytes: "n10" > "n1" and "B" < "a".
    let by_node = record("m", "a", 200, 0, "n10", "n10-a");
    assert_eq!(store.write_batch(vec![up(by_node)]).await.expect("node"), 1);
    assert_eq!(
        store
            .write_batch(vec![up(record("m", "a", 200, 0, "B", "x"))])
            .await
            .expect("node"),
        0
    );

    // Duplicate keys in one batch collapse to the newest, whatever their order.
    let dupes = vec![
        up(record("dup", "k", 5, 0, "n", "v5")),
        up(record("dup", "k", 9, 0, "n", "v9")),
        up(record("dup", "k", 7, 0, "n", "v7")),
    ];
    assert_eq!(store.write_batch(dupes).await.expect("dupes"), 1);
    assert_eq!(
        load_one(store, "dup", "k").await.map(|r| r.value),
        Some(b"v9".to_vec())
    );

    // A batch replayed out of order (older after newer, in one batch or several) ends
    // with the same state as in-order application.
    let mut in_order = Vec::new();
    for i in 0..50u64 {
        in_order.push(record(
            "replay",
            &format!("k{}", i % 7),
            1_000 + i,
            0,
            "n",
            &format!("v{i}"),
        ));
    }
    let mut shuffled = in_order.clone();
    shuffled.reverse();
    shuffled.rotate_left(13);
    for chunk in shuffled.chunks(9) {
        store
            .write_batch(chunk.iter().cloned().map(up).collect())
            .await
            .expect("replay");
    }
    for k in 0..7u64 {
        let newest = in_order
            .iter()
            .rev()
            .find(|r| r.key == format!("k{k}"))
            .expect("exists");
        assert_eq!(
            load_one(store, "replay", &newest.key).await.as_ref(),
            Some(newest)
        );
    }
}

async fn suite_paging_and_partitions(store: &dyn DataStore) {
    let mut batch = Vec::new();
    for i in 0..25 {
        batch.push(up(record("big", &format!("key-{i:03}"), 1, 0, "n", "v")));
    }
    batch.push(up(record("aaa", "first", 1, 0, "n", "v")));
    batch.push(up(Record {
        kind: RecordKind::Or,
        ..record("big", "or-key", 1, 0, "n", "v")
    }));
    assert_eq!(store.write_batch(batch).await.expect("write"), 27);

    let all = load_all(store, Some("big"), &[], 4).await;
    assert_eq!(all.len(), 26);
    let keys: Vec<_> = all.iter().map(|r| (r.kind, r.key.clone())).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(
        keys, sorted,
        "pages come in (kind, key) order without gaps or repeats"
    );

    let everything = load_all(store, None, &[], 5).await;
    assert_eq!(everything.len(), 27);
    assert_eq!(everything[0].map_name, "aaa");

    let partition = all[3].partition;
    let expected = all.iter().filter(|r| r.partition == partition).count();
    let only = load_all(store, Some("big"), &[partition], 2).await;
    assert_eq!(only.len(), expected);
    assert!(only.iter().all(|r| r.partition == partition));
    assert!(load_all(store, Some("nothing-here"), &[], 10)
        .await
        .is_empty());
}

async fn suite_expiry(store: &dyn DataStore) {
    let batch = vec![
        up(Record {
            expires_at_ms: 1_000,
            ttl_ms: Some(10),
            ..record("ttl", "soon", 1, 0, "n", "v")
        }),
        up(Record {
            expires_at_ms: 5_000,
            ttl_ms: Some(99),
            ..record("ttl", "later", 1, 0, "n", "v")
        }),
        up(record("ttl", "never", 1, 0, "n", "v")),
    ];
    store.write_batch(batch).await.expect("write");
    assert_eq!(store.delete_expired(999).await.expect("purge"), 0);
    assert_eq!(store.delete_expired(1_000).await.expect("purge"), 1);
    assert_eq!(load_one(store, "ttl", "soon").await, None);
    let later = load_one(store, "ttl", "later").await.expect("kept");
    assert_eq!((later.ttl_ms, later.expires_at_ms), (Some(99), 5_000));
    assert_eq!(store.delete_expired(u64::MAX).await.expect("purge"), 1);
    assert!(
        load_one(store, "ttl", "never").await.is_some(),
        "expires_at 0 never expires"
    );
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

#[tokio::test]
async fn postgres_upsert_load_delete_list() {
    let fx = PgFixture::new().await;
    suite_upsert_load_delete_list(&fx.store).await;
    fx.drop_table().await;
}

#[tokio::test]
async fn postgres_lww_guard_rejects_out_of_order_writes() {
    let fx = PgFixture::new().await;
    suite_lww_guard(&fx.store).await;
    fx.drop_table().await;
}

#[tokio::test]
async fn postgres_pages_by_cursor_and_partition() {
    let fx = PgFixture::new().await;
    suite_paging_and_partitions(&fx.store).await;
    fx.drop_table().await;
}

#[tokio::test]
async fn postgres_deletes_expired_rows() {
    let fx = PgFixture::new().await;
    suite_expiry(&fx.store).await;
    fx.drop_table().await;
}

#[tokio::test]
async fn postgres_creates_the_schema_under_a_custom_table_name() {
    let fx = PgFixture::new().await;
    assert_eq!(fx.store.table_name(), fx.table);
    let indexes: Vec<(String,)> =
        sqlx::query_as("SELECT indexname::text FROM pg_indexes WHERE tablename = $1 ORDER BY 1")
            .bind(&fx.table)
            .fetch_all(&fx.pool)
            .await
            .expect("indexes");
    let names: Vec<_> = indexes.into_iter().map(|(n,)| n).collect();
    let t = &fx.table;
    assert!(names.contains(&format!("idx_{t}_map")), "{names:?}");
    assert!(names.contains(&format!("idx_{t}_expiry")), "{names:?}");
    // Concurrent initialization (several replicas starting at once) is harmless too.
    let (a, b) = tokio::join!(fx.store.initialize(), fx.store.initialize());
    a.expect("first");
    b.expect("second");
    // The default table name applies when none is given.
    let default = PostgresDataStore::new(fx.pool.clone(), None).expect("default");
    assert_eq!(default.table_name(), "topgun_maps");
    fx.drop_table().await;
}

#[tokio::test]
async fn postgres_rejects_invalid_table_names() {
    let pool = pg_pool().await;
    for bad in ["a;drop table x", "1abc", ""] {
        let err = PostgresDataStore::new(pool.clone(), Some(bad.to_string())).expect_err(bad);
        assert!(matches!(err, StorageError::InvalidTableName(_)));
        assert_eq!(
            err.to_string(),
            format!("Invalid table name '{bad}': must match ^[a-zA-Z_][a-zA-Z0-9_]*$")
        );
    }
}

#[tokio::test]
async fn postgres_outage_is_reported_as_retryable() {
    // A pool pointed at a port nothing listens on behaves like a database that is down.
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy("postgres://postgres@127.0.0.1:1/postgres")
        .expect("lazy pool");
    let store = PostgresDataStore::new(pool, None).expect("valid");
    let err = store
        .write_batch(vec![up(record("m", "k", 1, 0, "n", "v"))])
        .await
        .expect_err("down");
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(tonic::Status::from(err).code(), tonic::Code::Unavailable);
}

// ---------------------------------------------------------------------------------------
// SQLite

#[tokio::test]
async fn sqlite_upsert_load_delete_list() {
    let dir = TempDir::new().expect("tempdir");
    suite_upsert_load_delete_list(&sqlite_store(&dir).await).await;
}

#[tokio::test]
async fn sqlite_lww_guard_rejects_out_of_order_writes() {
    let dir = TempDir::new().expect("tempdir");
    suite_lww_guard(&sqlite_store(&dir).await).await;
}

#[tokio::test]
async fn sqlite_pages_by_cursor_and_partition() {
    let dir = TempDir::new().expect("tempdir");
    suite_paging_and_partitions(&sqlite_store(&dir).await).await;
}

#[tokio::test]
async fn sqlite_deletes_expired_rows() {
    let dir = TempDir::new().expect("tempdir");
    suite_expiry(&sqlite_store(&dir).await).await;
}

#[tokio::test]
async fn sqlite_custom_table_names_and_large_batches() {
    let dir = TempDir::new().expect("tempdir");
    let store = SqliteDataStore::open(
        dir.path(),
        Some("custom_t".into()),
        2,
        Duration::from_secs(5),
    )
    .await
    .expect("open");
    store.initialize().await.expect("initialize");
    store.initialize().await.expect("initialize twice");
    assert_eq!(store.table_name(), "custom_t");
    // More rows than one statement holds: chunking keeps the batch one transaction.
    let batch: Vec<_> = (0..1_234)
        .map(|i| up(record("bulk", &format!("k{i}"), 1, 0, "n", "v")))
        .collect();
    assert_eq!(store.write_batch(batch).await.expect("bulk"), 1_234);
    let keys: Vec<String> = (0..1_234).map(|i| format!("k{i}")).collect();
    assert_eq!(
        store
            .load_keys("bulk", RecordKind::Lww, &keys)
            .await
            .expect("load")
            .len(),
        1_234
    );
    let deletes: Vec<_> = keys.iter().map(|k| del("bulk", k, None)).collect();
    assert_eq!(
        store.write_batch(deletes).await.expect("bulk delete"),
        1_234
    );
    for bad in ["a;drop table x", "1abc", ""] {
        let err = SqliteDataStore::open(dir.path(), Some(bad.into()), 1, Duration::from_secs(1))
            .await
            .expect_err(bad);
        assert!(matches!(err, StorageError::InvalidTableName(_)));
    }
}

#[tokio::test]
async fn sqlite_data_survives_reopening() {
    let dir = TempDir::new().expect("tempdir");
    {
        let store = sqlite_store(&dir).await;
        store
            .write_batch(vec![up(record("m", "k", 1, 0, "n", "v"))])
            .await
            .expect("write");
        store.pool().close().await;
    }
    let store = sqlite_store(&dir).await;
    assert_eq!(
        load_one(&store, "m", "k").await.map(|r| r.value),
        Some(b"v".to_vec())
    );
}

// ---------------------------------------------------------------------------------------
// Null

#[tokio::test]
async fn null_store_keeps_nothing() {
    let store = NullDataStore::new();
    store.initialize().await.expect("initialize");
    let written = store
        .write_batch(vec![up(record("m", "k", 1, 0, "n", "v"))])
        .await
        .expect("write");
    assert_eq!(written, 0);
    assert_eq!(load_one(&store, "m", "k").await, None);
    assert!(store
        .load_map(None, &[], None, 100)
        .await
        .expect("load_map")
        .is_empty());
    assert!(store.list_maps().await.expect("list").is_empty());
    assert_eq!(store.delete_expired(u64::MAX).await.expect("purge"), 0);
}

// ---------------------------------------------------------------------------------------
// gRPC over loopback TCP

struct RunningServer {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), StorageError>>,
}

impl RunningServer {
    async fn start(store: Arc<dyn DataStore>, token: Option<&str>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(topgun_storage::serve_with_listener(
            listener,
            store,
            token.map(String::from),
            async move {
                let _ = stopped.await;
            },
        ));
        RunningServer {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect")
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        result
            .expect("server stops in time")
            .expect("join")
            .expect("clean exit");
    }
}

fn stored(map: &str, key: &str, millis: u64, value: &[u8]) -> pb::StoredRecord {
    pb::StoredRecord {
        map_name: map.into(),
        key: key.into(),
        partition: topgun_proto::partition::partition_of(key),
        kind: pb::RecordKind::Lww as i32,
        value: value.to_vec(),
        timestamp: Some(pb_common::Timestamp {
            millis,
            counter: 0,
            node_id: "node".into(),
        }),
        tombstone: false,
        ttl_ms: None,
        expires_at_ms: 0,
    }
}

fn upsert(r: pb::StoredRecord) -> pb::Mutation {
    pb::Mutation {
        kind: Some(pb::mutation::Kind::Upsert(r)),
    }
}

#[tokio::test]
async fn grpc_service_round_trips_over_loopback() {
    let dir = TempDir::new().expect("tempdir");
    let server = RunningServer::start(Arc::new(sqlite_store(&dir).await), None).await;
    let mut client = StorageServiceClient::new(server.channel().await);

    let mutations: Vec<_> = (0..2_500)
        .map(|i| upsert(stored("grpc", &format!("k{i:04}"), 5, b"v")))
        .collect();
    let written = client
        .write_batch(pb::WriteBatchRequest { mutations })
        .await
        .expect("write")
        .into_inner()
        .written;
    assert_eq!(written, 2_500);
    // Older write loses to the stored one.
    let stale = pb::WriteBatchRequest {
        mutations: vec![upsert(stored("grpc", "k0000", 1, b"old"))],
    };
    assert_eq!(
        client
            .write_batch(stale)
            .await
            .expect("stale")
            .into_inner()
            .written,
        0
    );

    let loaded = client
        .load_keys(pb::LoadKeysRequest {
            map_name: "grpc".into(),
            kind: pb::RecordKind::Lww as i32,
            keys: vec!["k0000".into(), "missing".into()],
        })
        .await
        .expect("load keys")
        .into_inner()
        .records;
    assert_eq!(loaded, vec![stored("grpc", "k0000", 5, b"v")]);

    // Default page size (1000): 2500 rows arrive as 3 pages in key order.
    let mut stream = client
        .load_map(pb::LoadMapRequest {
            map_name: "grpc".into(),
            partitions: vec![],
            page_size: 0,
        })
        .await
        .expect("load map")
        .into_inner();
    let mut pages = Vec::new();
    while let Some(page) = stream.next().await {
        pages.push(page.expect("page").records);
    }
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [1000, 1000, 500]
    );
    let keys: Vec<_> = pages.concat().into_iter().map(|r| r.key).collect();
    assert_eq!(
        keys,
        (0..2_500).map(|i| format!("k{i:04}")).collect::<Vec<_>>()
    );

    let maps = client
        .list_maps(pb::ListMapsRequest {})
        .await
        .expect("list")
        .into_inner()
        .maps;
    assert_eq!(
        maps,
        vec![pb::MapCount {
            map_name: "grpc".into(),
            kind: pb::RecordKind::Lww as i32,
            records: 2_500
        }]
    );
    let deleted = client
        .delete_expired(pb::DeleteExpiredRequest { now_ms: u64::MAX })
        .await
        .expect("purge")
        .into_inner()
        .deleted;
    assert_eq!(deleted, 0);

    // Invalid input is rejected with INVALID_ARGUMENT and changes nothing.
    let bad = pb::WriteBatchRequest {
        mutations: vec![
            upsert(stored("grpc", "fresh", 9, b"v")),
            upsert(stored("", "k", 1, b"v")),
        ],
    };
    let status = client.write_batch(bad).await.expect_err("empty map name");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let status = client
        .load_keys(pb::LoadKeysRequest {
            map_name: String::new(),
            kind: 0,
            keys: vec!["k".into()],
        })
        .await
        .expect_err("empty map name");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let fresh = client
        .load_keys(pb::LoadKeysRequest {
            map_name: "grpc".into(),
            kind: 0,
            keys: vec!["fresh".into()],
        })
        .await
        .expect("load")
        .into_inner()
        .records;
    assert!(fresh.is_empty(), "a rejected batch writes nothing");

    // Health reports SERVING for the storage service.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "topgun.storage.v1.StorageService".into(),
        })
        .await
        .expect("health")
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    server.stop().await;
}

#[tokio::test]
async fn grpc_service_enforces_the_internal_token() {
    let server = RunningServer::start(Arc::new(NullDataStore::new()), Some("s3cret")).await;
    let channel = server.channel().await;

    let mut anonymous = StorageServiceClient::new(channel.clone());
    let status = anonymous
        .list_maps(pb::ListMapsRequest {})
        .await
        .expect_err("no token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    let wrong = TokenAttach::new(Some("guess")).expect("ascii");
    let mut wrong = StorageServiceClient::with_interceptor(channel.clone(), wrong.interceptor());
    let status = wrong
        .list_maps(pb::ListMapsRequest {})
        .await
        .expect_err("wrong token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    let right = TokenAttach::new(Some("s3cret")).expect("ascii");
    let mut right = StorageServiceClient::with_interceptor(channel, right.interceptor());
    right
        .list_maps(pb::ListMapsRequest {})
        .await
        .expect("token accepted");

    server.stop().await;
}

#[tokio::test]
async fn grpc_reports_a_database_outage_as_unavailable() {
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy("postgres://postgres@127.0.0.1:1/postgres")
        .expect("lazy pool");
    let store = PostgresDataStore::new(pool, None).expect("valid");
    let server = RunningServer::start(Arc::new(store), None).await;
    let mut client = StorageServiceClient::new(server.channel().await);
    let status = client
        .list_maps(pb::ListMapsRequest {})
        .await
        .expect_err("database down");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let mut stream = client
        .load_map(pb::LoadMapRequest::default())
        .await
        .expect("stream opens")
        .into_inner();
    let first = stream.next().await.expect("one item");
    assert_eq!(
        first.expect_err("error item").code(),
        tonic::Code::Unavailable
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// Outages and recovery, through a TCP proxy in front of the real PostgreSQL that the test
// can cut (listener and every connection closed) and restore on the same port.

struct PgProxy {
    port: u16,
    target: String,
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl PgProxy {
    async fn start() -> Self {
        let options: sqlx::postgres::PgConnectOptions =
            database_url().parse().expect("DATABASE_URL parses");
        let target = format!("{}:{}", options.get_host(), options.get_port());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let proxy = PgProxy {
            port,
            target,
            tasks: Arc::default(),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let target = self.target.clone();
        let tasks = Arc::clone(&self.tasks);
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut upstream).await;
                    }
                });
                tasks.lock().expect("lock").push(conn.abort_handle());
            }
        });
        self.tasks.lock().expect("lock").push(accept.abort_handle());
    }

    /// The database "goes away": new connections are refused, open ones are closed.
    fn cut(&self) {
        for task in self.tasks.lock().expect("lock").drain(..) {
            task.abort();
        }
    }

    /// The database "comes back" on the same address.
    async fn restore(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    eprintln!("rebinding proxy: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot rebind proxy port {}: {e}", self.port),
            }
        };
        self.serve(listener);
    }

    /// DATABASE_URL with the proxy's address in place of the database's.
    fn url(&self) -> String {
        let url = database_url();
        let proxied = url.replacen(&self.target, &format!("127.0.0.1:{}", self.port), 1);
        assert_ne!(
            proxied, url,
            "DATABASE_URL must name host:port explicitly for the proxy tests"
        );
        proxied
    }
}

fn upsert_req(key: &str) -> pb::WriteBatchRequest {
    pb::WriteBatchRequest {
        mutations: vec![upsert(stored("outage", key, 1, b"v"))],
    }
}

#[tokio::test]
async fn grpc_reports_an_outage_as_unavailable_and_recovers_when_the_database_returns() {
    let proxy = PgProxy::start().await;
    let table = unique_table();
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy(&proxy.url())
        .expect("lazy pool");
    let store = PostgresDataStore::new(pool, Some(table.clone())).expect("valid");
    store.initialize().await.expect("initialize");
    let server = RunningServer::start(Arc::new(store), None).await;
    let mut client = StorageServiceClient::new(server.channel().await);
    client
        .write_batch(upsert_req("before"))
        .await
        .expect("write while up");

    proxy.cut();
    let status = client
        .write_batch(upsert_req("during"))
        .await
        .expect_err("database down");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let status = client
        .list_maps(pb::ListMapsRequest {})
        .await
        .expect_err("database down");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");

    proxy.restore().await;
    // No restart, no reconnect call: the pool replaces its dead connections by itself.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match client.write_batch(upsert_req("after")).await {
            Ok(_) => break,
            Err(s)
                if s.code() == tonic::Code::Unavailable
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => panic!("service did not recover: {s:?}"),
        }
    }
    let keys = vec![
        "before".to_string(),
        "during".to_string(),
        "after".to_string(),
    ];
    let found = client
        .load_keys(pb::LoadKeysRequest {
            map_name: "outage".into(),
            kind: 0,
            keys,
        })
        .await
        .expect("load after recovery")
        .into_inner()
        .records;
    let found: Vec<_> = found.into_iter().map(|r| r.key).collect();
    assert_eq!(
        found,
        ["after", "before"],
        "the failed write changed nothing"
    );

    server.stop().await;
    let pool = pg_pool().await;
    sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
        .execute(&pool)
        .await
        .expect("drop table");
}

#[tokio::test]
async fn open_store_waits_for_a_database_that_starts_late() {
    let proxy = PgProxy::start().await;
    proxy.cut();
    let table = unique_table();
    let config = topgun_storage::StorageConfig {
        backend: Some("postgres".into()),
        database_url: Some(proxy.url()),
        table: table.clone(),
        acquire_timeout_secs: 1,
        connect_timeout_secs: 20,
        ..Default::default()
    };
    let opening = tokio::spawn(async move { topgun_storage::open_store(&config).await });
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        !opening.is_finished(),
        "startup keeps retrying while the database is down"
    );
    proxy.restore().await;
    let store = opening
        .await
        .expect("join")
        .expect("opened once the database came up");
    assert_eq!(store.backend_name(), "postgres");
    assert!(store.list_maps().await.expect("schema created").is_empty());
    let pool = pg_pool().await;
    sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
        .execute(&pool)
        .await
        .expect("drop table");
}

#[tokio::test]
async fn open_store_gives_up_after_the_connect_timeout() {
    let config = topgun_storage::StorageConfig {
        database_url: Some("postgres://postgres@127.0.0.1:1/postgres".into()),
        acquire_timeout_secs: 1,
        connect_timeout_secs: 2,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let err = topgun_storage::open_store(&config)
        .await
        .expect_err("nothing listens on port 1");
    assert!(
        matches!(err, StorageError::StartupTimeout { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with("database unreachable for"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "gave up near the deadline"
    );
}

#[tokio::test]
async fn open_store_follows_the_backend_settings() {
    let dir = TempDir::new().expect("tempdir");
    let sqlite = topgun_storage::StorageConfig {
        data_dir: dir.path().join("nested"),
        ..Default::default()
    };
    let store = topgun_storage::open_store(&sqlite)
        .await
        .expect("sqlite by default");
    assert_eq!(store.backend_name(), "sqlite");
    assert!(dir.path().join("nested").join("topgun.db").exists());

    let null = topgun_storage::StorageConfig {
        backend: Some("null".into()),
        ..Default::default()
    };
    assert_eq!(
        topgun_storage::open_store(&null)
            .await
            .expect("null")
            .backend_name(),
        "null"
    );

    let unknown = topgun_storage::StorageConfig {
        backend: Some("oracle".into()),
        ..Default::default()
    };
    let err = topgun_storage::open_store(&unknown)
        .await
        .expect_err("unknown backend");
    assert_eq!(
        err.to_string(),
        "Unknown STORAGE_BACKEND='oracle' (expected: postgres, sqlite, null)"
    );

    let bad_table = topgun_storage::StorageConfig {
        backend: Some("null".into()),
        table: "x;y".into(),
        ..Default::default()
    };
    assert!(matches!(
        topgun_storage::open_store(&bad_table).await,
        Err(StorageError::InvalidTableName(_))
    ));
}
