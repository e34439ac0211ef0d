//! The one error type of the storage service and its mapping to gRPC status codes.
//!
//! Every failure is classified once, where it is created: callers (the gRPC layer,
//! the sync shards behind it) only need to know whether to retry, to fix their
//! input, or to report a bug.

use std::time::Duration;

/// Everything that can go wrong in the storage service.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A table name that would not be safe to splice into SQL text.
    #[error("Invalid table name '{0}': must match ^[a-zA-Z_][a-zA-Z0-9_]*$")]
    InvalidTableName(String),

    /// A request (or a domain value) that fails validation; nothing was changed.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// Which field was wrong.
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },

    /// `STORAGE_BACKEND` names no known backend.
    #[error("Unknown STORAGE_BACKEND='{0}' (expected: postgres, sqlite, null)")]
    UnknownBackend(String),

    /// The postgres backend was chosen without a connection string.
    #[error("STORAGE_BACKEND=postgres requires DATABASE_URL")]
    MissingDatabaseUrl,

    /// Any other configuration value that cannot be used.
    #[error("invalid configuration {setting}: {reason}")]
    Config {
        /// The environment variable or setting at fault.
        setting: &'static str,
        /// Why it cannot be used.
        reason: String,
    },

    /// The database cannot be reached right now (connection refused or lost, pool
    /// exhausted, database busy or shutting down). Retrying later can succeed.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),

    /// The database could not be reached within the startup deadline.
    #[error("database unreachable for {waited:?} at startup: {source}")]
    StartupTimeout {
        /// How long startup kept retrying.
        waited: Duration,
        /// The last error seen.
        #[source]
        source: Box<StorageError>,
    },

    /// A database error that retrying will not fix (bad SQL, constraint, schema mismatch).
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),

    /// A stored row that does not decode into a record (written by something else).
    #[error("corrupt row in storage: {0}")]
    CorruptRow(String),

    /// A filesystem error (creating the data folder).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The gRPC server failed to bind or serve.
    #[error("gRPC transport error: {0}")]
    Transport(#[from] tonic::transport::Error),

    /// The ops HTTP port could not be set up.
    #[error(transparent)]
    Ops(#[from] topgun_ops::OpsError),
}

/// How a caller should react to a [`StorageError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient: retry later (gRPC `UNAVAILABLE`).
    Retryable,
    /// The request itself is wrong (gRPC `INVALID_ARGUMENT`).
    InvalidInput,
    /// A bug or a broken deployment (gRPC `INTERNAL`).
    Internal,
}

impl StorageError {
    /// Shorthand for an [`StorageError::InvalidInput`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        StorageError::InvalidInput {
            field,
            reason: reason.into(),
        }
    }

    /// The classification that decides the gRPC code.
    pub fn class(&self) -> ErrorClass {
        match self {
            StorageError::Unavailable(_) | StorageError::StartupTimeout { .. } => {
                ErrorClass::Retryable
            }
            StorageError::InvalidTableName(_) | StorageError::InvalidInput { .. } => {
                ErrorClass::InvalidInput
            }
            StorageError::UnknownBackend(_)
            | StorageError::MissingDatabaseUrl
            | StorageError::Config { .. }
            | StorageError::Database(_)
            | StorageError::CorruptRow(_)
            | StorageError::Io { .. }
            | StorageError::Transport(_)
            | StorageError::Ops(_) => ErrorClass::Internal,
        }
    }

    /// True when retrying the same call later can succeed.
    pub fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Retryable
    }
}

impl From<sqlx::Error> for StorageError {
    fn from(err: sqlx::Error) -> Self {
        if is_transient(&err) {
            StorageError::Unavailable(err)
        } else {
            StorageError::Database(err)
        }
    }
}

/// Decides whether a sqlx error means "the database is (temporarily) not there".
fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        // A connection cut mid-message surfaces as a protocol error.
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            let Some(code) = db.code() else { return false };
            is_transient_db_code(&code)
        }
        _ => false,
    }
}

/// PostgreSQL SQLSTATEs and SQLite result codes that a retry can get past.
fn is_transient_db_code(code: &str) -> bool {
    // PostgreSQL: class 08 connection exception, class 53 insufficient resources,
    // 57P01..57P03 server shutting down / starting up, 40001/40P01 serialization
    // failure and deadlock (the whole transaction was rolled back, so a retry is safe).
    if code.starts_with("08") || code.starts_with("53") {
        return true;
    }
    if matches!(code, "57P01" | "57P02" | "57P03" | "40001" | "40P01") {
        return true;
    }
    // SQLite reports its (extended) result code as a number: the primary code is the
    // low byte. 5 = SQLITE_BUSY, 6 = SQLITE_LOCKED (another writer held the file longer
    // than the busy timeout).
    code.parse::<i64>().is_ok_and(|n| matches!(n & 0xff, 5 | 6))
}

impl From<StorageError> for tonic::Status {
    fn from(err: StorageError) -> Self {
        let message = err.to_string();
        match err.class() {
            ErrorClass::Retryable => tonic::Status::unavailable(message),
            ErrorClass::InvalidInput => tonic::Status::invalid_argument(message),
            ErrorClass::Internal => tonic::Status::internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_pool_timeouts_as_retryable_and_input_errors_as_invalid_argument() {
        let status = tonic::Status::from(StorageError::from(sqlx::Error::PoolTimedOut));
        assert_eq!(status.code(), tonic::Code::Unavailable);
        let status = tonic::Status::from(StorageError::invalid("map_name", "must not be empty"));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "invalid map_name: must not be empty");
        let status = tonic::Status::from(StorageError::from(sqlx::Error::RowNotFound));
        assert_eq!(status.code(), tonic::Code::Internal);
    }

    #[test]
    fn recognises_transient_database_codes() {
        for code in ["08006", "08001", "57P01", "53300", "40001", "5", "517", "6"] {
            assert!(is_transient_db_code(code), "{code}");
        }
        for code in ["42P01", "23505", "1", "19", "2067"] {
            assert!(!is_transient_db_code(code), "{code}");
        }
    }
}
