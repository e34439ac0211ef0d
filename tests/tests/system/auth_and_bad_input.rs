//! test-server's contract: PORT line, AUTH_REQUIRED, AUTH_ACK / AUTH_FAIL, and bad input
//! that gets an ERROR while the process and other connections stay unharmed.

use serde_json::json;
use std::time::Duration;
use topgun_tests::ws_client::Received;
use topgun_tests::{token, token_with, TestServer, WsClient, TEST_JWT_SECRET};

#[tokio::test]
async fn test_server_announces_port_and_authenticates_good_tokens_only() {
    let server = TestServer::start(&[]).await;

    let mut good = WsClient::connect(&server.ws_url()).await;
    assert_eq!(good.recv().await, json!({"type": "AUTH_REQUIRED"}));
    good.send(&json!({"type": "AUTH", "token": token("user-1")}))
        .await;
    let ack = good.recv().await;
    assert_eq!(ack["type"], "AUTH_ACK");
    assert_eq!(ack["userId"], "user-1");
    assert_eq!(ack["protocolVersion"], 1);
    // A second AUTH (clients send two) is ignored silently.
    good.send(&json!({"type": "AUTH", "token": token("user-1")}))
        .await;
    good.ping().await;

    let mut bad = WsClient::connect(&server.ws_url()).await;
    assert_eq!(bad.recv().await["type"], "AUTH_REQUIRED");
    bad.send(&json!({"type": "AUTH", "token": token_with("wrong-secret", "u", &[], 3600)}))
        .await;
    let fail = bad.recv().await;
    assert_eq!(fail["type"], "AUTH_FAIL");
    assert_eq!(fail["code"], 401);
    assert_eq!(
        bad.next_within(Duration::from_secs(5)).await,
        Received::Closed(4001, "Unauthorized".into())
    );

    let mut expired = WsClient::connect(&server.ws_url()).await;
    expired.recv().await;
    expired
        .send(&json!({"type": "AUTH", "token": token_with(TEST_JWT_SECRET, "u", &[], -3600)}))
        .await;
    assert_eq!(expired.recv().await["type"], "AUTH_FAIL");

    // The good connection is unaffected.
    good.ping().await;
}

#[tokio::test]
async fn websocket_is_also_served_on_the_root_path() {
    let server = TestServer::start(&[]).await;
    let mut client = WsClient::connect(&format!("ws://127.0.0.1:{}/", server.port)).await;
    assert_eq!(client.recv().await["type"], "AUTH_REQUIRED");
}

#[tokio::test]
async fn messages_before_auth_are_dropped_without_closing() {
    let server = TestServer::start(&[]).await;
    let mut client = WsClient::connect(&server.ws_url()).await;
    assert_eq!(client.recv().await["type"], "AUTH_REQUIRED");
    client
        .send(&json!({"type": "SYNC_INIT", "mapName": "todos", "lastSyncTimestamp": 0}))
        .await;
    client
        .expect_no("SYNC_RESP_ROOT", Duration::from_millis(300))
        .await;
    client
        .send(&json!({"type": "AUTH", "token": token("u")}))
        .await;
    assert_eq!(client.recv_type("AUTH_ACK").await["type"], "AUTH_ACK");
}

