//! A running shard is reachable in-process by the address it listens on (how the
//! single-process binaries' gateway and search replica call it), with the same token
//! check as over the network, and only while it runs.

use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Endpoint;
use tonic::Code;
use topgun_proto::grpc::sync::sync_service_client::SyncServiceClient;
use topgun_proto::grpc::sync::ShardInfoRequest;
use topgun_proto::in_process::InternalChannel;
use topgun_proto::internal_auth::TokenAttach;
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
