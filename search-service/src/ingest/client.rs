//! The gRPC client of one sync shard: a lazily connected channel with keepalive, the
//! internal token on every call, and a deadline on every unary call.

use std::future::Future;
use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Endpoint;
use tonic::{Request, Response, Status};
use topgun_proto::grpc::sync::sync_service_client::SyncServiceClient;
use topgun_proto::in_process::InternalChannel;
use topgun_proto::internal_auth::TokenAttach;

use crate::error::SearchError;

/// Deadline of every unary call to a shard (a scan page, a record fetch).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest message accepted from a shard: a scan page of large values must fit.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Adds the internal token to each call.
#[derive(Clone, Debug)]
pub(crate) struct AttachToken(TokenAttach);

impl Interceptor for AttachToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        (self.0.interceptor())(request)
    }
}

/// A client of one sync shard.
pub(crate) type SyncClient = SyncServiceClient<InterceptedService<InternalChannel, AttachToken>>;

/// A client for the shard at `addr` (a `http://host:port` URL). The channel connects on
/// first use and reconnects by itself, so a shard that is down is not an error here; a
/// shard this process runs is called in-process.
pub(crate) fn connect(addr: &str, token: Option<&str>) -> Result<SyncClient, SearchError> {
    let endpoint = Endpoint::from_shared(addr.to_string())
        .map_err(|e| SearchError::Config {
            setting: "SYNC_ADDRS",
            reason: format!("{addr}: {e}"),
        })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        // The change feed can be quiet for a long time; pings tell a dead shard from an
        // idle one.
        .http2_keep_alive_interval(Duration::from_secs(15))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let endpoint = topgun_proto::internal_tls::client_endpoint(endpoint).map_err(|reason| {
        SearchError::Config {
            setting: "TOPGUN_INTERNAL_TLS_CA",
            reason,
        }
    })?;
    let attach = TokenAttach::new(token).map_err(|reason| SearchError::Config {
        setting: "TOPGUN_INTERNAL_TOKEN",
        reason,
    })?;
    Ok(SyncServiceClient::with_interceptor(
        InternalChannel::new(addr, endpoint.connect_lazy()),
        AttachToken(attach),
    )
    .max_decoding_message_size(MAX_MESSAGE_BYTES))
}

/// A request carrying the [`CALL_TIMEOUT`] deadline, so the shard stops working on it
/// when we stop waiting.
pub(crate) fn request<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

/// Runs a unary call with the [`CALL_TIMEOUT`] deadline enforced locally too (a
/// half-open connection would otherwise hang it until keepalive notices).
pub(crate) async fn call<R>(
    call: impl Future<Output = Result<Response<R>, Status>>,
) -> Result<R, Status> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result.map(Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded(
            "sync shard did not answer in time",
        )),
    }
}
