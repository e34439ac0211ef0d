//! Writes, acknowledgements, LWW conflicts, OR-Maps and SERVER_EVENT fan-out.

use crate::common::*;
use serde_json::json;
use std::time::Duration;
use topgun_tests::{token, Suite, WsClient};

async fn lww_put_and_remove_are_acknowledged_with_the_last_op_id(server: Suite) {
    let mut c = WsClient::connect_authed(&server.ws_url(), &token("u")).await;
    let map = map_name("todos");
    c.send(&batch(vec![
        put(
            "1",
            &map,
            "t1",
            json!({"title": "a"}),
            1_700_000_000_000,
            "c1",
        ),
        put(
            "2",
            &map,
            "t2",
            json!({"title": "b"}),
            1_700_000_000_001,
            "c1",
        ),
    ]))
    .await;
    let ack = c.recv_type("OP_ACK").await;
    assert_eq!(ack["payload"]["lastId"], "2");
    assert!(ack["payload"]["achievedLevel"].is_string(), "{ack}");

    c.send(&batch(vec![remove(
        "3",
        &map,
        "t1",
        1_700_000_000_002,
        "c1",
    )]))
    .await;
    assert_eq!(c.recv_type("OP_ACK").await["payload"]["lastId"], "3");

    // CLIENT_OP gets its own OP_ACK.
    let op = put("op-9", &map, "t3", json!(1), 1_700_000_000_003, "c1");
    c.send(&json!({"type": "CLIENT_OP", "payload": op})).await;
    let ack = c.recv_type("OP_ACK").await;
    assert_eq!(ack["payload"]["lastId"], "op-9");
    assert_eq!(ack["payload"]["achievedLevel"], "PERSISTED");

    // Reading back: t1 is deleted, t2 and t3 are present.
    c.send(&json!({"type": "QUERY_SUB", "payload": {"queryId": "q", "mapName": map, "query": {}}}))
        .await;
    let resp = c.recv_type("QUERY_RESP").await;
    let keys: Vec<&str> = resp["payload"]["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["key"].as_str().expect("key"))
        .collect();
    assert_eq!(keys, ["t2", "t3"]);
}

async fn persisted_write_concern_is_reported_per_op(server: Suite) {
    let mut c = WsClient::connect_authed(&server.ws_url(), &token("u")).await;
    let map = map_name("wc");
    let mut msg = batch(vec![put("1", &map, "k", json!(1), 1_700_000_000_000, "c1")]);
    msg["payload"]["writeConcern"] = json!("PERSISTED");
    c.send(&msg).await;
    let ack = c.recv_type("OP_ACK").await;
    let result = &ack["payload"]["results"][0];
    assert_eq!(result["opId"], "1");
    assert_eq!(result["success"], true);
    assert_eq!(result["achievedLevel"], "PERSISTED");
}

async fn concurrent_conflicting_writes_converge_per_lww(server: Suite) {
    let map = map_name("conflict-test");
    let mut a = WsClient::connect_authed(&server.ws_url(), &token("a")).await;
    let mut b = WsClient::connect_authed(&server.ws_url(), &token("b")).await;
    // Same millis and counter: node id "node-b" > "node-a" wins; "late" is newest.
    a.send(&batch(vec![put(
        "1",
        &map,
        "k",
        json!("from-a"),
        1_700_000_000_000,
        "node-a",
    )]))
    .await;
    b.send(&batch(vec![put(
        "1",
        &map,
        "k",
        json!("from-b"),
        1_700_000_000_000,
        "node-b",
    )]))
    .await;
    a.send(&batch(vec![put(
        "2",
        &map,
        "other",
        json!("old"),
        1_700_000_000_500,
        "node-a",
    )]))
    .await;
    b.send(&batch(vec![put(
        "2",
        &map,
        "other",
        json!("new"),
        1_700_000_000_900,
        "node-b",
    )]))
    .await;
    for c in [&mut a, &mut b] {
        c.recv_type("OP_ACK").await;
        c.recv_type("OP_ACK").await;
    }
    // An older write arriving late changes nothing.
    a.send(&batch(vec![put(
        "3",
        &map,
        "other",
        json!("stale"),
        1_700_000_000_100,
        "node-z",
    )]))
    .await;
    a.recv_type("OP_ACK").await;

    let mut reader = WsClient::connect_authed(&server.ws_url(), &token("r")).await;
    reader
        .send(
            &json!({"type": "QUERY_SUB", "payload": {"queryId": "q", "mapName": map, "query": {}}}),
        )
        .await;
    let resp = reader.recv_type("QUERY_RESP").await;
    assert_eq!(
        resp["payload"]["results"],
        json!([{"key": "k", "value": "from-b"}, {"key": "other", "value": "new"}])
    );
}

async fn server_event_reaches_subscribers_but_not_the_writer(server: Suite) {
    let map = map_name("events");
    let mut writer = WsClient::connect_authed(&server.ws_url(), &token("w")).await;
    let mut watcher = WsClient::connect_authed(&server.ws_url(), &token("r")).await;
    for c in [&mut writer, &mut watcher] {
        c.send(
            &json!({"type": "QUERY_SUB", "payload": {"queryId": "q", "mapName": map, "query": {}}}),
        )
        .await;
        c.recv_type("QUERY_RESP").await;
    }
    writer
        .send(&batch(vec![put(
            "1",
            &map,
            "k1",
            json!({"n": 1}),
            1_700_000_000_000,
            "w",
        )]))
        .await;
    writer.recv_type("OP_ACK").await;

    let event = watcher.recv_type("SERVER_EVENT").await;
    assert_eq!(event["payload"]["eventType"], "PUT");
    assert_eq!(event["payload"]["key"], "k1");
    assert_eq!(event["payload"]["record"]["value"], json!({"n": 1}));
    assert_eq!(event["payload"]["record"]["timestamp"]["nodeId"], "w");
    assert!(
        event["timestamp"]["millis"].is_u64(),
        "HLC side channel: {event}"
    );

    // A remove carries its tombstone record.
    writer
        .send(&batch(vec![remove(
            "2",
            &map,
            "k1",
            1_700_000_000_001,
            "w",
        )]))
        .await;
    let event = watcher.recv_type("SERVER_EVENT").await;
    assert_eq!(event["payload"]["eventType"], "REMOVE");
    assert_eq!(event["payload"]["record"]["value"], json!(null));

    writer
        .expect_no("SERVER_EVENT", Duration::from_millis(300))
        .await;
}

async fn or_map_add_and_remove_are_visible_through_or_sync(server: Suite) {
    let map = map_name("or-items");
    let mut c = WsClient::connect_authed(&server.ws_url(), &token("u")).await;
    c.send(&batch(vec![
        or_add(
            "1",
            &map,
            "tags",
            json!("red"),
            "1700000000000:0:c1",
            1_700_000_000_000,
            "c1",
        ),
        or_add(
            "2",
            &map,
            "tags",
            json!("blue"),
            "1700000000001:0:c1",
            1_700_000_000_001,
            "c1",
        ),
        or_remove("3", &map, "tags", "1700000000000:0:c1"),
    ]))
    .await;
    assert_eq!(c.recv_type("OP_ACK").await["payload"]["lastId"], "3");

    // Root, then walk to the key's leaf (key "tags" lives in leaf "f41").
    c.send(&json!({"type": "ORMAP_SYNC_INIT", "mapName": map, "rootHash": 0, "bucketHashes": {}}))
        .await;
    let root = c.recv_type("ORMAP_SYNC_RESP_ROOT").await;
    assert_ne!(root["payload"]["rootHash"], 0);
    c.send(&json!({"type": "ORMAP_MERKLE_REQ_BUCKET", "payload": {"mapName": map, "path": "f41"}}))
        .await;
    let leaf = c.recv_type("ORMAP_SYNC_RESP_LEAF").await;
    let entry = &leaf["payload"]["entries"][0];
    assert_eq!(entry["key"], "tags");
    assert_eq!(entry["records"].as_array().map(Vec::len), Some(1));
    assert_eq!(entry["records"][0]["value"], "blue");
    assert_eq!(entry["records"][0]["tag"], "1700000000001:0:c1");
    assert!(
        entry["tombstones"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("1700000000000:0:c1"))),
        "{entry}"
    );

    // The single-record OR hash of core.md §6.8 agrees with the server's root.
    let mut c2 = WsClient::connect_authed(&server.ws_url(), &token("u2")).await;
    let map2 = map_name("or-hash");
    c2.send(&batch(vec![or_add(
        "1",
        &map2,
        "tags",
        json!("Alice"),
        "1700000000000:0:n1",
        1_700_000_000_000,
        "n1",
    )]))
    .await;
    c2.recv_type("OP_ACK").await;
    c2.send(
        &json!({"type": "ORMAP_SYNC_INIT", "mapName": map2, "rootHash": 0, "bucketHashes": {}}),
    )
    .await;
    assert_eq!(
        c2.recv_type("ORMAP_SYNC_RESP_ROOT").await["payload"]["rootHash"],
        1_599_115_293u64
    );
}

topgun_tests::topologies!(
    lww_put_and_remove_are_acknowledged_with_the_last_op_id,
    persisted_write_concern_is_reported_per_op,
    concurrent_conflicting_writes_converge_per_lww,
    server_event_reaches_subscribers_but_not_the_writer,
    or_map_add_and_remove_are_visible_through_or_sync
);
