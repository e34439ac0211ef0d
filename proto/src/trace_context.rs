//! The trace carried across gRPC hops (README, "Tracing a request across services"), as a W3C
//! `traceparent` header: the gateway starts a trace per client request, every internal
//! call made while handling it carries the trace id, and each service's request span
//! records it, so one request's log lines can be found in every service.
//!
//! The current trace lives in a task-local: [`TraceContext::scope`] sets it around a
//! request's handling, [`TraceContext::inject`] (called by the internal token interceptor
//! on every outgoing call) reads it, and [`TraceLayer`] sets it on the server side.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::task::{Context, Poll};

use tonic::codegen::http::{HeaderMap, Request};
use tonic::codegen::{BoxFuture, Service};
use tonic::metadata::MetadataMap;
use tracing::Instrument;

/// Metadata / header key of the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// One hop of a trace: the trace it belongs to and this hop's span id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// Shared by every hop of one request (never 0).
    pub trace_id: u128,
    /// This hop (never 0).
    pub span_id: u64,
}

impl TraceContext {
    /// A new trace, for a request that arrived without one.
    pub fn new_root() -> Self {
        let trace_id = (u128::from(random_nonzero()) << 64) | u128::from(random_nonzero());
        TraceContext {
            trace_id,
            span_id: random_nonzero(),
        }
    }

    /// The next hop of the same trace.
    pub fn child(&self) -> Self {
        TraceContext {
            trace_id: self.trace_id,
            span_id: random_nonzero(),
        }
    }

    /// The trace id as 32 lowercase hex digits, as logged.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The `traceparent` value (version 00, sampled).
    pub fn to_traceparent(&self) -> String {
        format!("00-{:032x}-{:016x}-01", self.trace_id, self.span_id)
    }

    /// Parses a `traceparent` value; `None` for anything malformed or all-zero ids.
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex(version, 2)
            || version == "ff"
            || !hex(trace, 32)
            || !hex(span, 16)
            || !hex(flags, 2)
        {
            return None;
        }
        // Version 00 has exactly four fields; later versions may append more.
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(TraceContext { trace_id, span_id })
    }

    /// The trace of the request being handled by this task, if any.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(|c| *c).ok()
    }

    /// Runs `work` with this as the current trace.
    pub async fn scope<F: std::future::Future>(self, work: F) -> F::Output {
        CURRENT.scope(self, work).await
    }

    /// Adds the current trace (as a new hop) to an outgoing call's metadata.
    pub fn inject(metadata: &mut MetadataMap) {
        if let Some(current) = Self::current() {
            if let Ok(value) = current.child().to_traceparent().parse() {
                metadata.insert(TRACEPARENT, value);
            }
        }
    }

    /// The trace an incoming request carries.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        Self::parse(headers.get(TRACEPARENT)?.to_str().ok()?)
    }
}

/// A random non-zero u64 from a per-thread SplitMix64 sequence (seeded from the std
/// library's random hash keys): cheap, and no counter shared between cores.
fn random_nonzero() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(RandomState::new().build_hasher().finish());
    }
    STATE.with(|state| {
        let next = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)).max(1)
    })
}

/// Server-side tower layer (gRPC servers, the gateway's HTTP routes): each request runs
/// with its trace current, so calls it makes carry the trace on, and in a debug-level
/// `request` span with its path and trace id (debug, as tower-http's trace layer, so the
/// hot path pays nothing unless asked: `RUST_LOG=info,topgun_proto::trace_context=debug`),
/// which also logs `handled` with the time taken.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer;

impl TraceLayer {
    /// `inner` with tracing, for callers that do not build a tower stack.
    pub fn around<S>(inner: S) -> Traced<S> {
        Traced { inner }
    }
}

impl<S> tower::Layer<S> for TraceLayer {
    type Service = Traced<S>;

    fn layer(&self, inner: S) -> Traced<S> {
        Traced { inner }
    }
}

/// A service wrapped by [`TraceLayer`].
#[derive(Debug, Clone)]
pub struct Traced<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for Traced<S>
where
    S: Service<Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let trace = TraceContext::from_headers(request.headers())
            .map(|parent| parent.child())
            .unwrap_or_else(TraceContext::new_root);
        let span = tracing::debug_span!(
            "request",
            path = %request.uri().path(),
            trace_id = %trace.trace_id_hex(),
        );
        let call = self.inner.call(request);
        let handled = async move {
            let started = std::time::Instant::now();
            let result = call.await;
            let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            tracing::debug!(elapsed_us, "handled");
            result
        };
        Box::pin(CURRENT.scope(trace, handled).instrument(span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{Layer, ServiceExt};

    #[test]
    fn traceparent_round_trips_and_rejects_malformed_values() {
        let context = TraceContext::new_root();
        assert_eq!(
            TraceContext::parse(&context.to_traceparent()),
            Some(context)
        );
        let spec_example = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceContext::parse(spec_example).expect("the W3C example");
        assert_eq!(parsed.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.span_id, 0x00f0_67aa_0ba9_02b7);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-xbf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn outgoing_calls_carry_the_current_trace_as_a_new_hop() {
        let mut metadata = MetadataMap::new();
        TraceContext::inject(&mut metadata);
        assert!(
            metadata.get(TRACEPARENT).is_none(),
            "no trace, nothing sent"
        );

        let root = TraceContext::new_root();
        root.scope(async {
            TraceContext::inject(&mut metadata);
        })
        .await;
        let sent = metadata
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(TraceContext::parse)
            .expect("traceparent sent");
        assert_eq!(sent.trace_id, root.trace_id);
        assert_ne!(sent.span_id, root.span_id);
    }

    #[tokio::test]
    async fn the_server_layer_continues_the_callers_trace_or_starts_one() {
        let echo = tower::service_fn(|_request: Request<()>| async {
            Ok::<_, Infallible>(TraceContext::current())
        });
        let traced = TraceLayer.layer(echo);

        let caller = TraceContext::new_root();
        let mut request = Request::new(());
        request.headers_mut().insert(
            TRACEPARENT,
            caller.to_traceparent().parse().expect("header value"),
        );
        let seen = traced
            .clone()
            .oneshot(request)
            .await
            .expect("infallible")
            .expect("a current trace inside the handler");
        assert_eq!(seen.trace_id, caller.trace_id);
        assert_ne!(seen.span_id, caller.span_id);

        let fresh = traced
            .oneshot(Request::new(()))
            .await
            .expect("infallible")
            .expect("a new trace when none came in");
        assert_ne!(fresh.trace_id, caller.trace_id);
    }
}
