//! The change feed of a sync shard this process serves, handed to followers in the same
//! process (the single-process binaries' gateway and search replica) as decoded batches.
//!
//! Over the in-process transport ([`crate::in_process`]) every feed batch was still encoded
//! by the shard and decoded again by each follower: under paced writes that was about a
//! quarter of the server's CPU. A follower that finds the shard's feed here reads the same
//! `ChangeBatch` messages the SubscribeChanges stream would carry, opened through the same
//! validation, ending under the same conditions; any other shard is followed over gRPC.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use futures::{Stream, StreamExt};
use tonic::Status;

use crate::grpc::sync::{ChangeBatch, SubscribeChangesRequest};

/// The batches of one subscription.
pub type ChangeBatchStream = Pin<Box<dyn Stream<Item = Result<ChangeBatch, Status>> + Send>>;

/// A shard's change feed, opened without the gRPC codec.
pub trait LocalChangeFeed: Send + Sync {
    /// Opens a subscription exactly as the SubscribeChanges RPC would (same checks, same
    /// errors, same first empty batch carrying the epoch).
    fn subscribe(&self, request: SubscribeChangesRequest) -> Result<ChangeBatchStream, Status>;
}

type Served = (u64, Arc<dyn LocalChangeFeed>);

fn feeds() -> &'static Mutex<HashMap<String, Served>> {
    static FEEDS: OnceLock<Mutex<HashMap<String, Served>>> = OnceLock::new();
    FEEDS.get_or_init(Mutex::default)
}

fn lock() -> std::sync::MutexGuard<'static, HashMap<String, Served>> {
    feeds()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Offers `feed` to followers of `addrs` in this process until the guard is dropped.
pub fn serve(addrs: &[String], feed: Arc<dyn LocalChangeFeed>) -> FeedRegistration {
    static GENERATION: AtomicU64 = AtomicU64::new(1);
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
    let addrs: Vec<String> = addrs
        .iter()
        .map(|a| crate::in_process::normalize(a))
        .collect();
    let mut feeds = lock();
    for addr in &addrs {
        feeds.insert(addr.clone(), (generation, Arc::clone(&feed)));
    }
    FeedRegistration { addrs, generation }
}

/// The feed this process serves at `addr`, if any.
pub fn find(addr: &str) -> Option<Arc<dyn LocalChangeFeed>> {
    lock()
        .get(&crate::in_process::normalize(addr))
        .map(|(_, feed)| Arc::clone(feed))
}

/// Keeps a feed reachable in-process; dropping it sends later subscriptions over gRPC.
/// Subscriptions already open run on until the shard ends them.
#[must_use = "the in-process feed ends when this is dropped"]
#[derive(Debug)]
pub struct FeedRegistration {
    addrs: Vec<String>,
    generation: u64,
}

impl Drop for FeedRegistration {
    fn drop(&mut self) {
        let mut feeds = lock();
        for addr in &self.addrs {
            // A shard started since on the same address keeps its feed.
            if feeds.get(addr).is_some_and(|(g, _)| *g == self.generation) {
                feeds.remove(addr);
            }
        }
    }
}

/// A change-feed subscription, read the same way wherever the shard runs.
pub enum ChangeStream {
    /// Over gRPC (another process, or this one's network port).
    Grpc(tonic::Streaming<ChangeBatch>),
    /// Straight from a shard in this process.
    Local(ChangeBatchStream),
}

impl std::fmt::Debug for ChangeStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChangeStream::Grpc(_) => "ChangeStream::Grpc",
            ChangeStream::Local(_) => "ChangeStream::Local",
        })
    }
}

impl ChangeStream {
    /// The next batch; `Ok(None)` when the stream ended. Cancellation-safe, like
    /// [`tonic::Streaming::message`].
    pub async fn message(&mut self) -> Result<Option<ChangeBatch>, Status> {
        match self {
            ChangeStream::Grpc(stream) => stream.message().await,
            ChangeStream::Local(stream) => stream.next().await.transpose(),
        }
    }
}

/// Subscribes to the shard at `addr`: from its feed when this process serves it, otherwise
/// through `remote` (the client's SubscribeChanges call).
pub async fn subscribe<F, Fut>(
    addr: &str,
    request: SubscribeChangesRequest,
    remote: F,
) -> Result<ChangeStream, Status>
where
    F: FnOnce(SubscribeChangesRequest) -> Fut,
    Fut: Future<Output = Result<tonic::Response<tonic::Streaming<ChangeBatch>>, Status>>,
{
    match find(addr) {
        Some(feed) => feed.subscribe(request).map(ChangeStream::Local),
        None => remote(request)
            .await
            .map(|response| ChangeStream::Grpc(response.into_inner())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A feed that answers every subscription with one batch naming the request's epoch.
    struct Echo;

    impl LocalChangeFeed for Echo {
        fn subscribe(&self, request: SubscribeChangesRequest) -> Result<ChangeBatchStream, Status> {
            if request.from_seq == u64::MAX {
                return Err(Status::out_of_range("too far"));
            }
            let batch = ChangeBatch {
                epoch: request.epoch,
                events: Vec::new(),
            };
            Ok(Box::pin(futures::stream::iter([Ok(batch)])))
        }
    }

    fn request(epoch: &str, from_seq: u64) -> SubscribeChangesRequest {
        SubscribeChangesRequest {
            map_names: Vec::new(),
            from_seq,
            epoch: epoch.to_string(),
        }
    }

    async fn unreachable_remote(
        _request: SubscribeChangesRequest,
    ) -> Result<tonic::Response<tonic::Streaming<ChangeBatch>>, Status> {
        Err(Status::unavailable("went over the network"))
    }

    #[tokio::test]
    async fn a_served_feed_is_read_directly_until_its_registration_ends() {
        let addr = "http://127.0.0.1:1/local-feed-test";
        let registration = serve(&[format!("{addr}/")], Arc::new(Echo));
        let mut stream = subscribe(addr, request("e1", 0), unreachable_remote)
            .await
            .expect("opened locally");
        let batch = stream.message().await.expect("a batch").expect("not ended");
        assert_eq!(batch.epoch, "e1");
        assert!(stream.message().await.expect("clean end").is_none());

        let refused = subscribe(addr, request("e1", u64::MAX), unreachable_remote)
            .await
            .expect_err("the feed's own error");
        assert_eq!(refused.code(), tonic::Code::OutOfRange);

        drop(registration);
        let remote = subscribe(addr, request("e1", 0), unreachable_remote)
            .await
            .expect_err("over the network now");
        assert_eq!(remote.message(), "went over the network");
    }

    #[test]
    fn a_stale_registration_does_not_remove_a_newer_feed_on_the_same_address() {
        let addr = "http://127.0.0.1:1/local-feed-restart".to_string();
        let old = serve(std::slice::from_ref(&addr), Arc::new(Echo));
        let new = serve(std::slice::from_ref(&addr), Arc::new(Echo));
        drop(old);
        assert!(find(&addr).is_some());
        drop(new);
        assert!(find(&addr).is_none());
    }
}
