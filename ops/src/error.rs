//! The one error type of the ops port.

use std::net::SocketAddr;

/// What can go wrong setting up or serving the ops port.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// An `*_HTTP_ADDR` setting that is not a socket address.
    #[error("invalid {setting} {value:?}: {reason} (expected host:port, or empty to disable)")]
    InvalidAddress {
        /// The environment variable at fault.
        setting: &'static str,
        /// What it was set to.
        value: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The ops port could not be bound.
    #[error("cannot bind {setting} {addr}: {source}")]
    Bind {
        /// The environment variable the address came from.
        setting: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// A metric could not be registered (duplicate name or invalid definition).
    #[error("metric registration failed: {0}")]
    Metric(#[from] prometheus::Error),
    /// The blocking task rendering the metrics failed.
    #[error("rendering metrics failed: {0}")]
    Render(String),
}
