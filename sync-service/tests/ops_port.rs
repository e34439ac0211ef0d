//! The shard's ops HTTP port, in-process: readiness after the load, the `/health`
//! document, and metrics that move with real gRPC traffic.

use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use topgun_proto::grpc::common as pbc;
use topgun_proto::grpc::sync as pb;
use topgun_proto::grpc::sync::sync_service_client::SyncServiceClient;
use topgun_proto::wire;
use topgun_sync::SyncConfig;

fn put(key: &str, millis: u64) -> pb::Op {
    pb::Op {
        op_id: format!("put-{key}"),
        map_name: "users".into(),
        key: key.into(),
        kind: Some(pb::op::Kind::LwwPut(pbc::LwwRecord {
            value: wire::encode_value(&rmpv::Value::from(millis)),
            timestamp: Some(pbc::Timestamp {
                millis,
                counter: 0,
                node_id: "client".into(),
            }),
            ttl_ms: None,
        })),
    }
}

/// The value of an unlabelled or fully labelled sample line in a text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn health_and_metrics_follow_the_shard() {
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let ops = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let grpc_url = format!("http://{}", grpc.local_addr().expect("addr"));
    let ops_url = format!("http://{}", ops.local_addr().expect("addr"));
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(topgun_sync::serve_with_ops(
        grpc,
        Some(ops),
        SyncConfig::default(),
        async move {
            let _ = stopped.await;
        },
    ));

    // Memory-only: the load is immediate, so readiness follows quickly.
    let mut ready = false;
    for _ in 0..100 {
        if let Ok(resp) = reqwest::get(format!("{ops_url}/health/ready")).await {
            if resp.status() == 200 {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the shard never reported ready");
    let doc: serde_json::Value = reqwest::get(format!("{ops_url}/health"))
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(doc["service"], "sync-service");
    assert_eq!(doc["state"], "ready");
    assert_eq!(doc["partitions"], 271);
    assert_eq!(doc["ownership_version"], 0);
    assert_eq!(doc["node_id"], "sync-0");

    let mut client = SyncServiceClient::connect(grpc_url).await.expect("connect");
    let results = client
        .apply_batch(pb::ApplyBatchRequest {
            ops: vec![put("a", 1), put("b", 1)],
            write_concern: pbc::WriteConcern::Applied as i32,
            origin: None,
        })
        .await
        .expect("apply")
        .into_inner()
        .results;
    assert!(results.iter().all(|r| r.success && r.changed));
    let mut feed = client
        .subscribe_changes(pb::SubscribeChangesRequest::default())
        .await
        .expect("subscribe")
        .into_inner();
    feed.message().await.expect("greeting").expect("open");

    let resp = reqwest::get(format!("{ops_url}/metrics"))
        .await
        .expect("metrics");
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = resp.text().await.expect("body");
    let expect = |series: &str, value: f64| {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    };
    expect(
        "topgun_sync_ops_applied_total{kind=\"lww_put\",result=\"changed\"}",
        2.0,
    );
    expect("topgun_sync_apply_batch_duration_seconds_count", 1.0);
    expect("topgun_sync_change_feed_last_seq", 2.0);
    expect("topgun_sync_change_feed_subscribers", 1.0);
    expect("topgun_sync_pending_rows", 0.0);
    expect("topgun_sync_topic_messages_skipped_total", 0.0);

    stop.send(()).expect("server running");
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("stops")
        .expect("task")
        .expect("clean exit");
    assert!(
        reqwest::get(format!("{ops_url}/health/live"))
            .await
            .is_err(),
        "the ops port closes with the shard"
    );
}
