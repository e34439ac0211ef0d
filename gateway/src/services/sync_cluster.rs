//! The sync shards as one logical store: partition routing, scatter-gather and
//! per-call deadlines. With static addresses (`SYNC_ADDRS`) the shard list is fixed and
//! which partitions each owns is learned from its `ShardInfo`; in peer cluster mode the
//! membership layer replaces the whole topology (shards plus table) whenever the set of
//! live nodes changes.

use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Endpoint;
use topgun_proto::grpc::sync::sync_service_client::SyncServiceClient;
use topgun_proto::grpc::sync::{ShardInfoRequest, ShardInfoResponse};
use topgun_proto::in_process::InternalChannel;
use topgun_proto::internal_auth::TokenAttach;
use topgun_proto::partition::{partition_of, shard_of_partition, PARTITION_COUNT};

/// A sync-service client that carries the internal token (in-process when this process
/// runs the shard itself).
pub type SyncClient = SyncServiceClient<InterceptedService<InternalChannel, TokenAttach>>;

/// One sync shard.
#[derive(Debug)]
pub struct Shard {
    /// Its gRPC address.
    pub addr: String,
    client: SyncClient,
    info: RwLock<Option<ShardInfoResponse>>,
    reachable: AtomicBool,
    feed_connected: AtomicBool,
    /// Flips to true when the shard leaves the topology, so its feed consumers stop.
    retired: watch::Sender<bool>,
}

impl Shard {
    fn connect(addr: &str, token: &TokenAttach) -> Result<Arc<Self>, String> {
        let endpoint = Endpoint::from_shared(addr.to_string())
            .map_err(|e| format!("invalid sync address {addr:?}: {e}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let endpoint = topgun_proto::internal_tls::client_endpoint(endpoint)?;
        let channel = InternalChannel::new(addr, endpoint.connect_lazy());
        let client = SyncServiceClient::with_interceptor(channel, token.clone())
            .max_decoding_message_size(256 * 1024 * 1024)
            .max_encoding_message_size(256 * 1024 * 1024);
        Ok(Arc::new(Shard {
            addr: addr.to_string(),
            client,
            info: RwLock::new(None),
            reachable: AtomicBool::new(false),
            feed_connected: AtomicBool::new(false),
            retired: watch::channel(false).0,
        }))
    }

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

    /// Resolves once the shard has left the topology (or `retire` was called).
    pub fn retired(&self) -> watch::Receiver<bool> {
        self.retired.subscribe()
    }

    /// Stops everything that follows this shard.
    pub fn retire(&self) {
        self.retired.send_replace(true);
    }
}

/// A consistent snapshot: the shards and which of them owns each partition.
#[derive(Debug)]
pub struct Topology {
    /// Version of the partition table (0 = static addresses).
    pub version: u64,
    /// Every shard, in address order of `SYNC_ADDRS` or member order of the cluster.
    pub shards: Vec<Arc<Shard>>,
    /// partition -> index into `shards`.
    table: Vec<usize>,
}

impl Topology {
    /// Index of the shard that owns `key`.
    pub fn index_for_key(&self, key: &str) -> usize {
        self.index_for_partition(partition_of(key))
    }

    /// Index of the shard that owns `partition`.
    pub fn index_for_partition(&self, partition: u32) -> usize {
        self.table
            .get(partition as usize)
            .copied()
            .unwrap_or(0)
            .min(self.shards.len().saturating_sub(1))
    }

    /// partition -> index into `shards`, for every partition.
    pub fn owners(&self) -> &[usize] {
        &self.table
    }

    /// The shard that owns `partition`.
    pub fn shard_for_partition(&self, partition: u32) -> &Arc<Shard> {
        &self.shards[self.index_for_partition(partition)]
    }
}

/// All shards plus the partition table.
#[derive(Debug)]
pub struct SyncCluster {
    topology: RwLock<Arc<Topology>>,
    /// Set once membership manages the topology; `refresh` then leaves the table alone.
    managed: AtomicBool,
    token: TokenAttach,
    changes: watch::Sender<u64>,
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
            .map(|addr| Shard::connect(addr, &token))
            .collect::<Result<Vec<_>, String>>()?;
        let count = shards.len() as u32;
        let table = (0..PARTITION_COUNT)
            .map(|p| shard_of_partition(p, count) as usize)
            .collect();
        Ok(SyncCluster {
            topology: RwLock::new(Arc::new(Topology {
                version: 0,
                shards,
                table,
            })),
            managed: AtomicBool::new(false),
            token,
            changes: watch::channel(0).0,
            timeout,
        })
    }

    /// The current topology; hold one snapshot for all routing of one request.
    pub fn topology(&self) -> Arc<Topology> {
        self.topology.read().clone()
    }

    /// Every shard of the current topology.
    pub fn shards(&self) -> Vec<Arc<Shard>> {
        self.topology.read().shards.clone()
    }

    /// Notified with the topology version whenever the shard list changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Deadline attached to every call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The shard that owns `partition` in the current topology.
    pub fn shard_for_partition(&self, partition: u32) -> Arc<Shard> {
        self.topology.read().shard_for_partition(partition).clone()
    }

    /// The partition table as shard indexes into [`SyncCluster::shards`].
    pub fn partition_table(&self) -> Vec<usize> {
        self.topology.read().table.clone()
    }

    /// Wraps a message with the call deadline.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        req.set_timeout(self.timeout);
        req
    }

