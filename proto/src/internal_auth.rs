//! The optional shared token every internal gRPC call carries, so only suite members
//! can call the services (ARCHITECTURE.md "Conventions"); the client side also attaches
//! the current trace.

use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

/// Metadata key of the internal token.
pub const TOKEN_METADATA_KEY: &str = "x-topgun-internal-token";

/// Server-side check: with a configured token, every request must carry it.
#[derive(Clone, Debug, Default)]
pub struct TokenCheck {
    expected: Option<String>,
}

impl TokenCheck {
    /// `None` or an empty token disables the check.
    pub fn new(expected: Option<String>) -> Self {
        TokenCheck {
            expected: expected.filter(|t| !t.is_empty()),
        }
    }

    /// A tonic interceptor that rejects calls without the token.
    pub fn interceptor(&self) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
        let expected = self.expected.clone();
        move |req: Request<()>| {
            let Some(expected) = &expected else {
                return Ok(req);
            };
            let given = req
                .metadata()
                .get(TOKEN_METADATA_KEY)
                .and_then(|v| v.to_str().ok());
            // Constant-time comparison so the token cannot be guessed byte by byte.
            if given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes())) {
                Ok(req)
            } else {
                Err(Status::unauthenticated("missing or wrong internal token"))
            }
        }
    }
}

/// Client-side: attaches the token (if any) to outgoing requests.
#[derive(Clone, Debug, Default)]
pub struct TokenAttach {
    value: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl TokenAttach {
    /// `None` or an empty token attaches nothing; a token that is not valid ASCII
    /// metadata is an error.
    pub fn new(token: Option<&str>) -> Result<Self, String> {
        let value = match token.filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => Some(
                t.parse()
                    .map_err(|_| "internal token must be printable ASCII".to_string())?,
            ),
        };
        Ok(TokenAttach { value })
    }

    /// A tonic interceptor that adds the token and the current trace.
    pub fn interceptor(&self) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
        let mut attach = self.clone();
        move |req: Request<()>| tonic::service::Interceptor::call(&mut attach, req)
    }
}

impl tonic::service::Interceptor for TokenAttach {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.value {
            req.metadata_mut().insert(TOKEN_METADATA_KEY, v.clone());
        }
        // Every internal call goes through here, so this is where the trace crosses hops.
        crate::trace_context::TraceContext::inject(req.metadata_mut());
        Ok(req)
    }
}

/// Compares without an early exit.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_calls_without_the_token_and_accepts_them_with_it() {
        let mut check = TokenCheck::new(Some("s3cret".into())).interceptor();
        assert!(check(Request::new(())).is_err());
        let mut attach = TokenAttach::new(Some("s3cret"))
            .expect("ascii")
            .interceptor();
        let req = attach(Request::new(())).expect("attach never fails");
        assert!(check(req).is_ok());
        let mut open = TokenCheck::new(None).interceptor();
        assert!(open(Request::new(())).is_ok());
    }

    #[tokio::test]
    async fn outgoing_calls_carry_the_token_and_the_current_trace() {
        use crate::trace_context::{TraceContext, TRACEPARENT};
        let mut attach = TokenAttach::new(Some("s3cret"))
            .expect("ascii token")
            .interceptor();
        let outside = attach(Request::new(())).expect("attached");
        assert_eq!(
            outside
                .metadata()
                .get(TOKEN_METADATA_KEY)
                .map(|v| v.to_str().ok()),
            Some(Some("s3cret"))
        );
        assert!(outside.metadata().get(TRACEPARENT).is_none());

        let trace = TraceContext::new_root();
        let inside = trace
            .scope(async { attach(Request::new(())).expect("attached") })
            .await;
        let carried = inside
            .metadata()
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(TraceContext::parse)
            .expect("traceparent attached");
        assert_eq!(carried.trace_id, trace.trace_id);
    }
}
