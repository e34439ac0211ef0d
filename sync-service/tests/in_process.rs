//! A running shard is reachable in-process by the address it listens on (how the
//! single-process binaries' gateway and search replica call it), with the same token
//! check as over the network, and only while it runs; its change feed is read there
//! without the gRPC codec.

use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Endpoint;
use tonic::Code;
use topgun_proto::grpc::common as pbc;
use topgun_proto::grpc::sync as pb;
use topgun_proto::grpc::sync::sync_service_client::SyncServiceClient;
use topgun_proto::grpc::sync::ShardInfoRequest;
use topgun_proto::in_process::InternalChannel;
use topgun_proto::internal_auth::TokenAttach;
use topgun_proto::local_feed::{self, ChangeStream};
use topgun_proto::wire;
use topgun_sync::SyncConfig;

/// A channel to `addr` whose network side leads nowhere: any answer came in-process.
fn channel_with_dead_network_side(addr: &str) -> InternalChannel {
    let nowhere = Endpoint::from_static("http://127.0.0.1:1")
        .connect_timeout(Duration::from_millis(200))
        .connect_lazy();
    InternalChannel::new(addr, nowhere)
}

#[tokio::test]
async fn a_running_shard_answers_in_process_with_its_token_check_and_stops_doing_so_when_stopped() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = format!("http://{}", listener.local_addr().expect("addr"));
    let channel = channel_with_dead_network_side(&addr);
    assert!(!channel.is_in_process(), "nothing serves {addr} yet");

    let config = SyncConfig {
        internal_token: Some("in-process-secret".into()),
        ..SyncConfig::default()
    };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(topgun_sync::serve_with_listener(
        listener,
        config,
        async move {
            let _ = stop_rx.await;
        },
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !channel.is_in_process() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the shard never registered in-process"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let token = TokenAttach::new(Some("in-process-secret")).expect("token");
    let mut client = SyncServiceClient::new(InterceptedService::new(
        channel.clone(),
        token.interceptor(),
    ));
    let info = client
        .shard_info(ShardInfoRequest {})
        .await
        .expect("ShardInfo answered in-process")
        .into_inner();
    assert_eq!(info.shard_count, 1);

    let mut anonymous = SyncServiceClient::new(channel.clone());
    let refused = anonymous
        .shard_info(ShardInfoRequest {})
        .await
        .expect_err("a call without the internal token is refused in-process too");
    assert_eq!(refused.code(), Code::Unauthenticated);

    let _ = stop_tx.send(());
    server
        .await
        .expect("server task")
        .expect("server stopped cleanly");
    assert!(!channel.is_in_process());
    let after = client
        .shard_info(ShardInfoRequest {})
        .await
        .expect_err("a stopped shard is no longer reachable in-process");
    assert_eq!(after.code(), Code::Unavailable);
}

/// Opens the shard's feed the way the single-process followers do.
async fn follow(addr: &str, map_names: Vec<String>) -> Result<ChangeStream, tonic::Status> {
    local_feed::subscribe(
        addr,
        pb::SubscribeChangesRequest {
            map_names,
            from_seq: 0,
            epoch: String::new(),
        },
        |_| async { Err(tonic::Status::unavailable("the network side was used")) },
    )
    .await
}

#[tokio::test]
async fn followers_in_the_process_read_the_shards_feed_directly_with_the_rpcs_checks_and_end() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(topgun_sync::serve_with_listener(
        listener,
        SyncConfig::default(),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let channel = channel_with_dead_network_side(&addr);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        // The feed is offered once the shard has loaded (SubscribeChanges refuses before).
        match follow(&addr, Vec::new()).await {
            Ok(ChangeStream::Local(stream)) => break ChangeStream::Local(stream),
            Ok(ChangeStream::Grpc(_)) => panic!("a shard in this process is followed over gRPC"),
            Err(status) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the feed never opened: {status}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let greeting = stream.message().await.expect("ok").expect("greeting");
    assert!(greeting.events.is_empty());
    assert!(!greeting.epoch.is_empty());

    let refused = follow(&addr, vec![String::new()])
        .await
        .expect_err("an empty map name is refused as SubscribeChanges refuses it");
    assert_eq!(refused.code(), Code::InvalidArgument);

    let mut client = SyncServiceClient::new(channel.clone());
    client
        .apply_batch(pb::ApplyBatchRequest {
            ops: vec![pb::Op {
                op_id: "put-1".into(),
                map_name: "users".into(),
                key: "alice".into(),
                kind: Some(pb::op::Kind::LwwPut(pbc::LwwRecord {
                    value: wire::encode_value(&rmpv::Value::from("hi")),
                    timestamp: Some(pbc::Timestamp {
                        millis: 1_000,
                        counter: 0,
                        node_id: "n1".into(),
                    }),
                    ttl_ms: None,
                })),
            }],
            write_concern: pbc::WriteConcern::Applied as i32,
            origin: None,
        })
        .await
        .expect("applied");
    let batch = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the change arrives")
        .expect("ok")
        .expect("not ended");
    assert_eq!(batch.epoch, greeting.epoch);
    assert_eq!(batch.events.len(), 1);
    assert_eq!(batch.events[0].map_name, "users");
    assert_eq!(batch.events[0].key, "alice");
    assert_eq!(batch.events[0].seq, 1);

    let _ = stop_tx.send(());
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the open subscription ends with the shard");
    assert!(
        matches!(&ended, Ok(None)) || ended.as_ref().is_err_and(|s| s.code() == Code::Unavailable),
        "{ended:?}"
    );
    server
        .await
        .expect("server task")
        .expect("server stopped cleanly");
    assert!(local_feed::find(&addr).is_none());
    let after = follow(&addr, Vec::new())
        .await
        .expect_err("a stopped shard's feed is no longer offered in-process");
    assert_eq!(after.message(), "the network side was used");
}
