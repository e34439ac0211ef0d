//! The search replica's ops HTTP port, in-process against a real (memory-only) sync
//! shard: ready once the bootstrap is searchable, `/health` lists the shard, and
//! `/metrics` follows indexing and searches.

use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use topgun_proto::grpc::common::{LwwRecord, Timestamp, WriteConcern};
use topgun_proto::grpc::search::search_service_client::SearchServiceClient;
use topgun_proto::grpc::search::SearchRequest;
use topgun_proto::grpc::sync::sync_service_client::SyncServiceClient;
use topgun_proto::grpc::sync::{op, ApplyBatchRequest, Op};
use topgun_proto::wire::encode_value;
use topgun_search::SearchConfig;

const PATIENCE: Duration = Duration::from_secs(15);

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Polls `check` every 25 ms until it gives `Some`, or panics naming `what`.
async fn eventually<T, Fut: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> Fut,
) -> T {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn metrics(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body")
}

#[tokio::test]
async fn readiness_health_and_metrics_follow_ingestion_and_searches() {
    let sync_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let sync_url = format!("http://{}", sync_listener.local_addr().expect("addr"));
    let (sync_stop, sync_stopped) = oneshot::channel::<()>();
    let sync = tokio::spawn(topgun_sync::serve_with_listener(
        sync_listener,
        topgun_sync::SyncConfig::default(),
        async move {
            let _ = sync_stopped.await;
        },
    ));

    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let ops = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let search_url = format!("http://{}", grpc.local_addr().expect("addr"));
    let base = format!("http://{}", ops.local_addr().expect("addr"));
    let config = SearchConfig {
        sync_addrs: vec![sync_url.clone()],
        commit_interval_ms: 20,
        ..SearchConfig::default()
    };
    let (search_stop, search_stopped) = oneshot::channel::<()>();
    let search = tokio::spawn(topgun_search::serve_with_ops(
        grpc,
        Some(ops),
        config,
        async move {
            let _ = search_stopped.await;
        },
    ));

    eventually("the replica to be ready", || async {
        let resp = reqwest::get(format!("{base}/health/ready")).await.ok()?;
        (resp.status() == 200).then_some(())
    })
    .await;
    let doc: serde_json::Value = reqwest::get(format!("{base}/health"))
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(doc["service"], "search-service");
    assert_eq!(doc["state"], "ready");
    assert_eq!(doc["bootstrapped"], true);
    assert_eq!(doc["shards"][0]["address"], sync_url.as_str());

    let mut writer = SyncServiceClient::connect(sync_url.clone())
        .await
        .expect("connect");
    let title = rmpv::Value::Map(vec![(
        rmpv::Value::from("title"),
        rmpv::Value::from("ops port"),
    )]);
    writer
        .apply_batch(ApplyBatchRequest {
            ops: vec![Op {
                op_id: String::new(),
                map_name: "docs".into(),
                key: "d1".into(),
                kind: Some(op::Kind::LwwPut(LwwRecord {
                    value: encode_value(&title),
                    timestamp: Some(Timestamp {
                        millis: 1,
                        counter: 0,
                        node_id: "w".into(),
                    }),
                    ttl_ms: None,
                })),
            }],
            write_concern: WriteConcern::Applied as i32,
            origin: None,
        })
        .await
        .expect("write");
    let text = eventually("the document to be indexed", || async {
        let text = metrics(&base).await;
        (sample(&text, "topgun_search_documents_indexed") == Some(1.0)).then_some(text)
    })
    .await;
    // Nobody searched the map yet: its write is buffered, not committed.
    assert_eq!(
        sample(&text, "topgun_search_commits_total"),
        Some(0.0),
        "{text}"
    );
    let lag = format!("topgun_search_index_lag_events{{shard=\"{sync_url}\"}}");
    assert!(sample(&text, &lag).is_some(), "{lag} in\n{text}");

    let mut client = SearchServiceClient::connect(search_url)
        .await
        .expect("connect");
    let hits = client
        .search(SearchRequest {
            map_name: "docs".into(),
            query: "ops".into(),
            limit: 5,
            min_score: None,
        })
        .await
        .expect("search")
        .into_inner()
        .hits;
    assert_eq!(hits.len(), 1);
    let text = metrics(&base).await;
    assert_eq!(
        sample(&text, "topgun_search_commits_total"),
        Some(1.0),
        "the search committed the buffered write: {text}"
    );
    assert_eq!(
        sample(
            &text,
            "topgun_search_searches_total{kind=\"one_shot\",outcome=\"ok\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "topgun_search_search_duration_seconds_count{kind=\"one_shot\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "topgun_search_live_subscriptions"), Some(0.0));

    search_stop.send(()).expect("search running");
    tokio::time::timeout(Duration::from_secs(40), search)
        .await
        .expect("search stops")
        .expect("task")
        .expect("clean exit");
    assert!(reqwest::get(format!("{base}/health/live")).await.is_err());
    sync_stop.send(()).expect("sync running");
    let _ = tokio::time::timeout(Duration::from_secs(40), sync).await;
}
