//! Per-connection outbound queues and the registry of open connections. Every queue is
//! bounded: a connection whose queue stays full is closed with a reason instead of
//! letting memory grow.

use crate::metrics::Metrics;
use bytes::Bytes;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use topgun_proto::wire::{self, Message};

/// Close code for a connection that could not keep up (RFC 6455 "policy violation").
pub const CLOSE_SLOW_CONSUMER: u16 = 1008;

/// What the connection's writer task sends.
#[derive(Debug)]
pub enum Outbound {
    /// One binary frame.
    Frame(Bytes),
    /// A Close frame; the writer stops after it.
    Close(u16, String),
}

/// The sending side of one client connection.
#[derive(Debug)]
pub struct ConnHandle {
    /// Gateway-local connection id.
    pub id: u64,
    tx: mpsc::Sender<Outbound>,
    close_tx: mpsc::Sender<Outbound>,
    send_timeout: Duration,
    metrics: Metrics,
    authenticated: std::sync::atomic::AtomicBool,
}

/// The receiving ends handed to the connection's writer task.
#[derive(Debug)]
pub struct OutboundQueues {
    /// Regular frames.
    pub frames: mpsc::Receiver<Outbound>,
    /// Close requests, which overtake queued frames.
    pub control: mpsc::Receiver<Outbound>,
}

impl ConnHandle {
    /// A handle with a queue of `capacity` frames.
    pub fn new(
        id: u64,
        capacity: usize,
        send_timeout: Duration,
        metrics: Metrics,
    ) -> (Arc<Self>, OutboundQueues) {
        let (tx, frames) = mpsc::channel(capacity.max(1));
        let (close_tx, control) = mpsc::channel(1);
        (
            Arc::new(ConnHandle {
                id,
                tx,
                close_tx,
                send_timeout,
                metrics,
                authenticated: std::sync::atomic::AtomicBool::new(false),
            }),
            OutboundQueues { frames, control },
        )
    }

    /// Marks the connection authenticated: it now receives cluster-wide pushes.
    pub fn mark_authenticated(&self) {
        self.authenticated
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the client has authenticated (always, in no-auth mode).
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Encodes a message for this connection.
    fn encode(&self, message: &Message) -> Bytes {
        self.metrics
            .messages_out
            .with_label_values(&[message.type_name()])
            .inc();
        Bytes::from(wire::encode(message))
    }

    /// A direct reply: waits up to the send timeout for queue space, then closes the
    /// connection. Returns false if the connection is gone.
    pub async fn reply(&self, message: &Message) -> bool {
        let frame = self.encode(message);
        match self
            .tx
            .send_timeout(Outbound::Frame(frame), self.send_timeout)
            .await
        {
            Ok(()) => true,
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                self.close_slow("send timeout: client is not reading");
                false
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => false,
        }
    }

    /// A push (event, update, topic message): never waits; a full queue closes the
    /// connection as a slow consumer.
    pub fn push(&self, message: &Message) -> bool {
        let frame = self.encode(message);
        self.push_encoded(frame)
    }

    /// Like [`Self::push`] for a frame encoded once for many recipients.
    pub fn push_encoded(&self, frame: Bytes) -> bool {
        match self.tx.try_send(Outbound::Frame(frame)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close_slow("slow consumer: outbound queue full");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn close_slow(&self, reason: &str) {
        self.metrics.slow_consumer_disconnects.inc();
        tracing::warn!(conn = self.id, reason, "closing connection");
        self.close(CLOSE_SLOW_CONSUMER, reason);
    }

    /// Asks the writer to send a Close frame and stop (ahead of queued frames).
    pub fn close(&self, code: u16, reason: &str) {
        let _ = self
            .close_tx
            .try_send(Outbound::Close(code, reason.to_string()));
    }

    /// Queues a Close behind the frames already queued (graceful: they are delivered first).
    pub async fn close_after_pending(&self, code: u16, reason: &str) {
        let close = Outbound::Close(code, reason.to_string());
        let _ = self.tx.send_timeout(close, self.send_timeout).await;
    }
}

/// Open connections of this gateway.
#[derive(Debug, Default)]
pub struct Connections {
    open: RwLock<HashMap<u64, Arc<ConnHandle>>>,
}

impl Connections {
    /// Registers a connection.
    pub fn insert(&self, conn: Arc<ConnHandle>) {
        self.open.write().insert(conn.id, conn);
    }

    /// Forgets a connection.
    pub fn remove(&self, id: u64) {
        self.open.write().remove(&id);
    }

    /// A connection by id.
    pub fn get(&self, id: u64) -> Option<Arc<ConnHandle>> {
        self.open.read().get(&id).cloned()
    }

    /// Number of open connections.
    pub fn len(&self) -> usize {
        self.open.read().len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every open connection.
    pub fn all(&self) -> Vec<Arc<ConnHandle>> {
        self.open.read().values().cloned().collect()
    }
}