    /// Replaces the topology (peer cluster mode): `addrs` are the live members' shards
    /// and `owners[p]` indexes the owner of partition `p` among them. Shards that stay
    /// keep their connection and feed position; shards that leave are retired.
    pub fn set_topology(
        &self,
        version: u64,
        addrs: &[String],
        owners: &[usize],
    ) -> Result<(), String> {
        if addrs.is_empty() || owners.len() != PARTITION_COUNT as usize {
            return Err("a topology needs shards and an owner for every partition".into());
        }
        if owners.iter().any(|&o| o >= addrs.len()) {
            return Err("partition owner out of range".into());
        }
        let retired = {
            let mut current = self.topology.write();
            if version <= current.version && self.managed.load(Ordering::SeqCst) {
                return Ok(());
            }
            let mut existing: HashMap<&str, &Arc<Shard>> = current
                .shards
                .iter()
                .map(|s| (s.addr.as_str(), s))
                .collect();
            let shards = addrs
                .iter()
                .map(|addr| match existing.remove(addr.as_str()) {
                    Some(shard) => Ok(shard.clone()),
                    None => Shard::connect(addr, &self.token),
                })
                .collect::<Result<Vec<_>, String>>()?;
            let retired: Vec<Arc<Shard>> = existing.into_values().cloned().collect();
            *current = Arc::new(Topology {
                version,
                shards,
                table: owners.to_vec(),
            });
            self.managed.store(true, Ordering::SeqCst);
            retired
        };
        for shard in retired {
            shard.retire();
        }
        self.changes.send_replace(version);
        Ok(())
    }

    /// Retires every shard (shutdown): their feed consumers stop.
    pub fn retire_all(&self) {
        for shard in self.shards() {
            shard.retire();
        }
    }

    /// Asks every shard for its partitions and, unless membership manages the table,
    /// rebuilds it; shards that do not answer keep their previous (or default)
    /// assignment. Returns how many answered.
    pub async fn refresh(&self) -> usize {
        let topology = self.topology();
        let calls = topology.shards.iter().map(|shard| async move {
            let mut req = tonic::Request::new(ShardInfoRequest {});
            req.set_timeout(Duration::from_secs(2));
            let result = shard.client().shard_info(req).await;
            shard.mark(result.is_ok());
            result.ok().map(|r| r.into_inner())
        });
        let infos = futures::future::join_all(calls).await;
        let mut answered = 0;
        let mut table = topology.table.clone();
        for (index, info) in infos.into_iter().enumerate() {
            let Some(info) = info else { continue };
            answered += 1;
            for p in &info.partitions {
                if let Some(slot) = table.get_mut(*p as usize) {
                    *slot = index;
                }
            }
            *topology.shards[index].info.write() = Some(info);
        }
        if !self.managed.load(Ordering::SeqCst) {
            let mut current = self.topology.write();
            // Only if nothing replaced the topology meanwhile.
            if Arc::ptr_eq(&current, &topology) && current.table != table {
                *current = Arc::new(Topology {
                    version: current.version,
                    shards: current.shards.clone(),
                    table,
                });
            }
        }
        answered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(addrs: &[&str]) -> SyncCluster {
        let addrs: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        SyncCluster::new(&addrs, TokenAttach::default(), Duration::from_secs(1))
            .expect("valid addresses")
    }

    #[tokio::test]
    async fn static_addresses_split_partitions_like_the_shards() {
        let c = cluster(&["http://127.0.0.1:1", "http://127.0.0.1:2"]);
        let topo = c.topology();
        for p in 0..PARTITION_COUNT {
            assert_eq!(
                topo.index_for_partition(p),
                shard_of_partition(p, 2) as usize
            );
        }
    }

    #[tokio::test]
    async fn a_new_topology_keeps_staying_shards_and_retires_leaving_ones() {
        let c = cluster(&["http://127.0.0.1:1", "http://127.0.0.1:2"]);
        let before = c.shards();
        let leaving = before[0].retired();
        let mut changes = c.changes();
        let owners = vec![0usize; PARTITION_COUNT as usize];
        c.set_topology(
            3,
            &["http://127.0.0.1:2".into(), "http://127.0.0.1:3".into()],
            &owners,
        )
        .expect("valid topology");
        let after = c.shards();
        assert!(Arc::ptr_eq(&before[1], &after[0]), "staying shard reused");
        assert_eq!(after[1].addr, "http://127.0.0.1:3");
        assert!(*leaving.borrow(), "leaving shard retired");
        assert!(!*after[0].retired().borrow());
        assert_eq!(*changes.borrow_and_update(), 3);
        assert_eq!(c.shard_for_partition(100).addr, "http://127.0.0.1:2");

        // An older version changes nothing.
        c.set_topology(2, &["http://127.0.0.1:9".into()], &owners)
            .expect("valid topology");
        assert_eq!(c.topology().version, 3);
        assert_eq!(c.shards().len(), 2);
    }

    #[tokio::test]
    async fn malformed_topologies_are_rejected() {
        let c = cluster(&["http://127.0.0.1:1"]);
        assert!(c.set_topology(1, &[], &[]).is_err());
        let owners = vec![1usize; PARTITION_COUNT as usize];
        assert!(c
            .set_topology(1, &["http://127.0.0.1:1".into()], &owners)
            .is_err());
        assert_eq!(c.topology().version, 0);
    }
}
