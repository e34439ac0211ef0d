//! The storage service's ops HTTP port, through `serve()` as the binary runs it: ready
//! once the store is open, `/health` names the backend, and `/metrics` counts the
//! gRPC traffic.

use std::time::Duration;
use tempfile::TempDir;
use topgun_proto::grpc::common as pb_common;
use topgun_proto::grpc::storage as pb;
use topgun_proto::grpc::storage::storage_service_client::StorageServiceClient;
use topgun_storage::StorageConfig;

/// A loopback port that was free a moment ago.
fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

fn upsert(key: &str) -> pb::Mutation {
    pb::Mutation {
        kind: Some(pb::mutation::Kind::Upsert(pb::StoredRecord {
            map_name: "m".into(),
            key: key.into(),
            partition: topgun_proto::partition::partition_of(key),
            kind: pb::RecordKind::Lww as i32,
            value: b"v".to_vec(),
            timestamp: Some(pb_common::Timestamp {
                millis: 1,
                counter: 0,
                node_id: "n".into(),
            }),
            tombstone: false,
            ttl_ms: None,
            expires_at_ms: 0,
        })),
    }
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn serve_exposes_health_and_metrics_of_the_open_store() {
    let dir = TempDir::new().expect("tempdir");
    let (grpc, http) = (free_addr(), free_addr());
    let config = StorageConfig {
        grpc_addr: grpc,
        http_addr: http.to_string(),
        backend: Some("sqlite".into()),
        data_dir: dir.path().to_path_buf(),
        ..StorageConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(topgun_storage::serve(config, async move {
        let _ = stopped.await;
    }));
    let base = format!("http://{http}");

    let mut ready = false;
    for _ in 0..200 {
        if let Ok(resp) = reqwest::get(format!("{base}/health/ready")).await {
            if resp.status() == 200 {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ready, "storage never reported ready");
    let doc: serde_json::Value = reqwest::get(format!("{base}/health"))
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(doc["service"], "storage-service");
    assert_eq!(doc["state"], "ready");
    assert_eq!(doc["backend"], "sqlite");

    let mut client = StorageServiceClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect");
    client
        .write_batch(pb::WriteBatchRequest {
            mutations: vec![upsert("a"), upsert("b")],
        })
        .await
        .expect("write");
    let bad = client
        .write_batch(pb::WriteBatchRequest {
            mutations: vec![upsert("nul\0key")],
        })
        .await
        .expect_err("a key with NUL is refused");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    client
        .list_maps(pb::ListMapsRequest {})
        .await
        .expect("list");

    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    let expect = |series: &str, value: f64| {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    };
    expect("topgun_storage_write_batches_total", 1.0);
    expect("topgun_storage_mutations_total", 2.0);
    expect("topgun_storage_rows_written_total", 2.0);
    expect(
        "topgun_storage_batch_write_duration_seconds_count{backend=\"sqlite\"}",
        1.0,
    );
    expect("topgun_storage_load_calls_total{call=\"list_maps\"}", 1.0);
    expect(
        "topgun_storage_errors_total{call=\"write_batch\",class=\"invalid_input\"}",
        1.0,
    );

    stop.send(()).expect("server running");
    tokio::time::timeout(Duration::from_secs(40), server)
        .await
        .expect("stops")
        .expect("task")
        .expect("clean exit");
    assert!(reqwest::get(format!("{base}/health/live")).await.is_err());
}
