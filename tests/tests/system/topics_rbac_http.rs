//! Pub/sub between clients, RBAC denial through admin-managed policies, and HTTP /sync.

use crate::common::*;
use serde_json::{json, Value};
use std::time::Duration;
use topgun_tests::ws_client::{decode, encode};
use topgun_tests::{admin_token, token, Suite, WsClient};

async fn topic_messages_reach_other_subscribers_but_not_the_publisher(server: Suite) {
    let mut a = WsClient::connect_authed(&server.ws_url(), &token("a")).await;
    let mut b = WsClient::connect_authed(&server.ws_url(), &token("b")).await;
    for c in [&mut a, &mut b] {
        c.send(&json!({"type": "TOPIC_SUB", "payload": {"topic": "chat/room-1"}}))
            .await;
        c.ping().await;
    }
    for i in 0..10 {
        a.send(
            &json!({"type": "TOPIC_PUB", "payload": {"topic": "chat/room-1", "data": {"n": i}}}),
        )
        .await;
    }
    for i in 0..10 {
        let m = b.recv_type("TOPIC_MESSAGE").await;
        assert_eq!(m["payload"]["topic"], "chat/room-1");
        assert_eq!(m["payload"]["data"], json!({"n": i}), "in publish order");
        assert_eq!(m["payload"]["publisherId"], "a");
        assert!(m["payload"]["timestamp"].is_u64());
    }
    a.expect_no("TOPIC_MESSAGE", Duration::from_millis(300))
        .await;

    b.send(&json!({"type": "TOPIC_SUB", "payload": {"topic": "bad topic!"}}))
        .await;
    assert_eq!(b.recv_type("ERROR").await["payload"]["code"], 400);
}

async fn create_policy(server: &Suite, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/api/admin/policies", server.http_url()))
        .bearer_auth(admin_token())
        .json(&body)
        .send()
        .await
        .expect("policy request")
}

async fn denied_batches_get_error_then_rejections_then_ack_and_change_nothing(server: Suite) {
    let map = map_name("secrets");
    let resp = create_policy(
        &server,
        json!({"id": "allow-all", "mapPattern": "*", "action": "all", "effect": "allow"}),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let resp = create_policy(
        &server,
        json!({"id": "no-secrets", "mapPattern": map, "action": "write", "effect": "deny"}),
    )
    .await;
    assert_eq!(resp.status(), 201);

    let mut c = WsClient::connect_authed(&server.ws_url(), &token("u")).await;
    c.send(&batch(vec![
        put("1", "public", "k", json!(1), 1_700_000_000_000, "c"),
        put("2", &map, "k", json!("leak"), 1_700_000_000_000, "c"),
    ]))
    .await;
    let error = c.recv().await;
    assert_eq!(error["type"], "ERROR", "ERROR comes first");
    assert_eq!(error["payload"]["code"], 403);
    assert_eq!(
        error["payload"]["message"],
        format!("write access denied for map: {map}")
    );
    let r1 = c.recv().await;
    let r2 = c.recv().await;
    assert_eq!(
        (r1["type"].as_str(), r2["type"].as_str()),
        (Some("OP_REJECTED"), Some("OP_REJECTED"))
    );
    assert_eq!(r2["payload"]["opId"], "2");
    assert_eq!(r2["payload"]["code"], 403);
    assert_eq!(
        c.recv().await["payload"]["lastId"],
        "2",
        "OP_ACK stops resends"
    );

    // Nothing was applied, not even the allowed op of the batch.
    c.send(&json!({"type": "QUERY_SUB", "payload": {"queryId": "q", "mapName": "public", "query": {}}})).await;
    assert_eq!(
        c.recv_type("QUERY_RESP").await["payload"]["results"],
        json!([])
    );

    // The admin role bypasses policies; deleting the deny applies at once.
    let mut admin = WsClient::connect_authed(&server.ws_url(), &admin_token()).await;
    admin
        .send(&batch(vec![put(
            "1",
            &map,
            "k",
            json!("ok"),
            1_700_000_000_000,
            "adm",
        )]))
        .await;
    assert_eq!(admin.recv().await["type"], "OP_ACK");
    let del = reqwest::Client::new()
        .delete(format!(
            "{}/api/admin/policies/no-secrets",
            server.http_url()
        ))
        .bearer_auth(admin_token())
        .send()
        .await
        .expect("delete");
    assert_eq!(del.status(), 204);
    c.send(&batch(vec![put(
        "3",
        &map,
        "k2",
        json!("now allowed"),
        1_700_000_000_001,
        "c",
    )]))
    .await;
    assert_eq!(c.recv().await["type"], "OP_ACK");
}

async fn condition_policies_compare_the_principal_with_the_data(server: Suite) {
    let map = map_name("owned");
    let resp = create_policy(&server, json!({"mapPattern": map, "action": "write", "effect": "allow", "conditionExpr": "data.ownerId == auth.id"})).await;
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(
        body["condition"],
        json!({"op": "eq", "attribute": "ownerId", "valueRef": "auth.id"})
    );

    let mut c = WsClient::connect_authed(&server.ws_url(), &token("alice")).await;
    c.send(&batch(vec![put(
        "1",
        &map,
        "a",
        json!({"ownerId": "alice"}),
        1_700_000_000_000,
        "c",
    )]))
    .await;
    assert_eq!(c.recv().await["type"], "OP_ACK");
    c.send(&batch(vec![put(
        "2",
        &map,
        "b",
        json!({"ownerId": "bob"}),
        1_700_000_000_000,
        "c",
    )]))
    .await;
    assert_eq!(c.recv().await["type"], "ERROR");
}

async fn http_sync(server: &Suite, body: &Value) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{}/sync", server.http_url()))
        .header("content-type", "application/x-msgpack")
        .body(encode(body))
        .send()
        .await
        .expect("sync request");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/msgpack");
    decode(&resp.bytes().await.expect("body"))
}

