//! Peer cluster mode of the single-process binary: three `topgun` nodes on one
//! PostgreSQL table share the 271 partitions, forward every op to its owner, re-own a
//! killed node's share within seconds (pushing the new map to connected clients) and
//! hand it back when the node returns on the same ports — without losing an
//! acknowledged write, even while two nodes briefly both believe they own a partition.

use crate::common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use topgun_proto::partition::partition_of;
use topgun_tests::postgres::{count_rows, database_url, drop_table, unique_table};
use topgun_tests::process::free_port;
use topgun_tests::{eventually, now_ms, token, Service, WsClient, TEST_JWT_SECRET};

const RECORDS: u64 = 300;

/// One node's fixed ports and its process.
struct Node {
    id: String,
    port: u16,
    cluster_port: u16,
    process: Service,
}

impl Node {
    async fn start(id: &str, seeds: &[u16], url: &str, table: &str) -> Node {
        let (port, cluster_port) = (free_port(), free_port());
        let seeds: Vec<String> = seeds.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let args = [
            "--node-id".to_string(),
            id.to_string(),
            "--port".into(),
            port.to_string(),
            "--cluster-port".into(),
            cluster_port.to_string(),
            "--seed-nodes".into(),
            seeds.join(","),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut process = Service::spawn(
            "topgun",
            &args,
            &[
                ("DATABASE_URL", url.to_string()),
                ("STORAGE_TABLE", table.to_string()),
                ("JWT_SECRET", TEST_JWT_SECRET.to_string()),
            ],
        );
        let announced = process.wait_for_port(Duration::from_secs(60)).await;
        assert_eq!(announced, port);
        Node {
            id: id.to_string(),
            port,
            cluster_port,
            process,
        }
    }

    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    async fn restart(&mut self) {
        self.process.restart();
        let announced = self.process.wait_for_port(Duration::from_secs(60)).await;
        assert_eq!(announced, self.port, "rejoins on the same port");
    }
}

/// The node's current PARTITION_MAP, asked for by a fresh client.
async fn partition_map(node: &Node) -> Value {
    let mut c = WsClient::connect_authed(&node.ws_url(), &token("map")).await;
    c.send(&json!({"type": "PARTITION_MAP_REQUEST", "payload": {"currentVersion": 0}}))
        .await;
    c.recv_type("PARTITION_MAP").await["payload"].clone()
}

fn node_ids(map: &Value) -> BTreeSet<String> {
    map["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["nodeId"].as_str().expect("nodeId").to_string())
        .collect()
}

/// Waits until every node in `nodes` answers a map listing exactly `expected` with one
/// common version; returns that map.
async fn agreed_map(nodes: &[&Node], expected: &[&str]) -> Value {
    let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
    eventually(Duration::from_secs(20), || async {
        let mut maps = Vec::new();
        for node in nodes {
            maps.push(partition_map(node).await);
        }
        let same = maps.iter().all(|m| {
            node_ids(m) == expected
                && m["version"] == maps[0]["version"]
                && m["partitions"] == maps[0]["partitions"]
        });
        same.then(|| maps[0].clone())
    })
    .await
    .unwrap_or_else(|| panic!("nodes never agreed on a map of {expected:?}"))
}

/// Partition -> owner of a map.
fn owners(map: &Value) -> BTreeMap<u32, String> {
    map["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| {
            (
                p["partitionId"].as_u64().expect("id") as u32,
                p["ownerNodeId"].as_str().expect("owner").to_string(),
            )
        })
        .collect()
}

/// Writes `w-<i>` = {"i": i} one batch at a time through `url` until `stop`, retrying a
/// batch that got an ERROR (a partition changing hands); returns the acknowledged keys.
async fn write_until(url: String, map: String, stop: Arc<tokio::sync::Notify>) -> (Vec<u64>, u64) {
    let mut c = WsClient::connect_authed(&url, &token("w")).await;
    let (mut acked, mut retried) = (Vec::new(), 0u64);
    let stopped = stop.notified();
    tokio::pin!(stopped);
    for i in 0u64.. {
        let ops: Vec<Value> = (0..5)
            .map(|j| {
                let n = i * 5 + j;
                put(
                    &n.to_string(),
                    &map,
                    &format!("w-{n}"),
                    json!({"i": n}),
                    now_ms(),
                    "w",
                )
            })
            .collect();
        let mut msg = batch(ops);
        msg["payload"]["writeConcern"] = json!("PERSISTED");
        loop {
            c.send(&msg).await;
            // Map pushes arrive unasked on every authenticated connection.
            let reply = loop {
                let m = c.recv().await;
                if m["type"] != "PARTITION_MAP" {
                    break m;
                }
            };
            match reply["type"].as_str() {
                Some("OP_ACK") => {
                    assert_eq!(reply["payload"]["achievedLevel"], "PERSISTED", "{reply}");
                    acked.extend((0..5).map(|j| i * 5 + j));
                    break;
                }
                Some("ERROR") => {
                    let code = reply["payload"]["code"].as_u64().unwrap_or(0);
                    assert!([503, 500, 504, 429].contains(&code), "retryable: {reply}");
                    retried += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => panic!("unexpected reply {reply}"),
            }
        }
        tokio::select! {
            _ = &mut stopped => break,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    (acked, retried)
}

fn assert_has_everything(all: &BTreeMap<String, Value>, acked: &[u64], who: &str) {
    for i in 0..RECORDS {
        assert_eq!(
            all.get(&format!("key-{i}")),
            Some(&json!({"i": i})),
            "{who}: key-{i}"
        );
    }
    for n in acked {
        assert_eq!(
            all.get(&format!("w-{n}")),
            Some(&json!({"i": n})),
            "{who}: w-{n}"
        );
    }
}

#[tokio::test]
async fn a_peer_cluster_shares_partitions_and_survives_a_node_dying_and_returning() {
    let url = database_url();
    let table = unique_table("peer_cluster");
    let n1 = Node::start("node-1", &[], &url, &table).await;
    let n2 = Node::start("node-2", &[n1.cluster_port], &url, &table).await;
    let mut n3 = Node::start("node-3", &[n1.cluster_port], &url, &table).await;

    // Every node knows all three, with one version and one table.
    let full = agreed_map(&[&n1, &n2, &n3], &["node-1", "node-2", "node-3"]).await;
    let v_full = full["version"].as_u64().expect("version");
    assert_eq!(full["partitionCount"], 271);
    for node in full["nodes"].as_array().expect("nodes") {
        let ws = node["endpoints"]["websocket"].as_str().expect("websocket");
        assert!(
            ws.starts_with("ws://127.0.0.1:") && ws.matches('/').count() == 2,
            "no path: {ws}"
        );
        assert_eq!(node["status"], "ACTIVE");
    }
    let table_full = owners(&full);
    assert_eq!(table_full.len(), 271);
    for id in ["node-1", "node-2", "node-3"] {
        let share = table_full.values().filter(|o| *o == id).count();
        assert!((90..=91).contains(&share), "{id} owns {share}");
    }

    // Writes through one node land on all three owners and read back from another.
    let map = map_name("peers");
    let mut c1 = WsClient::connect_authed(&n1.ws_url(), &token("w")).await;
    write_persisted(&mut c1, &map, RECORDS).await;
    let owners_used: BTreeSet<&String> = (0..RECORDS)
        .map(|i| &table_full[&partition_of(&format!("key-{i}"))])
        .collect();
    assert_eq!(owners_used.len(), 3, "keys spread over every node");
    let mut r2 = WsClient::connect_authed(&n2.ws_url(), &token("r")).await;
    assert_has_everything(&read_all(&mut r2, &map).await, &[], "node-2 before failure");

    // An idle client on node-1 is told about every change without asking.
    let mut watcher = WsClient::connect_authed(&n1.ws_url(), &token("watch")).await;
    let stop = Arc::new(tokio::sync::Notify::new());
    let writer = tokio::spawn(write_until(n2.ws_url(), map.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;

    n3.process.kill_9().await;
    let pushed = watcher.recv_type("PARTITION_MAP").await["payload"].clone();
    assert_eq!(
        node_ids(&pushed),
        BTreeSet::from(["node-1".to_string(), "node-2".to_string()])
    );
    let v_two = pushed["version"].as_u64().expect("version");
    assert!(v_two > v_full, "version {v_two} after {v_full}");
    let two = agreed_map(&[&n1, &n2], &["node-1", "node-2"]).await;
    assert!(two["version"].as_u64().expect("version") >= v_two);
    tokio::time::sleep(Duration::from_secs(1)).await;

    n3.restart().await;
    let back = loop {
        let m = watcher.recv_type("PARTITION_MAP").await["payload"].clone();
        if node_ids(&m).len() == 3 {
            break m;
        }
    };
    assert!(back["version"].as_u64().expect("version") > v_two);
    agreed_map(&[&n1, &n2, &n3], &["node-1", "node-2", "node-3"]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.notify_one();
    let (acked, retried) = writer.await.expect("writer");
    assert!(
        acked.len() >= 20,
        "the writer kept going: {} acked",
        acked.len()
    );
    eprintln!("writer: {} acked, {retried} batches retried", acked.len());

    // Nothing acknowledged is missing on any node — including the restarted one, whose
    // partitions were owned by the survivors in between — nor in PostgreSQL.
    for node in [&n1, &n2, &n3] {
        // A partition handed back is reloaded twice (at the switch and shortly after).
        let read = || async {
            let mut reader = WsClient::connect_authed(&node.ws_url(), &token("r")).await;
            read_all(&mut reader, &map).await
        };
        let expected = RECORDS as usize + acked.len();
        let complete = eventually(Duration::from_secs(10), || async {
            let all = read().await;
            (all.len() == expected).then_some(all)
        })
        .await;
        let all = match complete {
            Some(all) => all,
            None => read().await,
        };
        assert_has_everything(&all, &acked, &node.id);
    }
    let rows = count_rows(&url, &table).await;
    assert!(
        rows >= (RECORDS as usize + acked.len()) as i64,
        "{rows} rows stored"
    );
    drop_table(&url, &table).await;
}

/// A `topgun` process on the shared table that believes it owns every partition.
async fn standalone_owner(url: &str, table: &str) -> topgun_tests::TestServer {
    topgun_tests::TestServer::start_bin(
        "topgun",
        &["--port", "0"],
        &[
            ("DATABASE_URL", url.to_string()),
            ("STORAGE_TABLE", table.to_string()),
            ("JWT_SECRET", TEST_JWT_SECRET.to_string()),
        ],
    )
    .await
}

#[tokio::test]
async fn two_nodes_owning_the_same_partitions_lose_and_corrupt_nothing() {
    // The worst case of a membership switch, held open: two nodes accept writes for the
    // same keys at once, each merging in memory and writing through to one table.
    let url = database_url();
    let table = unique_table("double_owner");
    let x = standalone_owner(&url, &table).await;
    let y = standalone_owner(&url, &table).await;
    let map = map_name("contested");
    const KEYS: u64 = 200;
    let base = now_ms();
    // Key j: x's write wins for odd j, y's for even j, whatever order they land in.
    let stamp = |j: u64, writer_wins: bool| base + j * 10 + u64::from(writer_wins);
    let write = |url: String, who: &'static str, wins_on_odd: bool| {
        let map = map.clone();
        async move {
            let mut c = WsClient::connect_authed(&url, &token(who)).await;
            for chunk in (0..KEYS).collect::<Vec<_>>().chunks(20) {
                let mut ops: Vec<Value> = chunk
                    .iter()
                    .map(|&j| {
                        let wins = (j % 2 == 1) == wins_on_odd;
                        put(
                            &format!("{who}{j}"),
                            &map,
                            &format!("k-{j}"),
                            json!({"by": who, "j": j}),
                            stamp(j, wins),
                            who,
                        )
                    })
                    .collect();
                // Keys only this node writes.
                ops.extend(chunk.iter().map(|&j| {
                    put(
                        &format!("{who}o{j}"),
                        &map,
                        &format!("{who}-only-{j}"),
                        json!(j),
                        base,
                        who,
                    )
                }));
                let mut msg = batch(ops);
                msg["payload"]["writeConcern"] = json!("PERSISTED");
                c.send(&msg).await;
                let reply = c.recv().await;
                assert_eq!(reply["type"], "OP_ACK", "{who}: {reply}");
                assert_eq!(reply["payload"]["achievedLevel"], "PERSISTED", "{reply}");
            }
        }
    };
    tokio::join!(
        write(format!("ws://127.0.0.1:{}/ws", x.port), "x", true),
        write(format!("ws://127.0.0.1:{}/ws", y.port), "y", false),
    );

    // A third owner loads the partitions from PostgreSQL: newest write of every key,
    // and every key either node wrote.
    let z = standalone_owner(&url, &table).await;
    let mut reader =
        WsClient::connect_authed(&format!("ws://127.0.0.1:{}/ws", z.port), &token("r")).await;
    let all = read_all(&mut reader, &map).await;
    assert_eq!(
        all.len() as u64,
        KEYS * 3,
        "contested keys plus each node's own"
    );
    for j in 0..KEYS {
        let winner = if j % 2 == 1 { "x" } else { "y" };
        assert_eq!(
            all[&format!("k-{j}")],
            json!({"by": winner, "j": j}),
            "k-{j}"
        );
        assert_eq!(all[&format!("x-only-{j}")], json!(j));
        assert_eq!(all[&format!("y-only-{j}")], json!(j));
    }
    drop_table(&url, &table).await;
}
