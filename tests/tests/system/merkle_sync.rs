//! LWW Merkle delta sync: from empty, and from a partially synced client, which must
//! receive only what it lacks.

use crate::common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use topgun_tests::{token, unpack_batch, Suite, WsClient};

/// Walks the server tree like the TS client: request differing buckets, merge leaves.
/// Returns the records received.
pub async fn merkle_walk(
    c: &mut WsClient,
    map: &str,
    local: &ClientTree,
) -> BTreeMap<String, Value> {
    c.send(&json!({"type": "SYNC_INIT", "mapName": map, "lastSyncTimestamp": 0}))
        .await;
    let root = c.recv_type("SYNC_RESP_ROOT").await;
    let mut received = BTreeMap::new();
    if root["payload"]["rootHash"].as_u64() == Some(u64::from(local.hash(""))) {
        return received;
    }
    let mut pending = vec![String::new()];
    while let Some(path) = pending.pop() {
        c.send(&json!({"type": "MERKLE_REQ_BUCKET", "payload": {"mapName": map, "path": path}}))
            .await;
        let reply = loop {
            let m = c.recv().await;
            if m["type"] == "SYNC_RESP_BUCKETS" || m["type"] == "SYNC_RESP_LEAF" {
                break m;
            }
        };
        assert_eq!(reply["payload"]["path"], path.as_str());
        if reply["type"] == "SYNC_RESP_LEAF" {
            for r in reply["payload"]["records"].as_array().expect("records") {
                received.insert(
                    r["key"].as_str().expect("key").to_string(),
                    r["record"].clone(),
                );
            }
        } else {
            for (child, hash) in reply["payload"]["buckets"].as_object().expect("buckets") {
                if hash.as_u64() != Some(u64::from(local.child(&path, child))) {
                    pending.push(format!("{path}{child}"));
                }
            }
        }
    }
    received
}

/// Writes `key-0`..`key-59` = `{"i": i}` at millis `1_700_000_000_000 + i` in one
/// OP_BATCH and waits for its acknowledgement.
async fn write_sixty(writer: &mut WsClient, map: &str) {
    let ops: Vec<Value> = (0..60)
        .map(|i| {
            put(
                &(i + 1).to_string(),
                map,
                &format!("key-{i}"),
                json!({"i": i}),
                1_700_000_000_000 + i,
                "w",
            )
        })
        .collect();
    writer.send(&batch(ops)).await;
    assert_eq!(writer.recv_type("OP_ACK").await["payload"]["lastId"], "60");
}

/// The client tree holding the keys of `range` as [`write_sixty`] wrote them.
fn tree_of(range: std::ops::Range<u64>) -> ClientTree {
    let mut tree = ClientTree::default();
    for i in range {
        tree.put(&format!("key-{i}"), 1_700_000_000_000 + i, 0, "w");
    }
    tree
}

async fn merkle_sync_transfers_everything_to_an_empty_client_and_only_the_missing_to_a_partial_one(
    server: Suite,
) {
    let map = map_name("sync");
    let mut writer = WsClient::connect_authed(&server.ws_url(), &token("w")).await;
    write_sixty(&mut writer, &map).await;

    let mut fresh = WsClient::connect_authed(&server.ws_url(), &token("f")).await;
    let all = merkle_walk(&mut fresh, &map, &ClientTree::default()).await;
    assert_eq!(all.len(), 60);
    assert_eq!(all["key-7"]["value"], json!({"i": 7}));
    assert_eq!(all["key-7"]["timestamp"]["millis"], 1_700_000_000_007u64);

    // A client holding 55 of the 60 records receives only the leaves it lacks.
    let partial_tree = tree_of(5..60);
    let mut partial = WsClient::connect_authed(&server.ws_url(), &token("p")).await;
    let got = merkle_walk(&mut partial, &map, &partial_tree).await;
    for i in 0..5 {
        assert!(
            got.contains_key(&format!("key-{i}")),
            "missing key-{i}: {got:?}"
        );
    }
    // Leaves can hold a neighbour by hash collision; nothing near a full transfer.
    assert!(got.len() <= 8, "transferred {} records", got.len());

    // A client already in sync gets just the equal root.
    let full_tree = tree_of(0..60);
    let mut synced = WsClient::connect_authed(&server.ws_url(), &token("s")).await;
    assert!(merkle_walk(&mut synced, &map, &full_tree).await.is_empty());
}

