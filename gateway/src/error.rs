//! One error type for everything the gateway can fail at, mapped once to wire-protocol
//! ERROR codes, HTTP statuses and `/sync` error entries, so `/ws`, `/sync` and the
//! internal gRPC layer report a failure the same way.

use topgun_proto::wire::{ErrorPayload, Message};

/// A failed operation, as clients see it.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum GatewayError {
    /// Malformed or invalid input.
    #[error("{0}")]
    BadRequest(String),
    /// Authentication required.
    #[error("authentication required")]
    Unauthorized,
    /// Permission denied.
    #[error("{0}")]
    Forbidden(String),
    /// Record too large.
    #[error("value size {size} bytes exceeds maximum {max} bytes")]
    TooLarge {
        /// Encoded size.
        size: u64,
        /// Configured maximum.
        max: u64,
    },
    /// Too much in flight; retry later.
    #[error("server overloaded, try again later")]
    Overloaded,
    /// The deadline passed.
    #[error("operation timed out after {0}ms")]
    Timeout(u64),
    /// A backing service is down; retry later.
    #[error("service unavailable, try again later: {0}")]
    Unavailable(String),
    /// A family this server does not implement.
    #[error("not implemented: {0}")]
    NotImplemented(String),
    /// Anything else.
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    /// Numeric code used in ERROR, OP_REJECTED and HTTP responses.
    pub fn code(&self) -> u16 {
        match self {
            GatewayError::BadRequest(_) => 400,
            GatewayError::Unauthorized => 401,
            GatewayError::Forbidden(_) => 403,
            GatewayError::TooLarge { .. } => 413,
            GatewayError::Overloaded => 429,
            GatewayError::Timeout(_) | GatewayError::Internal(_) => 500,
            GatewayError::NotImplemented(_) => 501,
            GatewayError::Unavailable(_) => 503,
        }
    }

    /// Label for `topgun_operation_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            GatewayError::BadRequest(_) => "invalid",
            GatewayError::Unauthorized => "unauthorized",
            GatewayError::Forbidden(_) => "forbidden",
            GatewayError::TooLarge { .. } => "value_too_large",
            GatewayError::Overloaded => "overloaded",
            GatewayError::Timeout(_) => "timeout",
            GatewayError::Unavailable(_) => "unavailable",
            GatewayError::NotImplemented(_) => "not_implemented",
            GatewayError::Internal(_) => "internal",
        }
    }

    /// The wire ERROR message.
    pub fn to_message(&self) -> Message {
        Message::Error {
            payload: ErrorPayload {
                code: u64::from(self.code()),
                message: self.to_string(),
                details: None,
            },
        }
    }

    /// Whether retrying the same request later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            GatewayError::Overloaded | GatewayError::Timeout(_) | GatewayError::Unavailable(_)
        )
    }

    /// Maps a failed internal gRPC call (with the deadline it had).
    pub fn from_status(status: &tonic::Status, timeout_ms: u64) -> Self {
        use tonic::Code;
        match status.code() {
            Code::ResourceExhausted => GatewayError::Overloaded,
            Code::DeadlineExceeded | Code::Cancelled => GatewayError::Timeout(timeout_ms),
            Code::Unavailable | Code::FailedPrecondition | Code::Aborted | Code::Unknown => {
                GatewayError::Unavailable(status.message().to_string())
            }
            Code::InvalidArgument | Code::OutOfRange => {
                GatewayError::BadRequest(status.message().to_string())
            }
            Code::PermissionDenied => GatewayError::Forbidden(status.message().to_string()),
            Code::Unauthenticated => GatewayError::Internal("internal token rejected".into()),
            Code::Unimplemented => GatewayError::NotImplemented(status.message().to_string()),
            _ => GatewayError::Internal(status.message().to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_texts_follow_the_protocol_vocabulary() {
        assert_eq!(
            GatewayError::Overloaded.to_string(),
            "server overloaded, try again later"
        );
        assert_eq!(GatewayError::Overloaded.code(), 429);
        assert_eq!(
            GatewayError::Timeout(5000).to_string(),
            "operation timed out after 5000ms"
        );
        assert_eq!(
            GatewayError::TooLarge { size: 10, max: 5 }.to_string(),
            "value size 10 bytes exceeds maximum 5 bytes"
        );
        let status = tonic::Status::unavailable("storage down");
        assert!(GatewayError::from_status(&status, 1).is_retryable());
        assert!(!GatewayError::Forbidden("x".into()).is_retryable());
    }
}
