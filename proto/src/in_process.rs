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
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt;
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::{BoxFuture, Service};
use tonic::transport::Channel;
use tonic::Status;

/// A gRPC router served in this process (cloned per call).
type LocalService = tower::util::BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// What one address currently leads to in this process, with the registration that put
/// it there (so a stale registration cannot clear a newer one).
type Slot = Arc<RwLock<Option<(u64, LocalService)>>>;

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
pub(crate) fn normalize(addr: &str) -> String {
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
    static GENERATION: AtomicU64 = AtomicU64::new(1);
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
    let service = LocalService::new(router);
    let slots: Vec<Slot> = addrs.iter().map(|addr| slot(addr)).collect();
    for slot in &slots {
        *slot
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((generation, service.clone()));
    }
    Registration { slots, generation }
}

/// Keeps a server reachable in-process; dropping it sends later calls over the network.
#[must_use = "the in-process route ends when this is dropped"]
#[derive(Debug)]
pub struct Registration {
    slots: Vec<Slot>,
    generation: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        for slot in &self.slots {
            let mut current = slot
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            // A server started since on the same address keeps its route.
            if current.as_ref().is_some_and(|(g, _)| *g == self.generation) {
                *current = None;
            }
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
            .as_ref()
            .map(|(_, service)| service.clone())
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
                // The handler runs in the caller's task: a panic in it must end this call
                // (as a reset stream would over HTTP/2), not the caller.
                let call = AssertUnwindSafe(local.oneshot(request)).catch_unwind();
                Box::pin(async move {
                    let outcome = match deadline {
                        Some(limit) => match tokio::time::timeout(limit, call).await {
                            Ok(outcome) => outcome,
                            Err(_) => {
                                return Ok(Status::deadline_exceeded(
                                    "in-process call exceeded its deadline",
                                )
                                .into_http())
                            }
                        },
                        None => call.await,
                    };
                    match outcome {
                        Ok(response) => response.map_err(|never| match never {}),
                        Err(_) => Ok(Status::internal("in-process call panicked").into_http()),
                    }
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

    fn status_of(response: &Response<Body>) -> Status {
        Status::from_header_map(response.headers()).expect("grpc-status")
    }

    fn dead_network_side(addr: &str) -> InternalChannel {
        let remote = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        InternalChannel::new(addr, remote)
    }

    #[tokio::test]
    async fn a_slow_in_process_handler_ends_at_the_callers_deadline() {
        let addr = "http://127.0.0.1:1/in-process-deadline";
        let channel = dead_network_side(addr);
        let _served = serve(
            &[addr.to_string()],
            tower::service_fn(|_request: Request<Body>| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok::<_, Infallible>(Status::ok("too late").into_http())
            }),
        );
        let mut request = Request::new(Body::empty());
        request
            .headers_mut()
            .insert("grpc-timeout", "50m".parse().expect("header value"));
        let started = std::time::Instant::now();
        let response = channel.clone().call(request).await.expect("answered");
        assert_eq!(status_of(&response).code(), tonic::Code::DeadlineExceeded);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_panicking_in_process_handler_fails_the_call_not_the_caller() {
        let addr = "http://127.0.0.1:1/in-process-panic";
        let channel = dead_network_side(addr);
        let _served = serve(
            &[addr.to_string()],
            tower::service_fn(|_request: Request<Body>| async {
                if true {
                    panic!("handler bug");
                }
                Ok::<_, Infallible>(Status::ok("unreachable").into_http())
            }),
        );
        let response = channel
            .clone()
            .call(Request::new(Body::empty()))
            .await
            .expect("answered");
        assert_eq!(status_of(&response).code(), tonic::Code::Internal);
    }

    #[tokio::test]
    async fn an_old_registration_dropped_late_leaves_a_newer_server_in_place() {
        let addr = "http://127.0.0.1:1/in-process-restart";
        let channel = dead_network_side(addr);
        let answer = |text: &'static str| {
            tower::service_fn(move |_request: Request<Body>| async move {
                Ok::<_, Infallible>(Status::not_found(text).into_http())
            })
        };
        let old = serve(&[addr.to_string()], answer("old"));
        let new = serve(&[addr.to_string()], answer("new"));
        drop(old);
        assert!(channel.is_in_process());
        let response = channel
            .clone()
            .call(Request::new(Body::empty()))
            .await
            .expect("answered");
        assert_eq!(status_of(&response).message(), "new");
        drop(new);
        assert!(!channel.is_in_process());
    }
}
