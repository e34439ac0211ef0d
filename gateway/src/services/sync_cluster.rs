//! The sync shards as one logical store: partition routing, scatter-gather and
//! per-call deadlines. Shards are addressed in the order of `SYNC_ADDRS`; which
//! partitions each owns is learned from its `ShardInfo`.

use parking_lot::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use topgun_proto::grpc::sync::sync_service_client::SyncServiceClient;
use topgun_proto::grpc::sync::{ShardInfoRequest, ShardInfoResponse};
use topgun_proto::internal_auth::TokenAttach;
use topgun_proto::partition::{partition_of, shard_of_partition, PARTITION_COUNT};

/// A sync-service client that carries the internal token.
pub type SyncClient = SyncServiceClient<InterceptedService<Channel, TokenAttach>>;

/// One sync shard.
#[derive(Debug)]
pub struct Shard {
    /// Its gRPC address.
    pub addr: String,
    client: SyncClient,
    info: RwLock<Option<ShardInfoResponse>>,
    reachable: AtomicBool,
    feed_connected: AtomicBool,
}

impl Shard {
    /// A client handle (cheap clone of the shared channel).
    pub fn client(&self) -> SyncClient {
        self.client.clone()
    }

    /// The last `ShardInfo` it answered.
    pub fn info(&self) -> Option<ShardInfoResponse> {
        self.info.read().clone()
    }

    /// Whether its last call succeeded.
    pub fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Whether this gateway currently follows the shard's change feed. The shard only
    /// serves its feed once its data is loaded, so this also means "ready for writes".
    pub fn is_following(&self) -> bool {
        self.feed_connected.load(Ordering::SeqCst)
    }

    /// Records whether the change feed is connected.
    pub fn set_following(&self, connected: bool) {
        self.feed_connected.store(connected, Ordering::SeqCst);
    }

    /// Records the outcome of a call, so health reflects real traffic.
    pub fn mark(&self, reachable: bool) {
        self.reachable.store(reachable, Ordering::Relaxed);
    }
}

/// All shards plus the partition table.
#[derive(Debug)]
pub struct SyncCluster {
    shards: Vec<Arc<Shard>>,
    /// partition -> index into `shards`.
    table: RwLock<Vec<usize>>,
    timeout: Duration,
}

impl SyncCluster {
    /// Clients for `addrs` (connected lazily, reconnecting on their own).
    pub fn new(addrs: &[String], token: TokenAttach, timeout: Duration) -> Result<Self, String> {
        if addrs.is_empty() {
            return Err("at least one sync-service address is required".into());
        }
        let shards = addrs
            .iter()
            .map(|addr| {
                let endpoint = Endpoint::from_shared(addr.clone())
                    .map_err(|e| format!("invalid sync address {addr:?}: {e}"))?
                    .connect_timeout(Duration::from_secs(2))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(10))
                    .keep_alive_while_idle(true);
                let endpoint = topgun_proto::internal_tls::client_endpoint(endpoint)?;
                let client =
                    SyncServiceClient::with_interceptor(endpoint.connect_lazy(), token.clone())
                        .max_decoding_message_size(256 * 1024 * 1024)
                        .max_encoding_message_size(256 * 1024 * 1024);
                Ok(Arc::new(Shard {
                    addr: addr.clone(),
                    client,
                    info: RwLock::new(None),
                    reachable: AtomicBool::new(false),
                    feed_connected: AtomicBool::new(false),
                }))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let count = shards.len() as u32;
        let table = (0..PARTITION_COUNT)
            .map(|p| shard_of_partition(p, count) as usize)
            .collect();
        Ok(SyncCluster {
            shards,
            table: RwLock::new(table),
            timeout,
        })
    }

    /// Every shard.
    pub fn shards(&self) -> &[Arc<Shard>] {
        &self.shards
    }

    /// Deadline attached to every call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Index of the shard that owns `key`.
    pub fn shard_for_key(&self, key: &str) -> usize {
        self.shard_for_partition(partition_of(key))
    }

    /// Index of the shard that owns `partition`.
    pub fn shard_for_partition(&self, partition: u32) -> usize {
        self.table
            .read()
            .get(partition as usize)
            .copied()
            .unwrap_or(0)
    }

    /// The partition table as (partition, shard index).
    pub fn partition_table(&self) -> Vec<usize> {
        self.table.read().clone()
    }

    /// Wraps a message with the call deadline.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        req.set_timeout(self.timeout);
        req
    }

    /// Asks every shard for its partitions and rebuilds the table; shards that do not
    /// answer keep their previous (or default) assignment. Returns how many answered.
    pub async fn refresh(&self) -> usize {
        let calls = self.shards.iter().map(|shard| async move {
            let mut req = tonic::Request::new(ShardInfoRequest {});
            req.set_timeout(Duration::from_secs(2));
            let result = shard.client().shard_info(req).await;
            shard.mark(result.is_ok());
            result.ok().map(|r| r.into_inner())
        });
        let infos = futures::future::join_all(calls).await;
        let mut answered = 0;
        let mut table = self.table.write();
        for (index, info) in infos.into_iter().enumerate() {
            let Some(info) = info else { continue };
            answered += 1;
            for p in &info.partitions {
                if let Some(slot) = table.get_mut(*p as usize) {
                    *slot = index;
                }
            }
            *self.shards[index].info.write() = Some(info);
        }
        answered
    }
}
