//! Acknowledged-as-persisted writes survive `kill -9` of any process, and a database
//! outage yields retryable errors, then recovery without restarts.

use crate::common::*;
use serde_json::json;
use std::time::Duration;
use topgun_proto::partition::{partition_of, shard_of_partition};
use topgun_tests::postgres::{count_rows, database_url, drop_table, unique_table, PrivateCluster};
use topgun_tests::{token, Layout, Storage, Suite, TestServer, WsClient};

const RECORDS: u64 = 300;

fn assert_all_present(all: &std::collections::BTreeMap<String, serde_json::Value>, count: u64) {
    assert_eq!(all.len() as u64, count, "records read back");
    for i in 0..count {
        assert_eq!(all[&format!("key-{i}")], json!({"i": i}));
    }
}

#[tokio::test]
async fn a_killed_sync_shard_restarts_with_every_acknowledged_write() {
    let url = database_url();
    let table = unique_table("shard_kill");
    let mut suite = Suite::start(Layout {
        storage: Storage::Postgres {
            url: url.clone(),
            table: table.clone(),
        },
        ..Layout::default()
    })
    .await;
    let map = map_name("durable");
    let mut c = WsClient::connect_authed(&suite.ws_url(), &token("w")).await;
    write_persisted(&mut c, &map, RECORDS).await;

    // Keys really are spread over both shards.
    let on_shard = |i: u64| shard_of_partition(partition_of(&format!("key-{i}")), 2);
    assert!((0..RECORDS).any(|i| on_shard(i) == 0) && (0..RECORDS).any(|i| on_shard(i) == 1));

    suite.shards[0].kill_9().await;
    // Ops for the dead shard's partitions fail with a retryable error; the other shard
    // keeps accepting writes.
    let dead_key = (0..)
        .map(|i| format!("probe-{i}"))
        .find(|k| shard_of_partition(partition_of(k), 2) == 0)
        .expect("key");
    let live_key = (0..)
        .map(|i| format!("probe-{i}"))
        .find(|k| shard_of_partition(partition_of(k), 2) == 1)
        .expect("key");
    c.send(&batch(vec![put(
        "9001",
        &map,
        &dead_key,
        json!("x"),
        1_800_000_000_000,
        "w",
    )]))
    .await;
    let reply = c.recv().await;
    assert_eq!(reply["type"], "ERROR", "{reply}");
    assert!(
        [503u64, 500, 429].contains(&reply["payload"]["code"].as_u64().unwrap_or(0)),
        "{reply}"
    );
    c.send(&batch(vec![put(
        "9002",
        &map,
        &live_key,
        json!("y"),
        1_800_000_000_000,
        "w",
    )]))
    .await;
    assert_eq!(c.recv().await["type"], "OP_ACK");

    suite.shards[0].restart();
    suite.wait_ready(0, Duration::from_secs(60)).await;
    let mut reader = WsClient::connect_authed(&suite.ws_url(), &token("r")).await;
    let mut all = read_all(&mut reader, &map).await;
    assert_eq!(all.remove(&live_key), Some(json!("y")));
    assert_all_present(&all, RECORDS);
    drop(suite);
    drop_table(&url, &table).await;
}

#[tokio::test]
async fn killing_every_process_after_persisted_acks_loses_nothing_on_postgres() {
    let url = database_url();
    let table = unique_table("kill_all");
    let mut suite = Suite::start(Layout {
        storage: Storage::Postgres {
            url: url.clone(),
            table: table.clone(),
        },
        ..Layout::default()
    })
    .await;
    let map = map_name("durable");
    let mut c = WsClient::connect_authed(&suite.ws_url(), &token("w")).await;
    write_persisted(&mut c, &map, RECORDS).await;
    assert_eq!(
        count_rows(&url, &table).await as u64,
        RECORDS,
        "rows committed before the acks"
    );

    for gw in &mut suite.gateways {
        gw.kill_9().await;
    }
    for shard in &mut suite.shards {
        shard.kill_9().await;
    }
    let storage = suite.storage.as_mut().expect("storage process");
    storage.kill_9().await;
    storage.restart();
    for shard in &mut suite.shards {
        shard.restart();
    }
    for gw in &mut suite.gateways {
        gw.restart();
    }
    suite.wait_ready(0, Duration::from_secs(60)).await;
    let mut reader = WsClient::connect_authed(&suite.ws_url(), &token("r")).await;
    assert_all_present(&read_all(&mut reader, &map).await, RECORDS);
    drop(suite);
    drop_table(&url, &table).await;
}

#[tokio::test]
async fn the_topgun_binary_keeps_data_on_sqlite_across_kill_9_and_sigterm() {
    let data = tempfile::tempdir().expect("temp dir");
    let env = [
        ("TOPGUN_DATA_DIR", data.path().to_string_lossy().to_string()),
        ("JWT_SECRET", topgun_tests::TEST_JWT_SECRET.to_string()),
    ];
    let mut server = TestServer::start_bin("topgun", &["--port", "0"], &env).await;
    let map = map_name("embedded");
    let mut c = WsClient::connect_authed(&server.ws_url(), &token("w")).await;
    write_persisted(&mut c, &map, RECORDS).await;
    server.process.kill_9().await;

    let mut server = TestServer::start_bin("topgun", &["--port", "0"], &env).await;
    let mut reader = WsClient::connect_authed(&server.ws_url(), &token("r")).await;
    assert_all_present(&read_all(&mut reader, &map).await, RECORDS);
    // A graceful stop keeps it too.
    assert_eq!(
        server.process.terminate(Duration::from_secs(30)).await,
        Some(0)
    );
    let server = TestServer::start_bin("topgun", &["--port", "0"], &env).await;
    let mut reader = WsClient::connect_authed(&server.ws_url(), &token("r")).await;
    assert_all_present(&read_all(&mut reader, &map).await, RECORDS);
}

#[tokio::test]
async fn a_postgres_outage_gives_retryable_errors_and_recovers_without_restarts() {
    let pg = PrivateCluster::start_new();
    let suite = Suite::start(Layout {
        storage: Storage::Postgres {
            url: pg.url(),
            table: "topgun_maps".into(),
        },
        ..Layout::default()
    })
    .await;
    let map = map_name("outage");
    let mut c = WsClient::connect_authed(&suite.ws_url(), &token("w")).await;
    write_persisted(&mut c, &map, 20).await;

    pg.stop();
    let mut msg = batch(vec![put(
        "100",
        &map,
        "during-outage",
        json!(1),
        1_800_000_000_000,
        "w",
    )]);
    msg["payload"]["writeConcern"] = json!("PERSISTED");
    c.send(&msg).await;
    let reply = c.recv().await;
    assert_eq!(
        reply["type"], "ERROR",
        "no false ack during the outage: {reply}"
    );
    assert!(
        [503u64, 500].contains(&reply["payload"]["code"].as_u64().unwrap_or(0)),
        "{reply}"
    );
    c.ping().await;

    pg.start();
    // The client re-sends its unacknowledged op; it succeeds once the pool reconnects.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let acked = loop {
        c.send(&msg).await;
        let reply = c.recv().await;
        if reply["type"] == "OP_ACK" {
            break reply;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "writes did not succeed again after PostgreSQL came back: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(acked["payload"]["achievedLevel"], "PERSISTED");
    let all = read_all(&mut c, &map).await;
    assert_eq!(all.len(), 21);
    assert_eq!(count_rows(&pg.url(), "topgun_maps").await, 21);
}
