//! Load shedding and deadlines: a bounded number of RPCs in flight (the rest are
//! refused at once, never queued), and every RPC bounded by the caller's
//! `grpc-timeout`, capped by the configured operation timeout.

use crate::error::SyncError;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::metadata::MetadataMap;
use topgun_proto::deadline::parse_grpc_timeout;

/// Admission control of one server.
#[derive(Debug, Clone)]
pub struct Admission {
    permits: Arc<Semaphore>,
    capacity: u32,
    max_timeout: Duration,
}

impl Admission {
    /// Allows `max_in_flight` concurrent RPCs, each for at most `max_timeout`.
    pub fn new(max_in_flight: usize, max_timeout: Duration) -> Self {
        let capacity = u32::try_from(max_in_flight).unwrap_or(u32::MAX);
        Admission {
            permits: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
            max_timeout,
        }
    }

    /// Completes once no admitted RPC is running (for the drain: calls made in-process
    /// hold no connection the server could wait for).
    pub async fn drained(&self) {
        // Taking every slot proves none is held; they go back at once.
        let _all = self.permits.acquire_many(self.capacity).await;
    }

    /// A slot for one RPC, or RESOURCE_EXHAUSTED when all are taken.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, SyncError> {
        Arc::clone(&self.permits)
            .try_acquire_owned()
            .map_err(|_| SyncError::Overloaded)
    }

    /// The time budget of a request: its `grpc-timeout`, capped by the maximum.
    pub fn budget(&self, metadata: &MetadataMap) -> Duration {
        metadata
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map_or(self.max_timeout, |t| t.min(self.max_timeout))
    }
}

/// Runs `work` within `budget`, failing with DEADLINE_EXCEEDED when it runs out.
pub async fn within<T>(
    budget: Duration,
    work: impl Future<Output = Result<T, SyncError>>,
) -> Result<T, SyncError> {
    match tokio::time::timeout(budget, work).await {
        Ok(result) => result,
        Err(_) => Err(SyncError::DeadlineExceeded(budget.as_millis())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sheds_load_beyond_the_limit_and_caps_deadlines() {
        let admission = Admission::new(1, Duration::from_millis(100));
        let held = admission.admit().expect("first slot");
        let refused = admission.admit().expect_err("no slot left");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        drop(held);
        assert!(admission.admit().is_ok());

        let mut metadata = MetadataMap::new();
        assert_eq!(admission.budget(&metadata), Duration::from_millis(100));
        metadata.insert("grpc-timeout", "10m".parse().expect("ascii"));
        assert_eq!(admission.budget(&metadata), Duration::from_millis(10));
        metadata.insert("grpc-timeout", "10S".parse().expect("ascii"));
        assert_eq!(admission.budget(&metadata), Duration::from_millis(100));

        let slow = within(Duration::from_millis(5), async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<(), SyncError>(())
        });
        assert_eq!(
            slow.await.expect_err("too slow").code(),
            tonic::Code::DeadlineExceeded
        );
    }
}