#[tokio::test]
async fn malformed_unknown_and_oversized_frames_get_errors_and_harm_nobody() {
    let server = TestServer::start(&[("TOPGUN_MAX_MESSAGE_BYTES", "65536".to_string())]).await;
    let mut bystander = WsClient::connect_authed(&server.ws_url(), &token("bystander")).await;
    let mut client = WsClient::connect_authed(&server.ws_url(), &token("u")).await;

    client.send_raw(vec![0xc1, 0xff, 0x00]).await;
    let err = client.recv_type("ERROR").await;
    assert_eq!(err["payload"]["code"], 400);
    assert!(
        err["payload"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Invalid message format")),
        "{err}"
    );

    client
        .send(&json!({"type": "NO_SUCH_TYPE", "payload": {}}))
        .await;
    let err = client.recv_type("ERROR").await;
    assert_eq!(err["payload"]["code"], 400);
    assert!(
        err["payload"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("NO_SUCH_TYPE")),
        "{err}"
    );

    // Wrong field types are a schema failure, not a crash.
    client
        .send(&json!({"type": "OP_BATCH", "payload": {"ops": "not-an-array"}}))
        .await;
    assert_eq!(client.recv_type("ERROR").await["payload"]["code"], 400);
    client.ping().await;

    // A frame over the limit closes this connection with a reason.
    client.send_raw(vec![0x90; 100_000]).await;
    match client.next_within(Duration::from_secs(5)).await {
        Received::Closed(code, reason) => {
            assert_eq!(code, 1009, "{reason}");
            assert_eq!(reason, "message too big");
        }
        other => panic!("expected a close, got {other:?}"),
    }

    // The process and the other connection are unharmed; new connections still work.
    bystander.ping().await;
    let mut again = WsClient::connect_authed(&server.ws_url(), &token("again")).await;
    again.ping().await;
}

#[tokio::test]
async fn test_server_exits_cleanly_on_sigterm() {
    let mut server = TestServer::start(&[]).await;
    let code = server.process.terminate(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn a_flooding_client_does_not_starve_others() {
    let server = TestServer::start(&[]).await;
    let mut bystander = WsClient::connect_authed(&server.ws_url(), &token("bystander")).await;
    let mut flooder = WsClient::connect_authed(&server.ws_url(), &token("flooder")).await;
    // Thousands of batches without reading a single reply: its outbound queue fills,
    // and the server must either keep up or disconnect it — never stall everyone.
    let flood = tokio::spawn(async move {
        for i in 0..3_000u64 {
            let ops: Vec<serde_json::Value> = (0..10)
                .map(|j| json!({"id": format!("{}", i * 10 + j + 1), "mapName": "flood", "key": format!("k{j}"), "opType": "PUT",
                               "record": {"value": i, "timestamp": {"millis": 1_700_000_000_000u64 + i, "counter": j, "nodeId": "f"}}}))
                .collect();
            flooder
                .send(&json!({"type": "OP_BATCH", "payload": {"ops": ops}}))
                .await;
        }
        flooder
    });
    for _ in 0..20 {
        let started = std::time::Instant::now();
        bystander.ping().await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "PONG took {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = flood.await;
    bystander.ping().await;
}

#[tokio::test]
async fn invalid_map_names_are_rejected_without_applying_anything() {
    let server = TestServer::start(&[]).await;
    let mut c = WsClient::connect_authed(&server.ws_url(), &token("u")).await;
    for bad in ["", "bad\u{0}name", "tab\tname"] {
        let op = json!({"id": "1", "mapName": bad, "key": "k", "opType": "PUT",
                        "record": {"value": 1, "timestamp": {"millis": 1_700_000_000_000u64, "counter": 0, "nodeId": "c"}}});
        c.send(&json!({"type": "OP_BATCH", "payload": {"ops": [op]}}))
            .await;
        let error = c.recv().await;
        assert_eq!(error["type"], "ERROR", "{bad:?}: {error}");
        assert_eq!(error["payload"]["code"], 400);
        assert_eq!(c.recv().await["type"], "OP_REJECTED");
        assert_eq!(
            c.recv().await["type"],
            "OP_ACK",
            "the client stops re-sending the refused op"
        );
    }
    // Names with dashes, dots and unicode are fine.
    let op = json!({"id": "2", "mapName": "conflict-test.v2-日本", "key": "k", "opType": "PUT",
                    "record": {"value": 1, "timestamp": {"millis": 1_700_000_000_000u64, "counter": 0, "nodeId": "c"}}});
    c.send(&json!({"type": "OP_BATCH", "payload": {"ops": [op]}}))
        .await;
    assert_eq!(c.recv().await["type"], "OP_ACK");
}

#[tokio::test]
async fn partition_map_names_this_gateway_as_owner_of_all_partitions() {
    let server = TestServer::start(&[]).await;
    let mut c = WsClient::connect_authed(&server.ws_url(), &token("u")).await;
    c.send(&json!({"type": "PARTITION_MAP_REQUEST"})).await;
    let map = c.recv_type("PARTITION_MAP").await;
    let payload = &map["payload"];
    assert_eq!(payload["version"], 1);
    assert_eq!(payload["partitionCount"], 271);
    assert_eq!(payload["nodes"][0]["status"], "ACTIVE");
    assert_eq!(
        payload["nodes"][0]["endpoints"]["websocket"],
        format!("ws://127.0.0.1:{}/ws", server.port)
    );
    let partitions = payload["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), 271);
    assert!(partitions
        .iter()
        .enumerate()
        .all(|(i, p)| p["partitionId"] == i && p["ownerNodeId"] == payload["nodes"][0]["nodeId"]));
    // A client already holding version 1 gets nothing.
    c.send(&json!({"type": "PARTITION_MAP_REQUEST", "payload": {"currentVersion": 1}}))
        .await;
    c.expect_no("PARTITION_MAP", Duration::from_millis(300))
        .await;
}
