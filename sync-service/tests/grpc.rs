//! The sync service over real gRPC, in-process, with a real storage service on an
//! embedded SQLite database in a temporary folder.

use rmpv::Value;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use topgun_proto::grpc::common as pbc;
use topgun_proto::grpc::sync as pb;
use topgun_proto::grpc::sync::sync_service_client::SyncServiceClient;
use topgun_proto::predicate::Position;
use topgun_proto::wire;
use topgun_storage::{DataStore, SqliteDataStore};
use topgun_sync::SyncConfig;

type Client = SyncServiceClient<Channel>;

/// A storage service on a SQLite file in `dir`.
struct StorageNode {
    addr: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

async fn start_storage(
    dir: &Path,
    listener: Option<TcpListener>,
    token: Option<&str>,
) -> StorageNode {
    let store = SqliteDataStore::open(dir, None, 4, Duration::from_secs(5))
        .await
        .expect("open sqlite");
    store.initialize().await.expect("schema");
    let listener = match listener {
        Some(l) => l,
        None => TcpListener::bind("127.0.0.1:0").await.expect("bind"),
    };
    let addr = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = oneshot::channel::<()>();
    let store: Arc<dyn DataStore> = Arc::new(store);
    let token = token.map(str::to_string);
    let task = tokio::spawn(async move {
        topgun_storage::serve_with_listener(listener, store, token, async move {
            let _ = rx.await;
        })
        .await
        .expect("storage server");
    });
    StorageNode {
        addr,
        stop: Some(tx),
        task,
    }
}

impl StorageNode {
    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = self.task.await;
    }
}

/// A sync shard on an ephemeral port.
struct SyncNode {
    addr: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

async fn start_sync(config: SyncConfig) -> SyncNode {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        topgun_sync::serve_with_listener(listener, config, async move {
            let _ = rx.await;
        })
        .await
        .expect("sync server");
    });
    SyncNode {
        addr,
        stop: Some(tx),
        task,
    }
}

impl SyncNode {
    async fn client(&self) -> Client {
        SyncServiceClient::new(self.channel().await)
    }