async fn http_sync_pushes_pulls_deltas_and_queries(server: Suite) {
    let map = map_name("http");
    let hlc = ts(1_700_000_000_000, 0, "http-client");
    let push = json!({
        "clientId": "c-1", "clientHlc": hlc,
        "operations": [
            {"id": "41", "mapName": map, "key": "a", "record": {"value": {"done": false, "n": 1}, "timestamp": ts(1_700_000_000_001, 0, "h")}},
            {"id": "42", "mapName": map, "key": "b", "record": {"value": {"done": true, "n": 2}, "timestamp": ts(1_700_000_000_002, 0, "h")}},
            {"id": "43", "mapName": map, "key": "c", "record": {"value": {"done": false, "n": 3}, "timestamp": ts(1_700_000_000_003, 0, "h")}}
        ],
        "syncMaps": [{"mapName": map, "lastSyncTimestamp": ts(0, 0, "")}],
        "queries": [{"queryId": "q1", "mapName": map, "filter": {"done": false}, "limit": 1}]
    });
    let resp = http_sync(&server, &push).await;
    assert_eq!(resp["ack"]["lastId"], "43");
    assert!(resp["serverHlc"]["millis"].as_u64().is_some());
    let delta = &resp["deltas"][0];
    assert_eq!(delta["mapName"], map.as_str());
    assert_eq!(
        delta["records"].as_array().map(Vec::len),
        Some(3),
        "own writes visible"
    );
    let q = &resp["queryResults"][0];
    assert_eq!(q["queryId"], "q1");
    assert_eq!(q["results"], json!([{"done": false, "n": 1}]));
    assert_eq!(q["hasMore"], true);
    let cursor = q["nextCursor"].clone();

    // Deltas since a watermark return only newer records; the cursor pages on.
    let pull = json!({
        "clientId": "c-1", "clientHlc": hlc,
        "syncMaps": [{"mapName": map, "lastSyncTimestamp": ts(1_700_000_000_002, 0, "h")}],
        "queries": [{"queryId": "q2", "mapName": map, "filter": {"done": false}, "limit": 1, "cursor": cursor}]
    });
    let resp = http_sync(&server, &pull).await;
    assert!(resp.get("ack").is_none());
    let records = resp["deltas"][0]["records"].as_array().expect("records");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["key"], "c");
    assert_eq!(records[0]["eventType"], "PUT");
    assert_eq!(
        resp["queryResults"][0]["results"],
        json!([{"done": false, "n": 3}])
    );
    assert_eq!(resp["queryResults"][0]["hasMore"], false);

    // Empty body: only serverHlc. Bad body: 400 JSON.
    let empty = reqwest::Client::new()
        .post(format!("{}/sync", server.http_url()))
        .send()
        .await
        .expect("empty");
    assert_eq!(empty.status(), 200);
    let empty = decode(&empty.bytes().await.expect("body"));
    assert_eq!(empty.as_object().map(|o| o.len()), Some(1));
    let bad = reqwest::Client::new()
        .post(format!("{}/sync", server.http_url()))
        .body(vec![0xc1])
        .send()
        .await
        .expect("bad");
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.expect("json error");
    assert!(body["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("invalid MsgPack body")));
}

topgun_tests::topologies!(
    topic_messages_reach_other_subscribers_but_not_the_publisher,
    denied_batches_get_error_then_rejections_then_ack_and_change_nothing,
    condition_policies_compare_the_principal_with_the_data,
    http_sync_pushes_pulls_deltas_and_queries
);
