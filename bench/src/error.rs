//! The one error type of the load generator.

use std::time::Duration;

/// Everything that can stop a benchmark run (as opposed to a counted failure of one request,
/// which is recorded in the report; see `failures`).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The WebSocket handshake failed.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL that was dialled.
        url: String,
        /// What the WebSocket library reported.
        #[source]
        source: tokio_tungstenite::tungstenite::Error,
    },
    /// A WebSocket read or write failed on an open connection.
    #[error("websocket error: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    /// The server answered AUTH with AUTH_FAIL.
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    /// `--no-auth` was given but the server asked for a token.
    #[error("the server requires authentication (it sent AUTH_REQUIRED) but --no-auth was given")]
    AuthRequired,
    /// Nothing useful arrived in time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    /// The server closed the connection (or the stream ended).
    #[error("connection closed by the server: {0}")]
    Disconnected(String),
    /// The server sent bytes that are not a valid protocol message.
    #[error("malformed server message: {0}")]
    Protocol(String),
    /// A client message could not be encoded.
    #[error("cannot encode a message: {0}")]
    Encode(String),
    /// The JWT could not be signed.
    #[error("cannot mint a JWT: {0}")]
    Token(#[from] jsonwebtoken::errors::Error),
    /// A file (report, /proc entry) could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: String,
        /// The operating-system error.
        #[source]
        source: std::io::Error,
    },
    /// A scenario could not prepare its data (e.g. the seeding writes were refused).
    #[error("scenario setup failed: {0}")]
    Setup(String),
    /// An option value makes no sense.
    #[error("invalid option: {0}")]
    InvalidOption(String),
}
