//! The distributed suite as separate processes: two gateways, two sync shards, two
//! search replicas, storage on PostgreSQL — cross-gateway fan-out and failures.

use crate::common::*;
use crate::merkle_sync::merkle_walk;
use serde_json::json;
use std::time::Duration;
use topgun_tests::postgres::{database_url, drop_table, unique_table};
use topgun_tests::{token, Layout, Storage, Suite, WsClient};

fn layout(storage: Storage) -> Layout {
    Layout {
        shards: 2,
        search_replicas: 2,
        gateways: 2,
        storage,
        internal_tls: false,
        logs: None,
    }
}

#[tokio::test]
async fn a_client_on_one_gateway_sees_everything_caused_on_the_other() {
    let suite = Suite::start(layout(Storage::Null)).await;
    let map = map_name("cross");
    let mut watcher = WsClient::connect_authed(&suite.ws_url_of(0), &token("a")).await;
    let mut writer = WsClient::connect_authed(&suite.ws_url_of(1), &token("b")).await;

    watcher.send(&json!({"type": "QUERY_SUB", "payload": {"queryId": "q", "mapName": map, "query": {"where": {"kind": "news"}}}})).await;
    watcher.recv_type("QUERY_RESP").await;
    watcher.send(&json!({"type": "SEARCH_SUB", "payload": {"subscriptionId": "s", "mapName": map, "query": "breaking"}})).await;
    watcher.recv_type("SEARCH_RESP").await;
    for c in [&mut watcher, &mut writer] {
        c.send(&json!({"type": "TOPIC_SUB", "payload": {"topic": "alerts"}}))
            .await;
        c.ping().await;
    }

    writer
        .send(&batch(vec![put(
            "1",
            &map,
            "n1",
            json!({"kind": "news", "title": "breaking story"}),
            1_700_000_000_000,
            "b",
        )]))
        .await;
    writer.recv_type("OP_ACK").await;
    writer
        .send(&json!({"type": "TOPIC_PUB", "payload": {"topic": "alerts", "data": "hello from B"}}))
        .await;

    let mut seen = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.len() < 4 {
        assert!(tokio::time::Instant::now() < deadline, "saw only {seen:?}");
        let m = watcher.recv().await;
        match m["type"].as_str().unwrap_or_default() {
            "SERVER_EVENT" => {
                assert_eq!(m["payload"]["key"], "n1");
                seen.insert("SERVER_EVENT");
            }
            "QUERY_UPDATE" => {
                assert_eq!(m["payload"]["changeType"], "ENTER");
                seen.insert("QUERY_UPDATE");
            }
            "SEARCH_UPDATE" => {
                assert_eq!(m["payload"]["key"], "n1");
                seen.insert("SEARCH_UPDATE");
            }
            "TOPIC_MESSAGE" => {
                assert_eq!(m["payload"]["data"], "hello from B");
                seen.insert("TOPIC_MESSAGE");
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn clients_of_a_killed_gateway_resync_through_the_other() {
    let mut suite = Suite::start(layout(Storage::Null)).await;
    let map = map_name("failover");
    let mut c = WsClient::connect_authed(&suite.ws_url_of(0), &token("u")).await;
    let mut tree = ClientTree::default();
    let ops = (0..40).map(|i| {
        tree.put(&format!("k{i}"), 1_700_000_000_000 + i, 0, "u");
        put(
            &(i + 1).to_string(),
            &map,
            &format!("k{i}"),
            json!(i),
            1_700_000_000_000 + i,
            "u",
        )
    });
    c.send(&batch(ops.collect())).await;
    c.recv_type("OP_ACK").await;
    // Another client writes more through gateway B while the first is connected to A.
    let mut other = WsClient::connect_authed(&suite.ws_url_of(1), &token("o")).await;
    other
        .send(&batch(vec![put(
            "1",
            &map,
            "from-b",
            json!("b"),
            1_700_000_001_000,
            "o",
        )]))
        .await;
    other.recv_type("OP_ACK").await;

    suite.gateways[0].kill_9().await;
    // The client reconnects to the surviving gateway and Merkle-syncs only what it lacks.
    let mut c = WsClient::connect_authed(&suite.ws_url_of(1), &token("u")).await;
    let got = merkle_walk(&mut c, &map, &tree).await;
    assert!(got.contains_key("from-b"), "{got:?}");
    assert!(
        got.len() <= 3,
        "only the missing record (and leaf neighbours): {}",
        got.len()
    );
}

#[tokio::test]
async fn restarting_storage_and_postgres_needs_no_other_restart() {
    let pg = topgun_tests::postgres::PrivateCluster::start_new();
    let mut suite = Suite::start(Layout {
        search_replicas: 0,
        gateways: 1,
        shards: 2,
        storage: Storage::Postgres {
            url: pg.url(),
            table: "topgun_maps".into(),
        },
        internal_tls: false,
        logs: None,
    })
    .await;
    let map = map_name("restart");
    let mut c = WsClient::connect_authed(&suite.ws_url(), &token("u")).await;
    write_persisted(&mut c, &map, 20).await;

    let storage = suite.storage.as_mut().expect("storage process");
    storage.kill_9().await;
    pg.stop();
    pg.start();
    storage.restart();

    // Writes succeed again once storage is back, without touching shards or gateway.
    let mut msg = batch(vec![put(
        "500",
        &map,
        "after",
        json!(1),
        1_800_000_000_000,
        "u",
    )]);
    msg["payload"]["writeConcern"] = json!("PERSISTED");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        c.send(&msg).await;
        let reply = c.recv().await;
        if reply["type"] == "OP_ACK" {
            assert_eq!(reply["payload"]["achievedLevel"], "PERSISTED");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no recovery: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(read_all(&mut c, &map).await.len(), 21);
}

#[tokio::test]
async fn partition_ownership_is_disjoint_and_complete_across_shards() {
    let url = database_url();
    let table = unique_table("ownership");
    let suite = Suite::start(Layout {
        search_replicas: 0,
        gateways: 1,
        shards: 2,
        storage: Storage::Postgres {
            url: url.clone(),
            table: table.clone(),
        },
        internal_tls: false,
        logs: None,
    })
    .await;
    let status: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/admin/cluster/status", suite.http_url()))
        .bearer_auth(topgun_tests::admin_token())
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    let owners: Vec<&str> = status["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| p["ownerNodeId"].as_str().expect("owner"))
        .collect();
    assert_eq!(owners.len(), 271);
    let on_0 = owners.iter().filter(|o| **o == "sync-0").count();
    let on_1 = owners.iter().filter(|o| **o == "sync-1").count();
    assert_eq!(
        on_0 + on_1,
        271,
        "every partition has exactly one of the two owners"
    );
    assert!(on_0 > 100 && on_1 > 100, "{on_0} / {on_1}");
    drop(suite);
    drop_table(&url, &table).await;
}

#[tokio::test]
async fn a_policy_created_on_one_gateway_applies_on_every_gateway_and_survives_restarts() {
    let mut suite = Suite::start(Layout {
        search_replicas: 0,
        gateways: 2,
        shards: 2,
        storage: Storage::Null,
        internal_tls: false,
        logs: None,
    })
    .await;
    let map = map_name("guarded");
    let admin = reqwest::Client::new();
    let resp = admin
        .post(format!("{}/api/admin/policies", suite.http_url_of(0)))
        .bearer_auth(topgun_tests::admin_token())
        .json(
            &json!({"id": "deny-guarded", "mapPattern": map, "action": "write", "effect": "deny"}),
        )
        .send()
        .await
        .expect("create policy");
    assert_eq!(resp.status(), 201);

    let mut on_b = WsClient::connect_authed(&suite.ws_url_of(1), &token("u")).await;
    // The policy travels to gateway B through the change feed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut denied = None;
    let mut attempt = 0u64;
    while denied.is_none() && tokio::time::Instant::now() < deadline {
        attempt += 1;
        on_b.send(&batch(vec![put(
            &attempt.to_string(),
            &map,
            "k",
            json!(1),
            1_700_000_000_000 + attempt,
            "u",
        )]))
        .await;
        let first = on_b.recv().await;
        // Drain the rest of this attempt's replies.
        while let topgun_tests::ws_client::Received::Message(_) =
            on_b.next_within(Duration::from_millis(200)).await
        {}
        if first["type"] == "ERROR" && first["payload"]["code"] == 403 {
            denied = Some(());
        }
    }
    assert!(denied.is_some(), "the policy reached gateway B");

    // A restarted gateway loads the stored policies before it reports ready.
    suite.gateways[1].kill_9().await;
    suite.gateways[1].restart();
    suite.wait_ready(1, Duration::from_secs(60)).await;
    let mut again = WsClient::connect_authed(&suite.ws_url_of(1), &token("u")).await;
    again
        .send(&batch(vec![put(
            "2",
            &map,
            "k",
            json!(2),
            1_700_000_000_001,
            "u",
        )]))
        .await;
    assert_eq!(again.recv().await["payload"]["code"], 403);

    while let topgun_tests::ws_client::Received::Message(_) =
        again.next_within(Duration::from_millis(200)).await
    {}
    // Clients cannot touch the system map that holds the policies.
    again
        .send(&batch(vec![put(
            "3",
            "$sys/policies",
            "deny-guarded",
            json!(null),
            1_900_000_000_000,
            "u",
        )]))
        .await;
    let error = again.recv().await;
    assert_eq!(error["type"], "ERROR");
    assert_eq!(error["payload"]["code"], 403);
}

#[tokio::test]
async fn sigkill_of_a_shard_under_write_load_fails_only_its_partitions_and_loses_nothing() {
    use topgun_proto::partition::{partition_of, shard_of_partition};
    let url = database_url();
    let table = unique_table("under_load");
    let mut suite = Suite::start(Layout {
        search_replicas: 0,
        gateways: 1,
        shards: 2,
        storage: Storage::Postgres {
            url: url.clone(),
            table: table.clone(),
        },
        internal_tls: false,
        logs: None,
    })
    .await;
    let map = map_name("load");
    let key_on = |shard: u32, n: u64| {
        (n * 1000..)
            .map(|i| format!("k{i}"))
            .find(|k| shard_of_partition(partition_of(k), 2) == shard)
            .expect("a key")
    };
    let mut c = WsClient::connect_authed(&suite.ws_url(), &token("w")).await;
    let mut acked: std::collections::BTreeMap<String, u64> = Default::default();
    let (mut ok_other_during_outage, mut failed_dead_during_outage) = (0, 0);
    let mut id = 0u64;
    for round in 0..60u64 {
        if round == 20 {
            suite.shards[0].kill_9().await;
        }
        if round == 40 {
            suite.shards[0].restart();
            suite.wait_ready(0, Duration::from_secs(60)).await;
        }
        for shard in [0u32, 1] {
            id += 1;
            let key = key_on(shard, round);
            let mut msg = batch(vec![put(
                &id.to_string(),
                &map,
                &key,
                json!(round),
                1_700_000_000_000 + id,
                "w",
            )]);
            msg["payload"]["writeConcern"] = json!("PERSISTED");
            c.send(&msg).await;
            let reply = c.recv().await;
            let outage = (20..40).contains(&round);
            match reply["type"].as_str() {
                Some("OP_ACK") => {
                    acked.insert(key, round);
                    if outage && shard == 1 {
                        ok_other_during_outage += 1;
                    }
                }
                Some("ERROR") => {
                    assert!(
                        [503u64, 500, 429]
                            .contains(&reply["payload"]["code"].as_u64().unwrap_or(0)),
                        "{reply}"
                    );
                    assert!(
                        outage && shard == 0,
                        "only the dead shard's ops fail: round {round} shard {shard}: {reply}"
                    );
                    failed_dead_during_outage += 1;
                }
                other => panic!("unexpected reply {other:?}: {reply}"),
            }
        }
    }
    assert_eq!(
        ok_other_during_outage, 20,
        "the live shard kept accepting writes"
    );
    assert_eq!(
        failed_dead_during_outage, 20,
        "the dead shard's ops got retryable errors"
    );

    // Every acknowledged write is there, and a fresh client's Merkle sync converges.
    let mut reader = WsClient::connect_authed(&suite.ws_url(), &token("r")).await;
    let all = read_all(&mut reader, &map).await;
    for (key, round) in &acked {
        assert_eq!(all.get(key), Some(&json!(round)), "{key}");
    }
    let synced = merkle_walk(&mut reader, &map, &ClientTree::default()).await;
    let mut tree = ClientTree::default();
    for (key, record) in &synced {
        let ts = &record["timestamp"];
        tree.put(
            key,
            ts["millis"].as_u64().expect("millis"),
            ts["counter"].as_u64().expect("counter"),
            ts["nodeId"].as_str().expect("node"),
        );
    }
    assert_eq!(synced.len(), acked.len());
    assert!(
        merkle_walk(&mut reader, &map, &tree).await.is_empty(),
        "second sync finds nothing to transfer"
    );
    drop(suite);
    drop_table(&url, &table).await;
}

#[tokio::test]
async fn internal_grpc_runs_over_mutual_tls_and_refuses_plaintext() {
    let suite = Suite::start(Layout {
        search_replicas: 1,
        gateways: 1,
        shards: 2,
        storage: Storage::Null,
        internal_tls: true,
        logs: None,
    })
    .await;
    assert!(suite.shard_addrs.iter().all(|a| a.starts_with("https://")));
    let map = map_name("tls");
    let mut c = WsClient::connect_authed(&suite.ws_url(), &token("u")).await;
    write_persisted(&mut c, &map, 30).await;
    assert_eq!(read_all(&mut c, &map).await.len(), 30);
    // The search replica ingests from the shards, and answers the gateway, over TLS too.
    c.send(&batch(vec![put(
        "9000",
        &map,
        "doc",
        json!({"t": "needle"}),
        1_800_000_000_000,
        "u",
    )]))
    .await;
    c.recv_type("OP_ACK").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        c.send(&json!({"type": "SEARCH", "payload": {"requestId": "s", "mapName": map, "query": "needle"}}))
            .await;
        let resp = c.recv_type("SEARCH_RESP").await;
        assert!(resp["payload"].get("error").is_none(), "{resp}");
        if resp["payload"]["results"][0]["key"] == "doc" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never indexed over TLS: {resp}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A plaintext client cannot talk to a shard.
    let plain = suite.shard_addrs[0].replace("https://", "http://");
    let mut client =
        topgun_proto::grpc::sync::sync_service_client::SyncServiceClient::connect(plain)
            .await
            .expect("lazy TCP connect succeeds");
    let result = client
        .shard_info(topgun_proto::grpc::sync::ShardInfoRequest {})
        .await;
    assert!(
        result.is_err(),
        "plaintext call must fail against a TLS shard"
    );
}
