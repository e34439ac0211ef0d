//! Ingestion: keeps the indexes in step with the sync shards (`SYNC_ADDRS`), one task
//! per shard, and reports how far each shard has been indexed.

mod client;
mod convert;
mod shard;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;
use topgun_proto::grpc::sync::ShardInfoRequest;

use crate::engine::SearchEngine;
use crate::error::SearchError;
use client::{call, request, SyncClient};

pub use client::CALL_TIMEOUT;

/// How far one shard has been indexed.
#[derive(Debug)]
pub struct ShardProgress {
    /// The shard's address as configured.
    pub addr: String,
    /// Last feed sequence whose effects are committed (searchable).
    pub committed_seq: Arc<AtomicU64>,
    /// Highest sequence seen from the shard.
    pub head_seq: AtomicU64,
    /// The epoch `committed_seq` belongs to.
    pub epoch: Mutex<String>,
    /// The first scan is committed.
    pub ready: AtomicBool,
    /// The last call to the shard succeeded.
    pub connected: AtomicBool,
    /// Completed scans.
    pub scans: AtomicU64,
    ready_tx: watch::Sender<()>,
}

/// Indexing position and lag of one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardLag {
    /// The shard's address.
    pub shard: String,
    /// Last sequence indexed.
    pub last_seq: u64,
    /// Events the shard has that are not indexed yet.
    pub lag_events: u64,
}

/// The running ingestion.
#[derive(Debug, Clone)]
pub struct Ingestor {
    shards: Vec<(Arc<ShardProgress>, SyncClient)>,
}

impl Ingestor {
    /// Starts one ingestion task per shard address. Tasks run until `stop` turns true.
    /// Fails only on an invalid address or token; unreachable shards are retried.
    pub fn start(
        engine: &SearchEngine,
        addrs: &[String],
        token: Option<&str>,
        stop: watch::Receiver<bool>,
    ) -> Result<Self, SearchError> {
        let mut shards = Vec::with_capacity(addrs.len());
        for (index, addr) in addrs.iter().enumerate() {
            let client = client::connect(addr, token)?;
            let (ready_tx, _) = watch::channel(());
            let progress = Arc::new(ShardProgress {
                addr: addr.clone(),
                committed_seq: Arc::default(),
                head_seq: AtomicU64::new(0),
                epoch: Mutex::default(),
                ready: AtomicBool::new(false),
                connected: AtomicBool::new(false),
                scans: AtomicU64::new(0),
                ready_tx,
            });
            let task = shard::ShardIngest {
                index,
                client: client.clone(),
                engine: engine.clone(),
                progress: progress.clone(),
                stop: stop.clone(),
                rescans: engine.watch_indexed_changes(),
                generation: 0,
                last_attempt: 0,
            };
            let span = tracing::info_span!("shard", addr = %addr);
            tokio::spawn(tracing::Instrument::instrument(task.run(), span));
            shards.push((progress, client));
        }
        Ok(Ingestor { shards })
    }

    /// Progress of every shard, in `SYNC_ADDRS` order.
    pub fn progress(&self) -> Vec<Arc<ShardProgress>> {
        self.shards.iter().map(|(p, _)| p.clone()).collect()
    }

    /// True once every shard's first scan is searchable.
    pub fn is_ready(&self) -> bool {
        self.shards
            .iter()
            .all(|(p, _)| p.ready.load(Ordering::Relaxed))
    }

    /// Completes once every shard's first scan is searchable.
    pub async fn wait_ready(&self) {
        for (progress, _) in &self.shards {
            let mut ready = progress.ready_tx.subscribe();
            while !progress.ready.load(Ordering::Relaxed) {
                if ready.changed().await.is_err() {
                    return;
                }
            }
        }
    }

    /// Indexed position and lag per shard. Asks each shard for its head (short deadline,
    /// all shards at once); a shard that does not answer is reported against the last
    /// head seen.
    pub async fn lags(&self) -> Vec<ShardLag> {
        let asks = self.shards.iter().map(|(progress, client)| {
            let mut client = client.clone();
            let progress = progress.clone();
            async move {
                let committed = progress.committed_seq.load(Ordering::Relaxed);
                let mut head = progress.head_seq.load(Ordering::Relaxed);
                let mut ask = request(ShardInfoRequest {});
                ask.set_timeout(std::time::Duration::from_secs(1));
                let answer = tokio::time::timeout(
                    std::time::Duration::from_secs(1),
                    call(client.shard_info(ask)),
                )
                .await;
                if let Ok(Ok(info)) = answer {
                    if info.epoch == *progress.epoch.lock() {
                        head = head.max(info.last_seq);
                    } else {
                        // A new epoch we have not rescanned yet: all of it is lag.
                        return ShardLag {
                            shard: progress.addr.clone(),
                            last_seq: committed,
                            lag_events: info.last_seq,
                        };
                    }
                }
                ShardLag {
                    shard: progress.addr.clone(),
                    last_seq: committed,
                    lag_events: head.saturating_sub(committed),
                }
            }
        });
        futures::future::join_all(asks).await
    }
}