/// The client's Merkle tree after merging the records of a SYNC_RESP_LEAF.
fn merge_leaf(tree: &mut ClientTree, leaf: &Value) -> Vec<String> {
    let mut keys = Vec::new();
    for r in leaf["payload"]["records"].as_array().expect("records") {
        let key = r["key"].as_str().expect("key");
        let ts = &r["record"]["timestamp"];
        tree.put(
            key,
            ts["millis"].as_u64().expect("millis"),
            ts["counter"].as_u64().expect("counter"),
            ts["nodeId"].as_str().expect("nodeId"),
        );
        keys.push(key.to_string());
    }
    keys
}

async fn a_reconnecting_client_gets_what_changed_since_its_last_sync_ahead_of_the_root(
    server: Suite,
) {
    let map = map_name("delta");
    let mut writer = WsClient::connect_authed(&server.ws_url(), &token("w")).await;
    write_sixty(&mut writer, &map).await;
    let mut tree = tree_of(0..60);

    // A client that never synced gets the bare root, and the time to come back with.
    let mut client = WsClient::connect_authed(&server.ws_url(), &token("c")).await;
    client
        .send(&json!({"type": "SYNC_INIT", "mapName": map, "lastSyncTimestamp": 0}))
        .await;
    let first = client.recv_frame().await;
    assert_eq!(first["type"], "SYNC_RESP_ROOT", "{first}");
    assert_eq!(first["payload"]["rootHash"], tree.hash(""));
    let last_sync = first["payload"]["timestamp"]["millis"]
        .as_u64()
        .expect("millis");
    drop(client);

    // While it is away: two keys change and one is removed.
    writer
        .send(&batch(vec![
            put("61", &map, "key-1", json!("new"), 1_700_000_001_000, "w"),
            put("62", &map, "key-2", json!("new"), 1_700_000_001_000, "w"),
            remove("63", &map, "key-3", 1_700_000_001_000, "w"),
        ]))
        .await;
    writer.recv_type("OP_ACK").await;

    // Coming back: one BATCH, the changed records first, then the root they lead to.
    let mut client = WsClient::connect_authed(&server.ws_url(), &token("c")).await;
    client
        .send(&json!({"type": "SYNC_INIT", "mapName": map, "lastSyncTimestamp": last_sync}))
        .await;
    let inner = unpack_batch(&client.recv_frame().await);
    let (root, leaves) = inner.split_last().expect("messages");
    assert_eq!(root["type"], "SYNC_RESP_ROOT", "{root}");
    let mut pushed = Vec::new();
    for leaf in leaves {
        assert_eq!(leaf["type"], "SYNC_RESP_LEAF", "{leaf}");
        assert_eq!(leaf["payload"]["mapName"], map.as_str());
        pushed.extend(merge_leaf(&mut tree, leaf));
        let tombstone = leaf["payload"]["records"]
            .as_array()
            .expect("records")
            .iter()
            .find(|r| r["key"] == "key-3");
        if let Some(r) = tombstone {
            assert_eq!(
                r["record"]["value"],
                Value::Null,
                "removals push tombstones"
            );
        }
    }
    pushed.sort();
    assert_eq!(pushed, vec!["key-1", "key-2", "key-3"]);
    assert_eq!(
        root["payload"]["rootHash"],
        tree.hash(""),
        "with the pushed records merged the roots agree: no walk needed"
    );

    // Nothing changed since: the bare root again.
    let again = root["payload"]["timestamp"]["millis"]
        .as_u64()
        .expect("millis");
    client
        .send(&json!({"type": "SYNC_INIT", "mapName": map, "lastSyncTimestamp": again}))
        .await;
    let reply = client.recv_frame().await;
    assert_eq!(reply["type"], "SYNC_RESP_ROOT", "{reply}");
    assert_eq!(reply["payload"]["rootHash"], tree.hash(""));
}

