//! Live queries: initial results, ENTER / UPDATE / LEAVE, sort + limit + cursor paging.

use crate::common::*;
use serde_json::{json, Value};
use topgun_tests::{token, Suite, WsClient};

fn keys(resp: &Value) -> Vec<String> {
    resp["payload"]["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["key"].as_str().expect("key").to_string())
        .collect()
}

async fn initial_results_are_sorted_limited_and_paged_by_cursor(server: Suite) {
    let map = map_name("tasks");
    let mut c = WsClient::connect_authed(&server.ws_url(), &token("u")).await;
    let ops = (0..7)
        .map(|i| {
            put(
                &(i + 1).to_string(),
                &map,
                &format!("t{i}"),
                json!({"priority": i % 4, "done": i == 3, "title": format!("task {i}")}),
                1_700_000_000_000 + i,
                "c",
            )
        })
        .collect();
    c.send(&batch(ops)).await;
    c.recv_type("OP_ACK").await;

    let query = json!({"where": {"done": false}, "sort": {"priority": "desc"}, "limit": 2});
    c.send(&json!({"type": "QUERY_SUB", "payload": {"queryId": "p1", "mapName": map, "query": query, "fields": ["priority"]}})).await;
    let page1 = c.recv_type("QUERY_RESP").await;
    // Not done: t0(0) t1(1) t2(2) t4(0) t5(1) t6(2); desc priority, key tie-break.
    assert_eq!(keys(&page1), ["t2", "t6"]);
    assert_eq!(page1["payload"]["hasMore"], true);
    assert_eq!(
        page1["payload"]["results"][0]["value"],
        json!({"priority": 2}),
        "projection"
    );
    let cursor = page1["payload"]["nextCursor"]
        .as_str()
        .expect("cursor")
        .to_string();

    let mut q2 = query.clone();
    q2["cursor"] = json!(cursor);
    c.send(
        &json!({"type": "QUERY_SUB", "payload": {"queryId": "p2", "mapName": map, "query": q2}}),
    )
    .await;
    let page2 = c.recv_type("QUERY_RESP").await;
    assert_eq!(keys(&page2), ["t1", "t5"]);
    assert_eq!(page2["payload"]["cursorStatus"], "valid");

    let mut q3 = query.clone();
    q3["cursor"] = page2["payload"]["nextCursor"].clone();
    c.send(
        &json!({"type": "QUERY_SUB", "payload": {"queryId": "p3", "mapName": map, "query": q3}}),
    )
    .await;
    let page3 = c.recv_type("QUERY_RESP").await;
    assert_eq!(keys(&page3), ["t0", "t4"]);
    assert_eq!(page3["payload"]["hasMore"], false);
    assert!(page3["payload"].get("nextCursor").is_none());

    let mut bad = query.clone();
    bad["cursor"] = json!("garbage!");
    c.send(
        &json!({"type": "QUERY_SUB", "payload": {"queryId": "p4", "mapName": map, "query": bad}}),
    )
    .await;
    let resp = c.recv_type("QUERY_RESP").await;
    assert_eq!(resp["payload"]["cursorStatus"], "invalid");
    assert_eq!(keys(&resp), ["t2", "t6"]);
}

async fn updates_report_enter_update_and_leave(server: Suite) {
    let map = map_name("live");
    let mut watcher = WsClient::connect_authed(&server.ws_url(), &token("r")).await;
    let mut writer = WsClient::connect_authed(&server.ws_url(), &token("w")).await;
    let predicate = json!({"op": "gte", "attribute": "score", "value": 10});
    watcher.send(&json!({"type": "QUERY_SUB", "payload": {"queryId": "hi", "mapName": map, "query": {"predicate": predicate}}})).await;
    let initial = watcher.recv_type("QUERY_RESP").await;
    assert_eq!(initial["payload"]["results"], json!([]));

    let write = |id: &str, score: i64, millis: u64| {
        batch(vec![put(
            id,
            &map,
            "player",
            json!({"score": score}),
            millis,
            "w",
        )])
    };
    writer.send(&write("1", 5, 1_700_000_000_000)).await; // no match: nothing
    writer.send(&write("2", 12, 1_700_000_000_001)).await; // ENTER
    writer.send(&write("3", 15, 1_700_000_000_002)).await; // UPDATE
    writer.send(&write("4", 3, 1_700_000_000_003)).await; // LEAVE
    let mut changes = Vec::new();
    while changes.len() < 3 {
        let u = watcher.recv_type("QUERY_UPDATE").await;
        assert_eq!(u["payload"]["queryId"], "hi");
        changes.push((
            u["payload"]["changeType"]
                .as_str()
                .expect("type")
                .to_string(),
            u["payload"]["value"].clone(),
        ));
    }
    assert_eq!(
        changes,
        vec![
            ("ENTER".to_string(), json!({"score": 12})),
            ("UPDATE".to_string(), json!({"score": 15})),
            ("LEAVE".to_string(), json!(null)),
        ]
    );

    // After QUERY_UNSUB nothing more arrives for it.
    watcher
        .send(&json!({"type": "QUERY_UNSUB", "payload": {"queryId": "hi"}}))
        .await;
    watcher.ping().await;
    writer.send(&write("5", 50, 1_700_000_000_004)).await;
    writer.recv_type("OP_ACK").await;
    watcher
        .expect_no("QUERY_UPDATE", std::time::Duration::from_millis(300))
        .await;
}

topgun_tests::topologies!(
    initial_results_are_sorted_limited_and_paged_by_cursor,
    updates_report_enter_update_and_leave
);
