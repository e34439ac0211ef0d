//! The shutdown signal shared by the server's tasks and streams.

use tokio::sync::watch;

/// Resolves once the shutdown flag is true (at once if it already is, and also when
/// the sender is gone).
pub async fn stopped(flag: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; it is dropped here so callers can
    // hold this future across awaits in `select!`.
    let _ = flag.wait_for(|stop| *stop).await;
}
