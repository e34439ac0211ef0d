//! In-process transport for internal gRPC calls.
//!
//! The single-process binaries (`topgun`, `test-server`) run the gateway, a sync shard
//! and a search replica in one process. Over loopback TCP every write crossed HTTP/2
//! framing twice, the kernel socket path twice and two extra connection tasks. Here a
//! server announces the address it listens on, and a client of that address in the same
//! process hands its requests straight to the server's router instead. Requests and
//! responses are still gRPC messages (encoded, decoded, deadline, token check), so the
//! services behave exactly as over the network; calls to any other address, or to this
//! one once its server has stopped, go over a normal [`Channel`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::{BoxFuture, Service};
use tonic::transport::Channel;
use tonic::Status;

/// A gRPC router served in this process (cloned per call).
type LocalService = tower::util::BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// What one address currently leads to in this process.
type Slot = Arc<RwLock<Option<LocalService>>>;

/// The addresses this process serves, each with its (possibly empty) slot. Slots are
/// never removed, so clients created before a server starts or after it stops see it.
fn slots() -> &'static Mutex<HashMap<String, Slot>> {
    static SLOTS: OnceLock<Mutex<HashMap<String, Slot>>> = OnceLock::new();
    SLOTS.get_or_init(Mutex::default)
}

fn slot(addr: &str) -> Slot {
    let mut slots = slots()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    slots.entry(normalize(addr)).or_default().clone()
}

/// `http://127.0.0.1:1/` and `http://127.0.0.1:1` name the same server.
fn normalize(addr: &str) -> String {
    addr.trim_end_matches('/').to_ascii_lowercase()
}

/// Serves `router` in-process to clients of `addrs` until the guard is dropped.
pub fn serve<S>(addrs: &[String], router: S) -> Registration
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let service = LocalService::new(router);
    let slots: Vec<Slot> = addrs.iter().map(|addr| slot(addr)).collect();
    for slot in &slots {
        *slot
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(service.clone());
    }
    Registration { slots }
}

/// Keeps a server reachable in-process; dropping it sends later calls over the network.
#[must_use = "the in-process route ends when this is dropped"]
#[derive(Debug)]
pub struct Registration {
    slots: Vec<Slot>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        for slot in &self.slots {
            *slot
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
        }
    }
}

/// A channel to an internal service: in-process while this process serves its address,
/// otherwise the given network channel.
#[derive(Clone)]
pub struct InternalChannel {
    local: Slot,
    remote: Channel,
}

impl std::fmt::Debug for InternalChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalChannel")
            .field("in_process", &self.is_in_process())
            .finish_non_exhaustive()
    }
}

impl InternalChannel {
    /// A channel for the service at `addr`, with `remote` used while it is not served here.
    pub fn new(addr: &str, remote: Channel) -> Self {
        InternalChannel {
            local: slot(addr),
            remote,
        }
    }

    /// Whether calls currently stay in this process.
    pub fn is_in_process(&self) -> bool {
        self.local_service().is_some()
    }

    fn local_service(&self) -> Option<LocalService> {
        self.local
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl Service<Request<Body>> for InternalChannel {
    type Response = Response<Body>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Which side serves the call is decided per call; each side is driven to
        // readiness there (`oneshot`), so this handle is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        use tower::ServiceExt;
        match self.local_service() {
            Some(local) => {
                // The network client enforces `grpc-timeout` on the response; so do we.
                let deadline = grpc_timeout(&request);
                let call = local.oneshot(request);
                Box::pin(async move {
                    let response = match deadline {
                        Some(limit) => match tokio::time::timeout(limit, call).await {
                            Ok(response) => response,
                            Err(_) => {
                                return Ok(Status::deadline_exceeded(
                                    "in-process call exceeded its deadline",
                                )
                                .into_http())
                            }
                        },
                        None => call.await,
                    };
                    response.map_err(|never| match never {})
                })
            }
            None => {
                let call = self.remote.clone().oneshot(request);
                Box::pin(async move { call.await.map_err(Into::into) })
            }
        }
    }
}

/// The deadline a request carries in its `grpc-timeout` header.
fn grpc_timeout<B>(request: &Request<B>) -> Option<Duration> {
    let value = request.headers().get("grpc-timeout")?.to_str().ok()?;
    crate::deadline::parse_grpc_timeout(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_is_read_from_the_grpc_timeout_header() {
        let mut request = Request::new(());
        assert_eq!(grpc_timeout(&request), None);
        request
            .headers_mut()
            .insert("grpc-timeout", "250m".parse().expect("ascii header value"));
        assert_eq!(grpc_timeout(&request), Some(Duration::from_millis(250)));
    }

    #[tokio::test]
    async fn calls_stay_in_process_only_while_the_address_is_served() {
        let addr = "http://127.0.0.1:1/in-process-test";
        let remote = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        let channel = InternalChannel::new(addr, remote);
        assert!(!channel.is_in_process());
        let router = tower::service_fn(|_request: Request<Body>| async {
            Ok::<_, Infallible>(Status::not_found("served in process").into_http())
        });
        let registration = serve(&[format!("{addr}/")], router);
        assert!(channel.is_in_process());
        let response = channel
            .clone()
            .call(Request::new(Body::empty()))
            .await
            .expect("in-process call");
        let status = Status::from_header_map(response.headers()).expect("grpc-status");
        assert_eq!(status.message(), "served in process");
        drop(registration);
        assert!(!channel.is_in_process());
    }
}