async fn a_delta_push_bigger_than_the_socket_write_buffer_arrives_whole(server: Suite) {
    let map = map_name("bigdelta");
    let mut c = WsClient::connect_authed(&server.ws_url(), &token("c")).await;
    c.send(&json!({"type": "SYNC_INIT", "mapName": map, "lastSyncTimestamp": 0}))
        .await;
    let root = c.recv_type("SYNC_RESP_ROOT").await;
    let last_sync = root["payload"]["timestamp"]["millis"]
        .as_u64()
        .expect("millis");

    // 300 records of 4 KiB: one BATCH of about 1.2 MiB.
    let big = "x".repeat(4096);
    let ops: Vec<Value> = (0..300)
        .map(|i| {
            put(
                &(i + 1).to_string(),
                &map,
                &format!("key-{i}"),
                json!(big),
                1_700_000_000_000 + i,
                "w",
            )
        })
        .collect();
    c.send(&batch(ops)).await;
    c.recv_type("OP_ACK").await;

    let mut again = WsClient::connect_authed(&server.ws_url(), &token("c")).await;
    again
        .send(&json!({"type": "SYNC_INIT", "mapName": map, "lastSyncTimestamp": last_sync}))
        .await;
    let inner = unpack_batch(&again.recv_frame().await);
    let records: usize = inner
        .iter()
        .filter(|m| m["type"] == "SYNC_RESP_LEAF")
        .map(|m| m["payload"]["records"].as_array().expect("records").len())
        .sum();
    assert_eq!(records, 300);
    assert_eq!(inner.last().expect("root")["type"], "SYNC_RESP_ROOT");
    again.ping().await;

    // Read message by message, as a client does, the root follows the leaves.
    again
        .send(&json!({"type": "SYNC_INIT", "mapName": map, "lastSyncTimestamp": last_sync}))
        .await;
    assert_eq!(again.recv().await["type"], "SYNC_RESP_LEAF");
    let root = again.recv_type("SYNC_RESP_ROOT").await;
    assert_eq!(root["payload"]["mapName"], map.as_str());
}

async fn a_client_last_synced_before_the_server_started_gets_the_bare_root_and_walks(
    server: Suite,
) {
    let map = map_name("older");
    let mut writer = WsClient::connect_authed(&server.ws_url(), &token("w")).await;
    writer
        .send(&batch(vec![put(
            "1",
            &map,
            "k",
            json!(1),
            1_700_000_000_000,
            "w",
        )]))
        .await;
    writer.recv_type("OP_ACK").await;
    let hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
        - 3_600_000;
    let mut c = WsClient::connect_authed(&server.ws_url(), &token("c")).await;
    c.send(&json!({"type": "SYNC_INIT", "mapName": map, "lastSyncTimestamp": hour_ago}))
        .await;
    let reply = c.recv_frame().await;
    assert_eq!(
        reply["type"], "SYNC_RESP_ROOT",
        "the feed cannot tell what changed before the server started: {reply}"
    );
    let got = merkle_walk(&mut c, &map, &ClientTree::default()).await;
    assert_eq!(got.len(), 1, "the walk still delivers everything");
}

async fn tombstones_are_delivered_in_leaves(server: Suite) {
    let map = map_name("tomb");
    let mut c = WsClient::connect_authed(&server.ws_url(), &token("w")).await;
    c.send(&batch(vec![
        put("1", &map, "user-1", json!("x"), 1_700_000_000_000, "w"),
        remove("2", &map, "user-1", 1_700_000_000_001, "w"),
    ]))
    .await;
    c.recv_type("OP_ACK").await;
    let got = merkle_walk(&mut c, &map, &ClientTree::default()).await;
    assert_eq!(got["user-1"]["value"], json!(null));
}

async fn missing_nodes_get_empty_buckets_and_bad_paths_an_error(server: Suite) {
    let mut c = WsClient::connect_authed(&server.ws_url(), &token("w")).await;
    c.send(&json!({"type": "MERKLE_REQ_BUCKET", "payload": {"mapName": "nothing-here", "path": "abc"}})).await;
    let reply = c.recv_type("SYNC_RESP_BUCKETS").await;
    assert_eq!(reply["payload"]["buckets"], json!({}));
    c.send(&json!({"type": "MERKLE_REQ_BUCKET", "payload": {"mapName": "m", "path": "0/1/2"}}))
        .await;
    assert_eq!(c.recv_type("ERROR").await["payload"]["code"], 400);
}

topgun_tests::topologies!(
    merkle_sync_transfers_everything_to_an_empty_client_and_only_the_missing_to_a_partial_one,
    a_reconnecting_client_gets_what_changed_since_its_last_sync_ahead_of_the_root,
    a_delta_push_bigger_than_the_socket_write_buffer_arrives_whole,
    a_client_last_synced_before_the_server_started_gets_the_bare_root_and_walks,
    tombstones_are_delivered_in_leaves,
    missing_nodes_get_empty_buckets_and_bad_paths_an_error
);
