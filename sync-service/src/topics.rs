//! Topic relay: gateways publish through the shard that owns hash(topic) and every
//! gateway subscribed to the shard's topic stream receives the message.
//!
//! Delivery is a bounded broadcast ring. A subscriber that cannot keep up skips the
//! messages it missed (topics are fire-and-forget pub/sub), and the skips are counted
//! and logged, so a slow gateway never slows publishers or other gateways.

use crate::requests::Publish;
use crate::shutdown::stopped;
use futures::{Stream, StreamExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{broadcast, watch};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tonic::Status;
use topgun_proto::grpc::sync as pb;
use topgun_proto::hlc::wall_clock_ms;

/// Messages buffered per relay before a lagging subscriber starts skipping.
pub const TOPIC_BUFFER: usize = 4096;

/// The shard's topic relay.
#[derive(Debug)]
pub struct TopicRelay {
    sender: broadcast::Sender<Arc<pb::TopicMessage>>,
    dropped: Arc<AtomicU64>,
}

impl Default for TopicRelay {
    fn default() -> Self {
        Self::new(TOPIC_BUFFER)
    }
}

impl TopicRelay {
    /// A relay buffering `capacity` messages.
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        TopicRelay {
            sender,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Relays a message to every current subscriber; returns how many there were.
    pub fn publish(&self, message: Publish) -> usize {
        let message = pb::TopicMessage {
            topic: message.topic,
            data: message.data,
            origin: Some(message.origin.to_proto()),
            publisher_id: message.publisher_id,
            timestamp: wall_clock_ms(),
        };
        // No subscriber is not an error: nobody is listening to this shard yet.
        self.sender.send(Arc::new(message)).unwrap_or(0)
    }

    /// Messages skipped by lagging subscribers since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// A stream of every message published from now on; it ends when `shutdown`
    /// turns true.
    pub fn subscribe(
        &self,
        mut shutdown: watch::Receiver<bool>,
    ) -> impl Stream<Item = Result<pb::TopicMessage, Status>> + Send + 'static {
        let dropped = Arc::clone(&self.dropped);
        BroadcastStream::new(self.sender.subscribe())
            .filter_map(move |item| {
                let dropped = Arc::clone(&dropped);
                async move {
                    match item {
                        Ok(message) => Some(Ok((*message).clone())),
                        Err(BroadcastStreamRecvError::Lagged(skipped)) => {
                            let total = dropped.fetch_add(skipped, Ordering::Relaxed) + skipped;
                            tracing::warn!(
                                skipped,
                                total,
                                "topic subscriber lagged, messages skipped"
                            );
                            None
                        }
                    }
                }
            })
            .take_until(async move { stopped(&mut shutdown).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::requests::Origin;

    fn msg(topic: &str, n: u8) -> Publish {
        Publish {
            topic: topic.into(),
            data: vec![n],
            origin: Origin::default(),
            publisher_id: None,
        }
    }

    #[tokio::test]
    async fn relays_in_order_and_skips_for_laggards() {
        let relay = TopicRelay::new(4);
        let (stop, shutdown) = watch::channel(false);
        let mut fast = Box::pin(relay.subscribe(shutdown.clone()));
        let mut slow = Box::pin(relay.subscribe(shutdown));
        assert_eq!(relay.publish(msg("t", 0)), 2);
        assert_eq!(fast.next().await.expect("item").expect("ok").data, vec![0]);
        for n in 1..=10 {
            relay.publish(msg("t", n));
            assert_eq!(fast.next().await.expect("item").expect("ok").data, vec![n]);
        }
        // The slow one skipped the oldest messages and resumes with the newest four.
        let next = slow.next().await.expect("item").expect("ok");
        assert_eq!(next.data, vec![7]);
        assert_eq!(relay.dropped(), 7);
        stop.send_replace(true);
        assert!(fast.next().await.is_none(), "shutdown ends the stream");
    }
}
