//! Full-text search through the gateway: one-shot, live, HTTP, and a replica dying.

use crate::common::*;
use serde_json::{json, Value};
use std::time::Duration;
use topgun_tests::ws_client::{decode, encode};
use topgun_tests::{token, Layout, Suite, WsClient};

/// Sends SEARCH until the expected number of hits is indexed (indexing is asynchronous).
async fn search_until(c: &mut WsClient, map: &str, query: &str, expected_hits: usize) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let request_id = uuid::Uuid::new_v4().to_string();
        c.send(&json!({"type": "SEARCH", "payload": {"requestId": request_id, "mapName": map, "query": query}})).await;
        let resp = c.recv_type("SEARCH_RESP").await;
        assert_eq!(resp["payload"]["requestId"], request_id.as_str());
        assert!(resp["payload"].get("error").is_none(), "{resp}");
        if resp["payload"]["results"].as_array().map(Vec::len) == Some(expected_hits) {
            return resp;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not indexed in time: {resp}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn keys(resp: &Value) -> Vec<String> {
    resp["payload"]["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["key"].as_str().expect("key").to_string())
        .collect()
}

async fn search_finds_keys_in_score_order_with_values(suite: Suite) {
    let map = map_name("articles");
    let mut c = WsClient::connect_authed(&suite.ws_url(), &token("u")).await;
    c.send(&batch(vec![
        put(
            "1",
            &map,
            "a1",
            json!({"title": "Rust async programming", "body": "rust rust tokio"}),
            1_700_000_000_000,
            "c",
        ),
        put(
            "2",
            &map,
            "a2",
            json!({"title": "Gardening", "body": "tomatoes"}),
            1_700_000_000_001,
            "c",
        ),
        put(
            "3",
            &map,
            "a3",
            json!({"title": "Rust", "tags": ["systems"]}),
            1_700_000_000_002,
            "c",
        ),
    ]))
    .await;
    c.recv_type("OP_ACK").await;
    let resp = search_until(&mut c, &map, "rust", 2).await;
    assert_eq!(keys(&resp), ["a1", "a3"], "a1 mentions rust three times");
    let first = &resp["payload"]["results"][0];
    assert_eq!(first["value"]["title"], "Rust async programming");
    assert_eq!(first["matchedTerms"], json!(["rust"]));
    assert!(first["score"]
        .as_f64()
        .is_some_and(|s| s > resp["payload"]["results"][1]["score"]
            .as_f64()
            .unwrap_or(f64::MAX)));
    assert_eq!(resp["payload"]["totalCount"], 2);

    // A removed record disappears.
    c.send(&batch(vec![remove(
        "4",
        &map,
        "a1",
        1_700_000_000_003,
        "c",
    )]))
    .await;
    c.recv_type("OP_ACK").await;
    assert_eq!(keys(&search_until(&mut c, &map, "rust", 1).await), ["a3"]);
}

async fn live_search_reports_enter_update_and_leave(suite: Suite) {
    let map = map_name("products");
    let mut watcher = WsClient::connect_authed(&suite.ws_url(), &token("r")).await;
    let mut writer = WsClient::connect_authed(&suite.ws_url(), &token("w")).await;
    watcher.send(&json!({"type": "SEARCH_SUB", "payload": {"subscriptionId": "s1", "mapName": map, "query": "wireless"}})).await;
    let initial = watcher.recv_type("SEARCH_RESP").await;
    assert_eq!(initial["payload"]["requestId"], "s1");

    writer
        .send(&batch(vec![put(
            "1",
            &map,
            "p1",
            json!({"name": "Wireless mouse"}),
            1_700_000_000_000,
            "w",
        )]))
        .await;
    let enter = watcher.recv_type("SEARCH_UPDATE").await;
    assert_eq!(enter["payload"]["changeType"], "ENTER");
    assert_eq!(enter["payload"]["key"], "p1");
    assert_eq!(enter["payload"]["value"]["name"], "Wireless mouse");
    let first_score = enter["payload"]["score"].as_f64().expect("score");

    writer
        .send(&batch(vec![put(
            "2",
            &map,
            "p1",
            json!({"name": "Wireless wireless mouse"}),
            1_700_000_000_001,
            "w",
        )]))
        .await;
    let update = watcher.recv_type("SEARCH_UPDATE").await;
    assert_eq!(update["payload"]["changeType"], "UPDATE");
    assert_ne!(
        update["payload"]["score"].as_f64(),
        Some(first_score),
        "score changed"
    );

    writer
        .send(&batch(vec![put(
            "3",
            &map,
            "p1",
            json!({"name": "Corded mouse"}),
            1_700_000_000_002,
            "w",
        )]))
        .await;
    let leave = watcher.recv_type("SEARCH_UPDATE").await;
    assert_eq!(leave["payload"]["changeType"], "LEAVE");
    assert_eq!(leave["payload"]["value"], json!(null));
    assert_eq!(leave["payload"]["score"], 0.0);

    // SEARCH_UNSUB gets no reply (an OP_ACK there would acknowledge client ops).
    watcher
        .send(&json!({"type": "SEARCH_UNSUB", "payload": {"subscriptionId": "s1"}}))
        .await;
    watcher
        .expect_no("OP_ACK", Duration::from_millis(300))
        .await;
}

async fn http_sync_runs_searches(suite: Suite) {
    let map = map_name("http-search");
    let mut c = WsClient::connect_authed(&suite.ws_url(), &token("u")).await;
    c.send(&batch(vec![put(
        "1",
        &map,
        "d1",
        json!({"text": "hello search"}),
        1_700_000_000_000,
        "c",
    )]))
    .await;
    c.recv_type("OP_ACK").await;
    search_until(&mut c, &map, "hello", 1).await;
    let body = json!({"clientId": "h", "clientHlc": ts(1, 0, "h"), "searches": [{"searchId": "s1", "mapName": map, "query": "hello"}]});
    // Replicas index independently; poll until the one that answers has the record.
    let resp = topgun_tests::eventually(Duration::from_secs(20), || async {
        let resp = reqwest::Client::new()
            .post(format!("{}/sync", suite.http_url()))
            .body(encode(&body))
            .send()
            .await
            .ok()?;
        assert_eq!(resp.status(), 200);
        let resp = decode(&resp.bytes().await.ok()?);
        (resp["searchResults"][0]["totalCount"] == 1).then_some(resp)
    })
    .await
    .expect("HTTP search finds the record");
    let result = &resp["searchResults"][0];
    assert_eq!(result["searchId"], "s1");
    assert_eq!(result["totalCount"], 1);
    assert_eq!(result["results"][0]["key"], "d1");
}

topgun_tests::topologies_with_search!(
    search_finds_keys_in_score_order_with_values,
    live_search_reports_enter_update_and_leave,
    http_sync_runs_searches
);

#[tokio::test]
async fn killing_a_search_replica_keeps_searches_and_live_subscriptions_going() {
    let mut suite = Suite::start(Layout {
        search_replicas: 2,
        ..Layout::default()
    })
    .await;
    let map = map_name("resilient");
    let mut writer = WsClient::connect_authed(&suite.ws_url(), &token("w")).await;
    let mut searcher = WsClient::connect_authed(&suite.ws_url(), &token("s")).await;
    let mut watcher = WsClient::connect_authed(&suite.ws_url(), &token("l")).await;
    writer
        .send(&batch(vec![put(
            "1",
            &map,
            "seed",
            json!({"t": "needle"}),
            1_700_000_000_000,
            "w",
        )]))
        .await;
    writer.recv_type("OP_ACK").await;
    search_until(&mut searcher, &map, "needle", 1).await;
    watcher.send(&json!({"type": "SEARCH_SUB", "payload": {"subscriptionId": "live", "mapName": map, "query": "needle"}})).await;
    watcher.recv_type("SEARCH_RESP").await;

    let mut next_id = 2u64;
    let mut write = |key: String| {
        let id = next_id;
        next_id += 1;
        batch(vec![put(
            &id.to_string(),
            &map,
            &key,
            json!({"t": "needle"}),
            1_700_000_000_000 + id,
            "w",
        )])
    };
    writer.send(&write("before".into())).await;
    writer.recv_type("OP_ACK").await;
    assert_eq!(
        watcher.recv_type("SEARCH_UPDATE").await["payload"]["key"],
        "before"
    );

    suite.search[0].kill_9().await;
    for i in 0..10 {
        // Every one-shot search still answers, without an error.
        searcher.send(&json!({"type": "SEARCH", "payload": {"requestId": format!("q{i}"), "mapName": map, "query": "needle"}})).await;
        let resp = searcher.recv_type("SEARCH_RESP").await;
        assert!(resp["payload"].get("error").is_none(), "{resp}");
        assert!(!keys(&resp).is_empty());
        writer.send(&write(format!("after-{i}"))).await;
        writer.recv_type("OP_ACK").await;
    }
    // The live subscription keeps receiving updates (possibly after a re-sent result set).
    let mut seen = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.len() < 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "live updates seen: {seen:?}"
        );
        let m = watcher.recv().await;
        match m["type"].as_str() {
            Some("SEARCH_UPDATE") => {
                let key = m["payload"]["key"].as_str().unwrap_or_default().to_string();
                if key.starts_with("after-") {
                    seen.insert(key);
                }
            }
            Some("SEARCH_RESP") => {
                for key in keys(&m).into_iter().filter(|k| k.starts_with("after-")) {
                    seen.insert(key);
                }
            }
            _ => {}
        }
    }
}
