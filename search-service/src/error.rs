//! The search service's error type and its gRPC mapping.

use std::path::PathBuf;

/// Everything that can go wrong in the search service.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// tantivy failed on one map's index.
    #[error("index of map '{map}': {source}")]
    Index {
        /// The map.
        map: String,
        /// What tantivy reported.
        #[source]
        source: tantivy::TantivyError,
    },
    /// A map's index folder could not be prepared.
    #[error("index folder {path}: {source}")]
    Folder {
        /// The folder.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// A setting is invalid.
    #[error("invalid {setting}: {reason}")]
    Config {
        /// Which setting.
        setting: &'static str,
        /// Why.
        reason: String,
    },
    /// The indexer has stopped (the service is shutting down).
    #[error("search engine stopped")]
    Stopped,
    /// A blocking task panicked or was cancelled.
    #[error("search task failed: {0}")]
    Task(String),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A sync shard refused or failed a call.
    #[error("sync shard {call} failed ({code:?}): {message}")]
    Shard {
        /// The RPC.
        call: &'static str,
        /// Its status code.
        code: tonic::Code,
        /// Its message.
        message: String,
    },
    /// The ops HTTP port could not be set up.
    #[error(transparent)]
    Ops(#[from] topgun_ops::OpsError),
    /// An I/O failure outside the index (binding the listener).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
}

impl From<SearchError> for tonic::Status {
    fn from(err: SearchError) -> Self {
        match &err {
            SearchError::Stopped => tonic::Status::unavailable(err.to_string()),
            SearchError::Config { .. } => tonic::Status::invalid_argument(err.to_string()),
            _ => tonic::Status::internal(err.to_string()),
        }
    }
}