    async fn channel(&self) -> Channel {
        Endpoint::from_shared(self.addr.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect")
    }

    async fn health(&self) -> ServingStatus {
        let mut health = HealthClient::new(self.channel().await);
        let req = HealthCheckRequest {
            service: "topgun.sync.v1.SyncService".into(),
        };
        let status = health.check(req).await.expect("health").into_inner().status;
        ServingStatus::try_from(status).expect("known status")
    }

    async fn wait_serving(&self) {
        for _ in 0..200 {
            if self.health().await == ServingStatus::Serving {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("shard never became SERVING");
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = self.task.await;
    }
}

fn config(storage: Option<&StorageNode>) -> SyncConfig {
    SyncConfig {
        // Every key the tests write is owned (k0..k20, fresh, user-*, todo:42, tags);
        // key1 (partition 268) is not.
        partitions: Some("0-267".into()),
        storage_addr: storage.map(|s| s.addr.clone()),
        ..SyncConfig::default()
    }
}

fn ts(millis: u64, counter: u64, node: &str) -> Option<pbc::Timestamp> {
    Some(pbc::Timestamp {
        millis,
        counter,
        node_id: node.into(),
    })
}

fn put(key: &str, value: Value, stamp: Option<pbc::Timestamp>) -> pb::Op {
    pb::Op {
        op_id: format!("put-{key}"),
        map_name: "users".into(),
        key: key.into(),
        kind: Some(pb::op::Kind::LwwPut(pbc::LwwRecord {
            value: wire::encode_value(&value),
            timestamp: stamp,
            ttl_ms: None,
        })),
    }
}

fn or_add(key: &str, value: Value, stamp: Option<pbc::Timestamp>, tag: &str) -> pb::Op {
    pb::Op {
        op_id: format!("add-{tag}"),
        map_name: "tags".into(),
        key: key.into(),
        kind: Some(pb::op::Kind::OrAdd(pbc::OrRecord {
            value: wire::encode_value(&value),
            timestamp: stamp,
            tag: tag.into(),
            ttl_ms: None,
        })),
    }
}

fn or_remove(key: &str, tag: &str) -> pb::Op {
    pb::Op {
        op_id: format!("rm-{tag}"),
        map_name: "tags".into(),
        key: key.into(),
        kind: Some(pb::op::Kind::OrRemoveTag(tag.into())),
    }
}

fn batch(ops: Vec<pb::Op>) -> pb::ApplyBatchRequest {
    pb::ApplyBatchRequest {
        ops,
        write_concern: pbc::WriteConcern::Persisted as i32,
        origin: Some(pbc::Origin {
            gateway_id: "gw-test".into(),
            connection_id: 7,
        }),
    }
}

fn person(name: &str, team: &str, age: i64) -> Value {
    Value::Map(vec![
        (Value::from("name"), Value::from(name)),
        (Value::from("team"), Value::from(team)),
        (Value::from("age"), Value::from(age)),
    ])
}

async fn merkle(
    client: &mut Client,
    map: &str,
    kind: pbc::MapKind,
    path: &str,
) -> pb::MerkleNodeResponse {
    let req = pb::MerkleNodeRequest {
        map_name: map.into(),
        kind: kind as i32,
        path: path.into(),
    };
    client
        .merkle_node(req)
        .await
        .expect("merkle node")
        .into_inner()
}

fn buckets(entries: &[(&str, u32)]) -> HashMap<String, u32> {
    entries.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// The worked example of core.md §6.3 plus an OR-Map key, written through gRPC.
async fn write_example(client: &mut Client) {
    let ops = vec![
        put(
            "user-1",
            person("Alice", "red", 30),
            ts(1_700_000_000_000, 1, "node-1"),
        ),
        put(
            "user-2",
            person("Bob", "blue", 25),
            ts(1_700_000_000_001, 0, "node-2"),
        ),
        put(
            "todo:42",
            person("Carol", "red", 41),
            ts(1_700_000_000_500, 3, "c1"),
        ),
        or_add(
            "tags",
            Value::from("Alice"),
            ts(1_700_000_000_000, 0, "n1"),
            "1700000000000:0:n1",
        ),
    ];
    let results = client
        .apply_batch(batch(ops))
        .await
        .expect("apply")
        .into_inner()
        .results;
    assert_eq!(results.len(), 4);
    for r in &results {
        assert!(r.success && r.changed, "{r:?}");
        assert_eq!(r.achieved_level, pbc::WriteConcern::Persisted as i32);
    }
}

#[tokio::test]
async fn writes_reads_queries_merkle_and_partition_ownership() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = start_storage(dir.path(), None, None).await;
    let sync = start_sync(config(Some(&storage))).await;
    sync.wait_serving().await;
    let mut client = sync.client().await;
    write_example(&mut client).await;

    // Merkle tree: the client's exact hashes.
    let root = merkle(&mut client, "users", pbc::MapKind::Lww, "").await;
    assert_eq!(root.hash, 733201421);
    assert_eq!(
        root.buckets,
        buckets(&[("f", 2083837696), ("3", 2944331021)])
    );
    let f = merkle(&mut client, "users", pbc::MapKind::Lww, "f").await;
    assert_eq!(f.buckets, buckets(&[("5", 1214284741), ("8", 869552955)]));
    assert!(f.entries.is_empty());
    let leaf = merkle(&mut client, "users", pbc::MapKind::Lww, "f55").await;
    assert_eq!(leaf.hash, 1214284741);
    assert!(leaf.buckets.is_empty());
    assert_eq!(
        leaf.entries
            .iter()
            .map(|e| e.key.as_str())
            .collect::<Vec<_>>(),
        vec!["user-1"]
    );
    let or_root = merkle(&mut client, "tags", pbc::MapKind::Or, "").await;
    assert_eq!(or_root.hash, 1599115293);
    assert_eq!(or_root.buckets, buckets(&[("f", 1599115293)]));
    // Same name, other kind: an independent (empty) store.
    assert_eq!(
        merkle(&mut client, "tags", pbc::MapKind::Lww, "")
            .await
            .hash,
        0
    );
    let bad_path = pb::MerkleNodeRequest {
        map_name: "users".into(),
        kind: 0,
        path: "F".into(),
    };
    assert_eq!(
        client
            .merkle_node(bad_path)
            .await
            .expect_err("bad path")
            .code(),
        Code::InvalidArgument
    );

    // An OR remove keeps the key listed in its leaf, with its tombstone.
    let res = client
        .apply_batch(batch(vec![or_remove("tags", "1700000000000:0:n1")]))
        .await
        .expect("remove");
    assert!(res.into_inner().results[0].changed);
    assert_eq!(
        merkle(&mut client, "tags", pbc::MapKind::Or, "").await.hash,
        0
    );
    let or_leaf = merkle(&mut client, "tags", pbc::MapKind::Or, "f41").await;
    assert_eq!(or_leaf.entries.len(), 1);
    assert!(or_leaf.entries[0].or_records.is_empty());
    assert_eq!(
        or_leaf.entries[0].or_tombstones,
        vec!["1700000000000:0:n1".to_string()]
    );

    // Reads.
    let req = pb::GetRecordsRequest {
        map_name: "users".into(),
        kind: 0,
        keys: vec!["user-1".into(), "nobody".into()],
    };
    let records = client
        .get_records(req)
        .await
        .expect("get")
        .into_inner()
        .records;
    assert_eq!(records.len(), 1);
    let lww = records[0].lww.clone().expect("lww record");
    assert_eq!(
        wire::decode_value(&lww.value).expect("msgpack"),
        person("Alice", "red", 30)
    );
    assert_eq!(lww.timestamp, ts(1_700_000_000_000, 1, "node-1"));

    // A duplicate is unchanged; an older write loses; a newer one wins.
    let dup = put(
        "user-1",
        person("Alice", "red", 30),
        ts(1_700_000_000_000, 1, "node-1"),
    );
    let older = put(
        "user-2",
        person("Old", "red", 1),
        ts(1_600_000_000_000, 0, "node-2"),
    );
    let res = client
        .apply_batch(batch(vec![dup, older]))
        .await
        .expect("apply")
        .into_inner();
    assert!(
        res.results.iter().all(|r| r.success && !r.changed),
        "{res:?}"
    );

    // Queries: where + sort + limit + position.
    let query = wire::Query {
        where_: Some(Value::Map(vec![(Value::from("team"), Value::from("red"))])),
        sort: Some(Value::Map(vec![(Value::from("age"), Value::from("desc"))])),
        ..Default::default()
    };
    let req = pb::RunQueryRequest {
        map_name: "users".into(),
        query: wire::encode_body(&query),
        limit: 1,
        after: None,
    };
    let res = client
        .run_query(req.clone())
        .await
        .expect("query")
        .into_inner();
    assert_eq!(res.matched, 2);
    assert_eq!(
        res.rows.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
        vec!["todo:42"]
    );
    let after = Position {
        sort_values: vec![Value::from(41)],
        key: "todo:42".into(),
    };
    let req = pb::RunQueryRequest {
        after: Some(wire::encode_value(&after.to_value())),
        limit: 0,
        ..req
    };
    let res = client.run_query(req).await.expect("query").into_inner();
    assert_eq!(res.matched, 1);
    assert_eq!(res.rows[0].key, "user-1");
    assert_eq!(
        wire::decode_value(&res.rows[0].value).expect("msgpack"),
        person("Alice", "red", 30)
    );
    let bad = pb::RunQueryRequest {
        map_name: "users".into(),
        query: vec![0x93],
        limit: 0,
        after: None,
    };
    assert_eq!(
        client.run_query(bad).await.expect_err("bad query").code(),
        Code::InvalidArgument
    );

    // Scans page in key order.
    let mut keys = Vec::new();
    let mut after_key = None;
    loop {
        let req = pb::ScanMapRequest {
            map_name: "users".into(),
            kind: 0,
            after_key: after_key.clone(),
            limit: 2,
            since: None,
        };
        let page = client.scan_map(req).await.expect("scan").into_inner();
        keys.extend(page.records.iter().map(|r| r.key.clone()));
        if page.done {
            break;
        }
        after_key = Some(page.last_key);
    }
    assert_eq!(keys, vec!["todo:42", "user-1", "user-2"]);
    let since = pb::ScanMapRequest {
        map_name: "users".into(),
        kind: 0,
        after_key: None,
        limit: 0,
        since: ts(1_700_000_000_001, 0, "node-2"),
    };
    let page = client.scan_map(since).await.expect("scan").into_inner();
    assert_eq!(
        page.records
            .iter()
            .map(|r| r.key.as_str())
            .collect::<Vec<_>>(),
        vec!["todo:42"]
    );

    // Ownership: the whole batch fails, naming the partition, and nothing is applied.
    let foreign = batch(vec![
        put("fresh", Value::from(1), ts(1, 0, "c")),
        put("key1", Value::from(1), ts(1, 0, "c")),
    ]);
    let status = client
        .apply_batch(foreign)
        .await
        .expect_err("foreign partition");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("partition 268"),
        "{}",
        status.message()
    );
    let req = pb::GetRecordsRequest {
        map_name: "users".into(),
        kind: 0,
        keys: vec!["fresh".into()],
    };
    assert!(client
        .get_records(req)
        .await
        .expect("get")
        .into_inner()
        .records
        .is_empty());

    // Invalid input changes nothing.
    let no_timestamp = batch(vec![put("fresh", Value::from(1), None)]);
    assert_eq!(
        client
            .apply_batch(no_timestamp)
            .await
            .expect_err("invalid")
            .code(),
        Code::InvalidArgument
    );

    // Stats and identity.
    let maps = client
        .list_maps(pb::ListMapsRequest {})
        .await
        .expect("list")
        .into_inner()
        .maps;
    let users = maps
        .iter()
        .find(|m| m.map_name == "users" && m.kind == 0)
        .expect("users listed");
    assert_eq!(users.records, 3);
    assert_eq!(users.partitions.get(&120), Some(&1));
    let info = client
        .shard_info(pb::ShardInfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.node_id, "sync-0");
    assert_eq!(info.partitions.len(), 268);
    assert_eq!(info.last_seq, 5, "four writes and one remove changed state");

    sync.stop().await;
    storage.stop().await;
}

async fn next_events(
    stream: &mut tonic::Streaming<pb::ChangeBatch>,
    want: usize,
) -> Vec<pb::ChangeEvent> {
    let mut events = Vec::new();
    while events.len() < want {
        let batch = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("events in time")
            .expect("stream ok")
            .expect("stream open");
        events.extend(batch.events);
    }
    events
}

#[tokio::test]
async fn change_feed_resumes_without_gaps_or_duplicates() {
    let sync = start_sync(config(None)).await;
    sync.wait_serving().await;
    let mut client = sync.client().await;
    let subscribe = |from_seq: u64, epoch: String| pb::SubscribeChangesRequest {
        map_names: vec![],
        from_seq,
        epoch,
    };

    let mut stream = client
        .subscribe_changes(subscribe(0, String::new()))
        .await
        .expect("subscribe")
        .into_inner();
    let hello = stream.message().await.expect("ok").expect("greeting");
    assert!(hello.events.is_empty());
    let epoch = hello.epoch;

    let write = |i: usize| {
        put(
            &format!("k{i}"),
            Value::from(i as i64),
            ts(1_000 + i as u64, 0, "c"),
        )
    };
    client
        .apply_batch(batch((0..5).map(write).collect()))
        .await
        .expect("apply");
    let first = next_events(&mut stream, 5).await;
    assert_eq!(
        first.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(first[0].event_type, pb::EventType::Put as i32);
    assert_eq!(first[0].origin.as_ref().map(|o| o.connection_id), Some(7));
    let last_seen = first.last().map(|e| e.seq).expect("events");
    drop(stream);

    // Written while nobody listens.
    client
        .apply_batch(batch((5..12).map(write).collect()))
        .await
        .expect("apply");
    let removal = pb::Op {
        op_id: "rm".into(),
        map_name: "users".into(),
        key: "k0".into(),
        kind: Some(pb::op::Kind::LwwRemove(pb::LwwRemove {})),
    };
    client
        .apply_batch(batch(vec![removal]))
        .await
        .expect("remove");

    let mut resumed = client
        .subscribe_changes(subscribe(last_seen + 1, epoch.clone()))
        .await
        .expect("resume")
        .into_inner();
    resumed.message().await.expect("ok").expect("greeting");
    let rest = next_events(&mut resumed, 8).await;
    assert_eq!(
        rest.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (6..=13).collect::<Vec<_>>()
    );
    assert_eq!(rest[0].key, "k5");
    let tombstone = &rest[7];
    assert_eq!(tombstone.event_type, pb::EventType::Remove as i32);
    assert_eq!(
        tombstone.record.as_ref().map(|r| r.value.clone()),
        Some(vec![0xc0])
    );
    assert_eq!(
        tombstone.previous.as_ref().map(|r| r.timestamp.clone()),
        Some(ts(1_000, 0, "c"))
    );

    // Live events keep flowing on the resumed stream.
    client
        .apply_batch(batch(vec![write(20)]))
        .await
        .expect("apply");
    let live = next_events(&mut resumed, 1).await;
    assert_eq!(live[0].seq, 14);

    // A foreign epoch cannot be resumed: the subscriber must rescan.
    let status = client
        .subscribe_changes(subscribe(3, "another-run".into()))
        .await
        .expect_err("epoch");
    assert_eq!(status.code(), Code::OutOfRange);
    sync.stop().await;
}

#[tokio::test]
async fn a_restarted_shard_serves_the_same_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = start_storage(dir.path(), None, None).await;
    let first = start_sync(config(Some(&storage))).await;
    first.wait_serving().await;
    let mut client = first.client().await;
    write_example(&mut client).await;
    let add = or_add(
        "tags",
        Value::from("Bob"),
        ts(1_700_000_000_100, 0, "n2"),
        "1700000000100:0:n2",
    );
    client
        .apply_batch(batch(vec![add, or_remove("tags", "1700000000000:0:n1")]))
        .await
        .expect("apply");
    let lww_root = merkle(&mut client, "users", pbc::MapKind::Lww, "").await;
    let or_leaf = merkle(&mut client, "tags", pbc::MapKind::Or, "f41").await;
    first.stop().await;

    // A replacement with another node id, on the same storage.
    let replacement = start_sync(SyncConfig {
        node_id: Some("sync-0-b".into()),
        ..config(Some(&storage))
    })
    .await;
    replacement.wait_serving().await;
    let mut client = replacement.client().await;
    assert_eq!(
        merkle(&mut client, "users", pbc::MapKind::Lww, "").await,
        lww_root
    );
    assert_eq!(
        merkle(&mut client, "tags", pbc::MapKind::Or, "f41").await,
        or_leaf
    );

    // Its rows must win over the old shard's: its clock starts after every loaded row.
    let last = or_add(
        "tags",
        Value::from("Eve"),
        ts(1_700_000_000_200, 0, "n3"),
        "1700000000200:0:n3",
    );
    client.apply_batch(batch(vec![last])).await.expect("apply");
    let expected = merkle(&mut client, "tags", pbc::MapKind::Or, "f41").await;
    replacement.stop().await;

    let third = start_sync(config(Some(&storage))).await;
    third.wait_serving().await;
    let mut client = third.client().await;
    assert_eq!(
        merkle(&mut client, "tags", pbc::MapKind::Or, "f41").await,
        expected
    );
    assert_eq!(expected.entries[0].or_records.len(), 2);
    third.stop().await;
    storage.stop().await;
}

#[tokio::test]
async fn storage_outages_fail_writes_retryably_and_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Reserve a port for the storage service that is not running yet.
    let reserved = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let storage_addr = reserved.local_addr().expect("addr");
    drop(reserved);
    let sync = start_sync(SyncConfig {
        storage_addr: Some(format!("http://{storage_addr}")),
        ..config(None)
    })
    .await;

    // Not SERVING (and refusing work) until the partitions are loaded.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sync.health().await, ServingStatus::NotServing);
    let mut client = sync.client().await;
    let write = put(
        "user-1",
        person("Alice", "red", 30),
        ts(1_700_000_000_000, 1, "node-1"),
    );
    let status = client
        .apply_batch(batch(vec![write.clone()]))
        .await
        .expect_err("loading");
    assert_eq!(status.code(), Code::Unavailable);

    let listener = TcpListener::bind(storage_addr)
        .await
        .expect("rebind reserved port");
    let storage = start_storage(dir.path(), Some(listener), None).await;
    sync.wait_serving().await;

    // Storage goes away: the write is applied in memory but reported as retryable.
    storage.stop().await;
    let status = client
        .apply_batch(batch(vec![write.clone()]))
        .await
        .expect_err("storage down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // Storage is back; the client's retry merges as unchanged yet is persisted.
    let listener = TcpListener::bind(storage_addr).await.expect("rebind");
    let storage = start_storage(dir.path(), Some(listener), None).await;
    let mut retried = None;
    for _ in 0..100 {
        match client.apply_batch(batch(vec![write.clone()])).await {
            Ok(res) => {
                retried = Some(res.into_inner());
                break;
            }
            Err(status) if status.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(status) => panic!("unexpected {status:?}"),
        }
    }
    let retried = retried.expect("storage came back");
    assert!(!retried.results[0].changed);
    assert_eq!(
        retried.results[0].achieved_level,
        pbc::WriteConcern::Persisted as i32
    );
    sync.stop().await;

    let fresh = start_sync(SyncConfig {
        storage_addr: Some(storage.addr.clone()),
        ..config(None)
    })
    .await;
    fresh.wait_serving().await;
    let mut client = fresh.client().await;
    let req = pb::GetRecordsRequest {
        map_name: "users".into(),
        kind: 0,
        keys: vec!["user-1".into()],
    };
    assert_eq!(
        client
            .get_records(req)
            .await
            .expect("get")
            .into_inner()
            .records
            .len(),
        1
    );
    fresh.stop().await;
    storage.stop().await;
}

#[tokio::test]
async fn ttl_records_expire_into_tombstones_with_events() {
    let sync = start_sync(SyncConfig {
        gc_interval_ms: 100,
        ..config(None)
    })
    .await;
    sync.wait_serving().await;
    let mut client = sync.client().await;
    let mut stream = client
        .subscribe_changes(pb::SubscribeChangesRequest {
            map_names: vec!["users".into()],
            from_seq: 0,
            epoch: String::new(),
        })
        .await
        .expect("subscribe")
        .into_inner();
    stream.message().await.expect("ok").expect("greeting");
    let mut op = put("user-1", Value::from("short-lived"), ts(1_000, 0, "c"));
    if let Some(pb::op::Kind::LwwPut(record)) = &mut op.kind {
        record.ttl_ms = Some(500);
    }
    client.apply_batch(batch(vec![op])).await.expect("apply");
    let events = next_events(&mut stream, 2).await;
    assert_eq!(events[0].event_type, pb::EventType::Put as i32);
    assert_eq!(events[1].event_type, pb::EventType::Remove as i32);
    let tombstone = events[1].record.clone().expect("record");
    assert_eq!(tombstone.timestamp, ts(1_500, 0, "sync-0"));
    assert!(events[1]
        .origin
        .as_ref()
        .is_some_and(|o| o.gateway_id.is_empty()));
    sync.stop().await;
}

#[tokio::test]
async fn internal_token_is_required_and_forwarded_to_storage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = start_storage(dir.path(), None, Some("s3cret")).await;
    let sync = start_sync(SyncConfig {
        internal_token: Some("s3cret".into()),
        ..config(Some(&storage))
    })
    .await;
    sync.wait_serving().await;
    let mut bare = sync.client().await;
    let status = bare
        .shard_info(pb::ShardInfoRequest {})
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    let attach = topgun_proto::internal_auth::TokenAttach::new(Some("s3cret")).expect("ascii");
    let mut client =
        SyncServiceClient::with_interceptor(sync.channel().await, attach.interceptor());
    let res = client
        .apply_batch(batch(vec![put("user-1", Value::from(1), ts(1, 0, "c"))]))
        .await
        .expect("storage accepted the token")
        .into_inner();
    assert_eq!(
        res.results[0].achieved_level,
        pbc::WriteConcern::Persisted as i32
    );
    sync.stop().await;
    storage.stop().await;
}

async fn set_partitions(
    client: &mut Client,
    partitions: impl IntoIterator<Item = u32>,
    version: u64,
) -> Result<pb::SetPartitionsResponse, tonic::Status> {
    let req = pb::SetPartitionsRequest {
        partitions: partitions.into_iter().collect(),
        version,
        reload_kept: false,
    };
    client.set_partitions(req).await.map(|r| r.into_inner())
}

async fn get_user(client: &mut Client, key: &str) -> Result<Option<Value>, tonic::Status> {
    let req = pb::GetRecordsRequest {
        map_name: "users".into(),
        kind: 0,
        keys: vec![key.into()],
    };
    let records = client.get_records(req).await?.into_inner().records;
    Ok(records
        .first()
        .and_then(|r| r.lww.as_ref())
        .map(|lww| wire::decode_value(&lww.value).expect("msgpack")))
}

#[tokio::test]
async fn gained_partitions_are_loaded_from_storage_and_lost_ones_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = start_storage(dir.path(), None, None).await;
    let a = start_sync(config(Some(&storage))).await;
    a.wait_serving().await;
    let mut a_client = a.client().await;
    write_example(&mut a_client).await;
    let users_root = merkle(&mut a_client, "users", pbc::MapKind::Lww, "").await;
    let tags_root = merkle(&mut a_client, "tags", pbc::MapKind::Or, "").await;

