//! The ops HTTP server: a bounded accept loop serving the [`crate::routes`] with hyper.
//!
//! Bounded on purpose: at most [`MAX_CONNECTIONS`] connections are served at once
//! (further clients wait in the kernel's accept backlog), a client gets
//! [`HEADER_READ_TIMEOUT`] to send each request head (so idle or trickling connections
//! do not hold a slot), and after shutdown open connections get [`SHUTDOWN_GRACE`].

use crate::health::HealthState;
use crate::routes::router;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus::Registry;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

/// Connections served at the same time (probes and scrapers, not user traffic).
pub const MAX_CONNECTIONS: usize = 32;
/// Longest a client may take to send a request head, idle keep-alive time included.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open requests may take to finish once the server is stopping.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Serves `/health`, `/health/live`, `/health/ready` and `/metrics` on `listener` until
/// `shutdown` completes; then stops accepting and gives open requests
/// [`SHUTDOWN_GRACE`] to finish.
pub async fn serve_ops(
    listener: TcpListener,
    registry: Registry,
    health: HealthState,
    shutdown: impl Future<Output = ()> + Send,
) {
    let app = router(registry, health);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // The permit is taken before accepting, so the cap holds without refusing anyone.
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(error = %err, "ops port: accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
        };
        // Finished connections are reaped here so the set stays as small as the cap.
        while connections.try_join_next().is_some() {}
        connections.spawn(serve_connection(
            stream,
            peer,
            app.clone(),
            closing_rx.clone(),
            permit,
        ));
    }
    closing_tx.send_replace(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!("ops port: dropping connections still open after the grace period");
        connections.abort_all();
    }
}

/// Serves one connection until the client leaves or the server closes; the permit is
/// released when it ends.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    mut closing: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = closed(&mut closing) => {
            // Finish the request in progress, if any, then close.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(%peer, error = %err, "ops port: connection ended with an error");
    }
}

/// Resolves once the flag is true (or its sender is gone). The guard `wait_for` returns
/// is not `Send`; it is dropped here so the caller's task stays `Send`.
async fn closed(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|closing| *closing).await;
}

/// A running ops server and the means to stop it. Dropping the handle also stops it
/// (its stop signal resolves when the sender is dropped).
#[derive(Debug)]
pub struct OpsServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl OpsServer {
    /// Spawns [`serve_ops`] on `listener`.
    pub fn spawn(listener: TcpListener, registry: Registry, health: HealthState) -> Self {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (stop, stopped) = oneshot::channel::<()>();
        tracing::info!(%addr, service = health.service(), "ops port listening");
        let task = tokio::spawn(serve_ops(listener, registry, health, async move {
            // Resolves on `stop()` and when the handle is dropped.
            let _ = stopped.await;
        }));
        OpsServer { addr, stop, task }
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, waits for open requests (at most [`SHUTDOWN_GRACE`]).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        if let Err(err) = self.task.await {
            tracing::error!(error = %err, "ops server task failed");
        }
    }
}
