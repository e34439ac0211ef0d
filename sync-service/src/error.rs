//! The one error type of the sync service and its mapping to gRPC codes (and HTTP
//! statuses, for callers that surface it over HTTP).

use tonic::{Code, Status};

/// Everything that can go wrong in a sync shard.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Bad start-up configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A request failed validation; nothing was changed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An op or key belongs to a partition this shard does not own.
    #[error("partition {partition} (key {key:?}) is not owned by shard {node_id}")]
    NotOwner {
        /// The partition of the key.
        partition: u32,
        /// The key that was routed here.
        key: String,
        /// This shard's node id.
        node_id: String,
    },
    /// The shard is still loading its partitions.
    #[error("shard is loading its partitions from storage, try again shortly")]
    Loading,
    /// Too many operations in flight.
    #[error("server overloaded, try again later")]
    Overloaded,
    /// The caller's deadline (or the operation timeout) passed.
    #[error("deadline exceeded after {0} ms")]
    DeadlineExceeded(u128),
    /// A change-feed position that cannot be served; the subscriber must rescan.
    #[error("{0}")]
    OutOfRange(String),
    /// Durable storage could not be reached or refused the write; retryable.
    #[error("storage unavailable: {0}")]
    StorageUnavailable(String),
    /// Storage rejected data as invalid; retrying will not help.
    #[error("storage rejected the write: {0}")]
    StorageRejected(String),
    /// The server is shutting down.
    #[error("shard is shutting down")]
    ShuttingDown,
    /// A bug or an unexpected failure inside the shard.
    #[error("internal error: {0}")]
    Internal(String),
    /// The gRPC server failed.
    #[error("gRPC transport error: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Binding or accepting sockets failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The ops HTTP port could not be set up.
    #[error(transparent)]
    Ops(#[from] topgun_ops::OpsError),
}

impl SyncError {
    /// The gRPC status code callers should act on.
    pub fn code(&self) -> Code {
        match self {
            SyncError::Config(_) | SyncError::InvalidArgument(_) => Code::InvalidArgument,
            SyncError::NotOwner { .. } => Code::FailedPrecondition,
            SyncError::Loading | SyncError::StorageUnavailable(_) | SyncError::ShuttingDown => {
                Code::Unavailable
            }
            SyncError::Overloaded => Code::ResourceExhausted,
            SyncError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            SyncError::OutOfRange(_) => Code::OutOfRange,
            SyncError::StorageRejected(_)
            | SyncError::Internal(_)
            | SyncError::Transport(_)
            | SyncError::Io(_)
            | SyncError::Ops(_) => Code::Internal,
        }
    }

    /// The equivalent HTTP status.
    pub fn http_status(&self) -> u16 {
        match self.code() {
            Code::InvalidArgument | Code::OutOfRange => 400,
            Code::FailedPrecondition => 409,
            Code::ResourceExhausted => 429,
            Code::Unavailable => 503,
            Code::DeadlineExceeded => 504,
            _ => 500,
        }
    }

    /// Whether the same request may succeed if sent again later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.code(),
            Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded
        )
    }

    /// Shorthand for [`SyncError::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        SyncError::InvalidArgument(msg.into())
    }
}

impl From<SyncError> for Status {
    fn from(err: SyncError) -> Self {
        Status::new(err.code(), err.to_string())
    }
}

impl From<topgun_proto::convert::ConvertError> for SyncError {
    fn from(err: topgun_proto::convert::ConvertError) -> Self {
        SyncError::InvalidArgument(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_contract() {
        let not_owner = SyncError::NotOwner {
            partition: 7,
            key: "k".into(),
            node_id: "sync-0".into(),
        };
        let status = Status::from(not_owner);
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(
            status.message().contains("partition 7"),
            "{}",
            status.message()
        );
        let overloaded = Status::from(SyncError::Overloaded);
        assert_eq!(overloaded.code(), Code::ResourceExhausted);
        assert_eq!(overloaded.message(), "server overloaded, try again later");
        assert!(SyncError::StorageUnavailable("down".into()).is_retryable());
        assert!(!SyncError::invalid("bad").is_retryable());
        assert_eq!(SyncError::OutOfRange("old".into()).code(), Code::OutOfRange);
        assert_eq!(SyncError::Overloaded.http_status(), 429);
    }
}