    // B starts with one partition nobody writes to.
    let b = start_sync(SyncConfig {
        node_id: Some("sync-b".into()),
        partitions: Some("270".into()),
        ..config(Some(&storage))
    })
    .await;
    b.wait_serving().await;
    let mut b_client = b.client().await;
    let status = get_user(&mut b_client, "user-1")
        .await
        .expect_err("not owned yet");
    assert_eq!(status.code(), Code::FailedPrecondition);

    // A partition out of range is refused and changes nothing.
    let status = set_partitions(&mut b_client, [1, 271], 1)
        .await
        .expect_err("271 is out of range");
    assert_eq!(status.code(), Code::InvalidArgument);
    let info = b_client
        .shard_info(pb::ShardInfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert_eq!((info.partitions, info.ownership_version), (vec![270], 0));

    let gained = set_partitions(&mut b_client, 0..271, 1)
        .await
        .expect("gain");
    assert_eq!(
        gained,
        pb::SetPartitionsResponse {
            gained: 270,
            dropped: 0,
            version: 1,
            applied: true
        }
    );
    assert_eq!(
        get_user(&mut b_client, "user-1").await.expect("owned"),
        Some(person("Alice", "red", 30))
    );
    assert_eq!(
        merkle(&mut b_client, "users", pbc::MapKind::Lww, "").await,
        users_root
    );
    assert_eq!(
        merkle(&mut b_client, "tags", pbc::MapKind::Or, "").await,
        tags_root
    );
    let stale = set_partitions(&mut b_client, [270], 1)
        .await
        .expect("stale");
    assert!(!stale.applied);
    assert_eq!(stale.version, 1);

    // A write the previous owner acknowledges during the switch reaches B through its
    // second load of the gained partitions.
    let late = put(
        "user-2",
        person("Bob", "green", 26),
        ts(1_800_000_000_000, 0, "node-2"),
    );
    a_client
        .apply_batch(batch(vec![late]))
        .await
        .expect("previous owner still writes");
    let mut seen = None;
    for _ in 0..100 {
        seen = get_user(&mut b_client, "user-2").await.expect("owned");
        if seen == Some(person("Bob", "green", 26)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, Some(person("Bob", "green", 26)));

    // Handing the partitions back drops them from B's memory.
    let released = set_partitions(&mut b_client, [270], 2)
        .await
        .expect("release");
    assert_eq!((released.gained, released.dropped), (0, 270));
    let status = get_user(&mut b_client, "user-1")
        .await
        .expect_err("not owned any more");
    assert_eq!(status.code(), Code::FailedPrecondition);
    let maps = b_client
        .list_maps(pb::ListMapsRequest {})
        .await
        .expect("list")
        .into_inner()
        .maps;
    assert!(maps.is_empty(), "{maps:?}");
    let info = b_client
        .shard_info(pb::ShardInfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert_eq!((info.partitions, info.ownership_version), (vec![270], 2));

    a.stop().await;
    b.stop().await;
    storage.stop().await;
}

#[tokio::test]
async fn reload_kept_picks_up_what_another_owner_wrote_during_a_split() {
    // A and B both own every partition (two sides of a split) and write through one store.
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = start_storage(dir.path(), None, None).await;
    let a = start_sync(config(Some(&storage))).await;
    let b = start_sync(SyncConfig {
        node_id: Some("sync-b".into()),
        ..config(Some(&storage))
    })
    .await;
    a.wait_serving().await;
    b.wait_serving().await;
    let (mut a_client, mut b_client) = (a.client().await, b.client().await);
    let written_on_b = put(
        "user-9",
        person("Eve", "blue", 40),
        ts(1_800_000_000_000, 0, "node-b"),
    );
    b_client
        .apply_batch(batch(vec![written_on_b]))
        .await
        .expect("b writes");
    assert_eq!(
        get_user(&mut a_client, "user-9").await.expect("owned"),
        None
    );

    // The split heals; A keeps every partition. A plain ownership change reloads nothing
    // it kept...
    set_partitions(&mut a_client, 0..271, 1)
        .await
        .expect("same set");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        get_user(&mut a_client, "user-9").await.expect("owned"),
        None
    );

    // ...with reload_kept, the settle load brings B's write in.
    let req = pb::SetPartitionsRequest {
        partitions: (0..271).collect(),
        version: 2,
        reload_kept: true,
    };
    let outcome = a_client
        .set_partitions(req)
        .await
        .expect("merge")
        .into_inner();
    assert!(outcome.applied);
    let mut seen = None;
    for _ in 0..100 {
        seen = get_user(&mut a_client, "user-9").await.expect("owned");
        if seen.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, Some(person("Eve", "blue", 40)));

    a.stop().await;
    b.stop().await;
    storage.stop().await;
}

/// A membership service that answers with a fixed view.
#[derive(Debug, Clone, Copy)]
struct EchoMembership;

#[tonic::async_trait]
impl topgun_proto::grpc::cluster::membership_server::Membership for EchoMembership {
    async fn heartbeat(
        &self,
        request: tonic::Request<topgun_proto::grpc::cluster::HeartbeatRequest>,
    ) -> Result<tonic::Response<topgun_proto::grpc::cluster::HeartbeatResponse>, tonic::Status>
    {
        let mut view = request.into_inner().view.unwrap_or_default();
        view.version += 1;
        Ok(tonic::Response::new(
            topgun_proto::grpc::cluster::HeartbeatResponse { view: Some(view) },
        ))
    }
}

#[tokio::test]
async fn extra_routes_are_served_next_to_the_sync_service() {
    use topgun_proto::grpc::cluster::membership_client::MembershipClient;
    use topgun_proto::grpc::cluster::membership_server::MembershipServer;

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = oneshot::channel::<()>();
    let routes = tonic::service::Routes::new(MembershipServer::new(EchoMembership));
    let task = tokio::spawn(async move {
        topgun_sync::serve_with_routes(listener, config(None), routes, async move {
            let _ = rx.await;
        })
        .await
        .expect("sync server");
    });
    let node = SyncNode {
        addr,
        stop: Some(tx),
        task,
    };
    node.wait_serving().await;
    let mut membership = MembershipClient::new(node.channel().await);
    let view = topgun_proto::grpc::cluster::View {
        version: 41,
        ..Default::default()
    };
    let answer = membership
        .heartbeat(topgun_proto::grpc::cluster::HeartbeatRequest { view: Some(view) })
        .await
        .expect("membership served")
        .into_inner();
    assert_eq!(answer.view.map(|v| v.version), Some(42));
    let info = node
        .client()
        .await
        .shard_info(pb::ShardInfoRequest {})
        .await
        .expect("sync served too")
        .into_inner();
    assert_eq!(info.node_id, "sync-0");
    node.stop().await;
}
